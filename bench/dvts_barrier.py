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
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import time

import httpx

from bench.servers import PacedVllm, proxy_process
from harness.fake_prm import FakePrm
from harness.servers import serve

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=12)
    args = parser.parse_args()
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
