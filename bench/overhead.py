"""Proxy overhead benchmark (prints a table; not a test).

1. Pass-through overhead: p50/p99 latency through the proxy minus direct to a fake upstream that
   answers in 100 ms, with 1 and 50 concurrent clients. Target: <= 2 ms added at p50.
2. Orchestration efficiency of beam search N=16: a fake upstream whose latency follows a per-token
   model; ideal critical path (sum over depths of the slowest call + PRM time) / measured wall time.
   Target: >= 0.95.

Run: ``.venv/bin/python -m bench.overhead``
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
from fastapi import FastAPI, Request

from bench.process import server_process
from tests.fake_servers import FakePrm, FakeVllm, free_port, serve, tokens_of

UPSTREAM_S = 0.100
PER_TOKEN_S = 0.015  # a GPU decode step for one sequence is ~10-20 ms
REQUESTS = 200


def _chat_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "bench"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> dict[str, Any]:
        await request.json()
        await asyncio.sleep(UPSTREAM_S)
        message = {"role": "assistant", "content": "ok"}
        return {
            "id": "x", "object": "chat.completion", "created": 0, "model": "bench",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }  # fmt: skip

    return app


async def _latencies(url: str, concurrency: int, headers: dict[str, str]) -> list[float]:
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=concurrency)
    out: list[float] = []
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                started = time.perf_counter()
                response = await client.post("/v1/chat/completions", json=body, headers=headers)
                response.raise_for_status()
                out.append(time.perf_counter() - started)

        per = max(REQUESTS // concurrency, 4)
        await worker(2)  # warm up the connections
        out.clear()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker(per))
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)]


@contextlib.contextmanager
def _proxy_process(upstream: str, *flags: str) -> Iterator[str]:
    """The proxy in its own process, so the client and the fake upstream do not share its GIL."""
    port = free_port()
    command = [
        sys.executable, "-m", "proxy", "serve", "--port", str(port), "--policy-url",
        upstream + "/v1", "--log-level", "warning", *(flags or ("--policy-model", "bench")),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with server_process(command, url + "/metrics"):
        yield url


def passthrough_table() -> list[tuple[str, ...]]:
    rows = []
    with serve(_chat_app()) as upstream, _proxy_process(upstream) as proxy:
        for concurrency in (1, 50):
            direct = asyncio.run(_latencies(upstream, concurrency, {}))
            through = asyncio.run(_latencies(proxy, concurrency, {"X-TTS-Strategy": "none"}))
            p50 = (_pct(through, 0.5) - _pct(direct, 0.5)) * 1000
            p99 = (_pct(through, 0.99) - _pct(direct, 0.99)) * 1000
            rows.append((f"pass-through, {concurrency} clients", f"{p50:+.2f} ms",
                         f"{p99:+.2f} ms", "<= 2 ms p50"))  # fmt: skip
    return rows


class _TimedVllm(FakeVllm):
    """Answers after ``max(tokens in a choice) * PER_TOKEN_S``: one call's critical path."""

    critical_s: float = 0.0

    async def _completions(self, request: Request) -> Any:
        body = await request.json()
        answer = self._answer(body)
        longest = max(len(tokens_of(c["text"])) for c in answer["choices"])
        delay = longest * PER_TOKEN_S
        self.critical_s += delay
        await asyncio.sleep(delay)
        return answer


def beam_table() -> list[tuple[str, ...]]:
    vllm, prm = _TimedVllm(), FakePrm()
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
    headers = {"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "16", "X-TTS-Beam-Width": "4"}
    with (
        serve(vllm.app()) as v_url,
        serve(prm.app()) as p_url,
        _proxy_process(v_url, "--prm-url", p_url) as proxy,
    ):
        httpx.post(proxy + "/v1/chat/completions", json=body, headers=headers, timeout=60)
        ratios = []
        for _ in range(10):
            vllm.critical_s = 0.0
            started = time.perf_counter()
            response = httpx.post(
                proxy + "/v1/chat/completions", json=body, headers=headers, timeout=60
            )
            wall = time.perf_counter() - started
            prm_s = response.json()["tts"]["latency_ms"]["prm"] / 1000
            ratios.append((vllm.critical_s + prm_s) / wall)
    ratio = statistics.median(ratios)
    return [("beam search N=16, M=4: ideal / wall", f"{ratio:.3f}", f"{min(ratios):.3f}",
             ">= 0.95")]  # fmt: skip


def main() -> None:
    rows = passthrough_table() + beam_table()
    header = ("measure", "p50 / median", "p99 / worst", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
