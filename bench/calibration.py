"""Calibrated ``auto`` on the real CPU stack, and the 0.5B-vs-1.5B A/B (issue 26's evidence).

Parts, each resumable (run the same command again) and Ctrl-C safe; rows land under
``--out/<model>/``:

- ``bank``: the sample bank ``tts-eval calibrate`` replays voting methods and stopping rules from:
  ``best_of_n`` at N = 16 with the trace on (every sample's answer, score and generated tokens)
  over the first ``--problems`` problems of MATH-500, all levels, both halves; one bank per
  ``--scorer`` (``confidence``, or ``verifier``: the policy judging each step), under
  ``bank-<scorer>/``;
- ``steps``: the step cells' live searches (``--steps``, default ``beam_search@16``), in the shape
  ``auto`` runs them after 3, 4 or 6 pilots, on the first ``--step-problems`` problems of each
  half (under ``steps-<scorer>/``, where ``tts-eval calibrate`` finds them);
- ``calibrate``: ``tts-eval calibrate --fit-only`` on half 0/2 of each scorer's bank, writing
  one ``auto_rules.toml`` with every scorer's cells (pilot counts 3, 4 and 6 tried); where the
  steps part ran, a second fit that may choose step cells too, under ``with-steps/`` (a step
  cell is judged and replayed only on the problems that ran its search);
- ``evaluate [--with-steps]``: replays ``--scorer``'s bank on half 1/2 (never the problems
  calibrated on): the fitted ``auto`` against the shipped table, majority and best-of-N, paired
  on the same problems and orders (``evaluation.md``; ``evaluation-<scorer>.md`` for another
  scorer; under ``with-steps/`` for the fit with step cells);
- ``live``: the fitted ``auto`` for real, through a proxy that loads ``auto_rules.toml``, on the
  first ``--live-problems`` problems of half 1/2 (rows under ``live/``);
- ``pass1``: the model at one greedy sample through ``--provider litellm`` (as a large API is
  called), on the first ``--problems`` problems of half 1/2 (rows under ``pass1/``); priced at
  the VM's hourly rate and the run's own measured throughput, the model alone on the machine.

- ``throughput``: the model alone on the machine, vLLM called directly on MATH-500 prompts:
  generated tokens per second for one greedy answer at a time (how pass@1 is served) and for
  16 samples per call, 4 calls in flight (how the bank is drawn), over ``--repeats`` runs each
  (``throughput.jsonl``): the $ per token of each model at the VM's hourly rate.

``tts-eval report`` over ``live/`` and another model's ``pass1/`` prints the verdicts (who wins at
equal $, paired). Each part logs its machine and dtype to ``machines.jsonl``.

Run: ``.venv/bin/python -m bench.calibration --part bank [--model qwen2.5-coder-0.5b]
[--problems 240] [--concurrency 4]``; hours on 2 cores (about 5k generated tokens per problem).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.ab import versus_larger
from bench.eval_cpu import USD_PER_HOUR
from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.servers import free_port, serve
from proxy.app import create_app
from proxy.settings import PolicyUpstream, ProxySettings, SearchDefaults
from tts_eval.__main__ import main as tts_eval
from tts_eval.calibrate import bank_dir
from tts_eval.calibration import Bin, Cell, banks_of, evaluate, searches_needed
from tts_eval.datasets import in_fold, load_problems, parse_fold
from tts_eval.rows import read_rows
from tts_eval.runner import DEFAULT_SYSTEM_PROMPT
from tts_eval.stats import sign_test, wilson
from tts_eval.steps import parse_steps, step_runs, steps_dir, with_searches

OUT = Path("bench/results/calibration")
BANK_BUDGET = 16
LARGER = "qwen2.5-coder-1.5b"  # the A/B's larger model: its greedy pass1/ rows, paired
CALIBRATE_ON, EVALUATE_ON = "0/2", "1/2"  # halves by a hash of each problem's id
SCORERS = ("confidence", "verifier")  # each has its own bank, bank-<scorer>/


def _settings(policy_url: str, max_tokens: int, rules: Path | None = None) -> ProxySettings:
    return ProxySettings(
        policy_urls=[policy_url],
        request_timeout_s=3600,
        policy=PolicyUpstream(timeout_s=3600),
        search=SearchDefaults(
            top_candidates_in_response=64,
            max_answer_tokens=max_tokens,
            max_steps=12,
            scorer="confidence",
        ),
        auto_rules_file=rules,
    )


def _log_machine(out: Path, model: str, dtype: str, part: str) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    out.mkdir(parents=True, exist_ok=True)
    entry = {
        "started_at": time.time(),
        "part": part,
        "model": model,
        "dtype": dtype,
        "cpu": cpu,
        "cores": os.cpu_count(),
    }
    with (out / "machines.jsonl").open("a", encoding="utf-8") as log:
        log.write(json.dumps(entry) + "\n")


def bank(args: argparse.Namespace, proxy_url: str, out: Path) -> int:
    flags = [
        "--header",
        f"X-TTS-Scorer: {args.scorer}",
        "--endpoint",
        proxy_url + "/v1",
        "--model",
        args.model,
        "--strategy",
        "best_of_n",
        "--budgets",
        str(BANK_BUDGET),
        "--header",
        "X-TTS-Trace: true",
        "--limit",
        str(args.problems),
        "--out",
        str(bank_dir(out, args.scorer)),
    ]
    return tts_eval(_run_args(args, *flags))


PILOTS = (3, 4, 6)


def steps(args: argparse.Namespace, proxy_url: str, out: Path) -> int:
    """The live searches of the step cells on the first ``--step-problems`` of each half."""
    status = 0
    for search in step_runs(parse_steps(args.steps), PILOTS, BANK_BUDGET):
        for half in (CALIBRATE_ON, EVALUATE_ON):
            flags = [
                *("--endpoint", proxy_url + "/v1", "--model", args.model),
                *("--strategy", search.method, "--budgets", str(search.per_depth)),
                *("--fold", half, "--limit", str(args.step_problems)),
                *("--header", f"X-TTS-Scorer: {args.scorer}"),
                *(f for name, value in search.headers() for f in ("--header", f"{name}: {value}")),
                *("--out", str(steps_dir(out, args.scorer, search))),
            ]
            status = max(status, tts_eval(_run_args(args, *flags)))
    return status


def calibrate(args: argparse.Namespace, out: Path) -> int:
    """Fit on half 0/2 of every scorer's bank drawn (no request: the bank part drew the
    samples); one rules file with each scorer's cells (voting cells: they replay on every
    problem). Where the steps part ran, a second fit with the step cells too, written under
    ``with-steps/``."""
    scorers = [s for s in SCORERS if bank_dir(out, s).exists()]
    command = [
        *("calibrate", "--dataset", "math500", "--model", args.model, "--fold", CALIBRATE_ON),
        *("--cap", str(BANK_BUDGET), "--pilots", ",".join(map(str, PILOTS)), "--fit-only"),
        *(flag for s in scorers for flag in ("--scorer", s)),
    ]
    status = tts_eval([*command, "--out", str(out)])
    stepped = [s for s in scorers if (out / f"steps-{s}").exists()]
    if status or not stepped:
        return status
    with_steps = [
        *command[: command.index("--fit-only") + 1],
        *(flag for s in stepped for flag in ("--scorer", s)),
        *("--steps", args.steps, "--bank-from", str(out), "--out", str(out / WITH_STEPS)),
    ]
    return tts_eval(with_steps)


WITH_STEPS = "with-steps"  # the fit that may choose step cells, and its held-out replay


# The shipped table's cells for a small policy with the confidence scorer, replayed as auto
# runs them at a cap of 16 (voting methods only: every one of them replays from the bank).
STATIC: dict[Bin, Cell] = {
    "easy": Cell("majority", BANK_BUDGET, 0.95, 4),
    "medium": Cell("best_of_n", BANK_BUDGET, 0.95, 4),
    "hard": Cell("best_of_n", BANK_BUDGET, 0.95, 4),
}


def fitted_cells(path: Path, scorer: str = "confidence") -> tuple[int, dict[Bin, Cell]]:
    """The pilots and cells a written ``auto_rules.toml`` holds for ``scorer`` (bins it lacks:
    the static table's)."""
    data = tomllib.loads(path.read_text())
    fitted = data.get("fitted", {}).get(scorer, {})
    cells: dict[Bin, Cell] = dict(STATIC)
    for difficulty in ("easy", "medium", "hard"):
        spec = fitted.get(difficulty)
        if spec is not None:
            cells[difficulty] = Cell(
                spec["method"], spec["budget"], spec.get("confidence", 0.95), spec.get("chunk", 4)
            )
    return int(fitted.get("pilots", data.get("auto", {}).get("pilots", 4))), cells


def evaluate_part(args: argparse.Namespace, out: Path) -> str:
    """Replays on half 1/2, never calibrated on: the fitted auto against the static table,
    majority and best-of-N, paired on the same problems and orders."""
    fold = parse_fold(EVALUATE_ON)
    problems = {p.id for p in load_problems("math500") if in_fold(p, fold)}
    rows = [r for r in read_rows([bank_dir(out, args.scorer)]) if r.id in problems]
    banks = banks_of(rows, BANK_BUDGET)
    fitted = out / (WITH_STEPS if args.with_steps else "") / "auto_rules.toml"
    if not fitted.exists():
        raise SystemExit(f"{fitted}: run --part calibrate first")
    pilots, cells = fitted_cells(fitted, args.scorer)
    # A fitted step cell replays only where its live search ran: every policy on those problems.
    runs = step_runs(parse_steps(args.steps), PILOTS, BANK_BUDGET)
    banks = with_searches(banks, rows, out, args.scorer, runs, args.model)
    needed = searches_needed(pilots, cells, BANK_BUDGET)
    banks = [bank for bank in banks if needed <= bank.searches.keys()]
    policies: dict[str, Any] = {
        "auto, calibrated": (pilots, cells),
        "auto, static table": (4, STATIC),
        **{f"majority@{n}": ("majority", n) for n in (1, 4, 8, 16)},
        "best_of_n@16": ("best_of_n", 16),
    }
    figures = evaluate(banks, policies, BANK_BUDGET, orders=args.orders, seed=7)
    base = figures["majority@16"]
    ours = figures["auto, calibrated"]
    base_tokens = statistics.fmean(e.tokens for e in base)
    lines = [
        f"Held-out half {EVALUATE_ON} of MATH-500 (all levels), {len(banks)} problems, "
        f"{args.orders} replayed orders each; calibrated on half {CALIBRATE_ON}. Latency is "
        "estimated from each problem's own decoding speed in the bank.",
        "",
        "| policy | accuracy % (95 % CI) | generated tokens | of majority@16's | latency s (est.) "
        "| calibrated auto minus this, pts (paired 95 % CI) | problems won-lost (sign test p) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, per_problem in figures.items():
        accuracy = statistics.fmean(e.accuracy for e in per_problem)
        tokens = statistics.fmean(e.tokens for e in per_problem)
        latency = statistics.fmean(e.latency_s for e in per_problem)
        low, high = wilson(round(accuracy * len(banks)), len(banks))
        won = sum(a.accuracy > b.accuracy + 1e-9 for a, b in zip(ours, per_problem, strict=True))
        lost = sum(a.accuracy < b.accuracy - 1e-9 for a, b in zip(ours, per_problem, strict=True))
        gap = _paired([a.accuracy - b.accuracy for a, b in zip(ours, per_problem, strict=True)])
        versus = f"{gap} | {won}-{lost} (p {sign_test(won, lost):.2f})"
        lines.append(
            f"| {name} | {accuracy * 100:.1f} ({low * 100:.1f}-{high * 100:.1f}) | "
            f"{tokens:,.0f} | {tokens / base_tokens:.0%} | {latency:.1f} | "
            f"{' | ' if name == 'auto, calibrated' else versus} |"
        )
    # the larger model's greedy answer; for the larger model itself: its own (search vs alone)
    text = versus_larger(out, out.parent / LARGER, banks, figures, USD_PER_HOUR)
    lines += ["", text] if text else []
    text = "\n".join(lines) + "\n"
    name = "evaluation.md" if args.scorer == "confidence" else f"evaluation-{args.scorer}.md"
    (fitted.parent / name).write_text(text, "utf-8")
    return text


def _paired(differences: list[float]) -> str:
    """Mean per-problem difference in points with a normal 95 % interval over problems."""
    mean = statistics.fmean(differences)
    half = (
        1.96 * statistics.stdev(differences) / len(differences) ** 0.5
        if len(differences) > 1
        else 0.0
    )
    return f"{mean * 100:+.1f} ({(mean - half) * 100:+.1f} to {(mean + half) * 100:+.1f})"


def _run_args(args: argparse.Namespace, *flags: str) -> list[str]:
    """``tts-eval run`` over MATH-500 with this bench's limits and price, plus ``flags``."""
    return [
        "run",
        "--dataset",
        "math500",
        "--max-tokens",
        str(args.max_tokens),
        "--concurrency",
        str(args.concurrency),
        "--usd-per-gpu-hour",
        str(USD_PER_HOUR),
        "--timeout",
        "3600",
        *flags,
    ]


def live(args: argparse.Namespace, proxy_url: str, out: Path) -> int:
    flags = [
        "--endpoint",
        proxy_url + "/v1",
        "--model",
        args.model,
        "--strategy",
        "auto",
        "--budgets",
        str(BANK_BUDGET),
        "--limit",
        str(args.live_problems),
        "--out",
        str(out / "live"),
    ]
    return tts_eval(_run_args(args, "--fold", EVALUATE_ON, *flags))


def pass1(args: argparse.Namespace, policy_url: str, out: Path) -> int:
    flags = [
        "--provider",
        "litellm",
        "--endpoint",
        policy_url,
        "--model",
        f"openai/{args.model}",
        "--api-key",
        "unused",
        "--temperature",
        "0",
        "--limit",
        str(args.problems),
        "--out",
        str(out / "pass1"),
    ]
    return tts_eval(_run_args(args, "--fold", EVALUATE_ON, *flags))


THROUGHPUT_PROMPTS = 8


def throughput(args: argparse.Namespace, policy_url: str, out: Path) -> str:
    """Generated tokens per second, the model alone: (greedy, 1 in flight) and (16 samples a
    call, 4 calls in flight), each over ``--repeats`` runs of the same prompts."""
    problems = load_problems("math500")[:THROUGHPUT_PROMPTS]
    workloads = {"greedy, 1 in flight": (1, 0.0, 1), "n=16, 4 in flight": (16, 0.7, 4)}
    lines = [f"| {args.model} workload | tokens/s per run | mean |", "|---|---|---|"]
    with httpx.Client(base_url=policy_url, timeout=3600) as client:
        for name, (n, temperature, in_flight) in workloads.items():
            rates = []
            for _ in range(args.repeats):
                started, tokens = time.perf_counter(), 0

                def one(problem: Any, n: int = n, temperature: float = temperature) -> int:
                    body = {
                        "model": args.model,
                        "messages": [
                            {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
                            {"role": "user", "content": problem.problem},
                        ],
                        "n": n,
                        "temperature": temperature,
                        "max_tokens": args.max_tokens,
                    }
                    reply = client.post("/chat/completions", json=body)
                    reply.raise_for_status()
                    return int(reply.json()["usage"]["completion_tokens"])

                pool = ThreadPoolExecutor(in_flight)
                try:
                    tokens = sum(pool.map(one, problems))
                except KeyboardInterrupt:
                    # Ctrl-C: end the calls in flight (closing the client does) instead of
                    # waiting minutes for them; vLLM is then stopped as on any exit.
                    pool.shutdown(wait=False, cancel_futures=True)
                    client.close()
                    raise
                pool.shutdown()
                rates.append(tokens / (time.perf_counter() - started))
                entry = {
                    "model": args.model,
                    "workload": name,
                    "tokens": tokens,
                    "tokens_per_s": rates[-1],
                    "at": time.time(),
                }
                with (out / "throughput.jsonl").open("a", encoding="utf-8") as log:
                    log.write(json.dumps(entry) + "\n")
            runs = ", ".join(f"{r:.1f}" for r in rates)
            lines.append(f"| {name} | {runs} | {statistics.fmean(rates):.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--part",
        choices=("bank", "steps", "calibrate", "evaluate", "live", "pass1", "throughput"),
        required=True,
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--live-problems", type=int, default=40)
    parser.add_argument("--steps", default="beam_search@16", help="the step cells: METHOD@BUDGET,…")
    parser.add_argument("--step-problems", type=int, default=30, help="per half")
    parser.add_argument(
        "--with-steps",
        action="store_true",
        help="evaluate: the fit with step cells (with-steps/), on the problems with its searches",
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", choices=sorted(MODELS))
    parser.add_argument("--problems", type=int, default=240)
    parser.add_argument("--scorer", choices=SCORERS, default="confidence")
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    out = args.out / args.model
    if args.part == "calibrate":
        raise SystemExit(calibrate(args, out))
    if args.part == "evaluate":
        print(evaluate_part(args, out))
        return
    stack = CpuStack(args.cache_dir or default_cache_dir(), MODELS[args.model])
    stack.prepare()
    _log_machine(out, args.model, stack.dtype.dtype, args.part)
    rules = out / "auto_rules.toml" if args.part == "live" else None
    with stack.serve(free_port()) as policy_url:
        if args.part == "pass1":
            raise SystemExit(pass1(args, policy_url, out))
        if args.part == "throughput":
            print(throughput(args, policy_url, out))
            return
        with serve(create_app(_settings(policy_url, args.max_tokens, rules))) as proxy_url:
            if args.part == "steps":
                raise SystemExit(steps(args, proxy_url, out))
            status = live(args, proxy_url, out) if rules else bank(args, proxy_url, out)
    raise SystemExit(status)


if __name__ == "__main__":
    main()
