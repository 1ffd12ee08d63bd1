"""Proxy overhead benchmark (prints a table; not a test).

1. Pass-through overhead: p50/p99 latency through the proxy minus direct to a fake upstream that
   answers in 100 ms, with 1 and 50 concurrent clients. Target: <= 2 ms added at p50. A minimal
   forwarder (raw ASGI + one httpx call, no validation or features) on the same machine gives the
   floor that the Python HTTP stack itself sets.
2. Orchestration efficiency of beam search N=16: a fake upstream whose latency follows a per-token
   model; ideal critical path (sum over depths of the slowest call + PRM time) / measured wall time.
   Target: >= 0.95. The fakes' own processing counts against this ratio, so two more rows: the
   share of wall time spent waiting on upstream calls and the proxy's own time per request
   (``tts.latency_ms``).

Upstream, proxy and client each run in their own process (the fake vLLM of (2) in this one, the
client in a child), so no measured hop waits on another's GIL.

The pass-through rows include optillm (approach ``none``) and its_hub (``budget`` 1, its
smallest), installed by ``bench.peers`` into throw-away venvs; ``--no-peers`` skips them.

Run: ``.venv/bin/python -m bench.overhead [--no-peers]``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
from fastapi import FastAPI, Request

from bench.peers import PEERS, peer_server
from bench.servers import PacedVllm, app_process, proxy_process
from harness.fake_prm import FakePrm
from harness.servers import serve

UPSTREAM_S = 0.100
PER_TOKEN_S = 0.015  # a GPU decode step for one sequence is ~10-20 ms
REQUESTS = 200
BEAM_REQUESTS = 10


def chat_app() -> FastAPI:
    """The pass-through upstream: answers every chat completion after ``UPSTREAM_S``."""
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
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "bench",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }

    return app


def forwarder_app(upstream: str) -> Any:
    """The floor: raw ASGI forwarding each POST body to ``upstream`` with one httpx call."""
    client = httpx.AsyncClient(base_url=upstream, timeout=60)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            upstream = await client.post(
                scope["path"], content=body, headers={"content-type": "application/json"}
            )
            status, content = upstream.status_code, upstream.content
        else:
            status, content = 200, b"{}"
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    return app


async def _latencies(
    url: str, concurrency: int, headers: dict[str, str], extra: dict[str, Any] | None = None
) -> list[float]:
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}]} | (extra or {})
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


def passthrough_table(with_peers: bool = True) -> list[tuple[str, ...]]:
    rows = []
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(app_process("bench.overhead:chat_app", "/v1/models"))
        servers: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
            (
                "pass-through",
                stack.enter_context(proxy_process(upstream)),
                {"X-TTS-Strategy": "none"},
                {},
            ),
            (
                "minimal forwarder",
                stack.enter_context(app_process("bench.overhead:forwarder_app", "/", upstream)),
                {},
                {},
            ),
        ]
        if with_peers:  # their nearest thing to a pass-through
            for name, peer in PEERS.items():
                url, _ = stack.enter_context(peer_server(name, upstream + "/v1"))
                extra = {"model": peer.passthrough_model} | peer.passthrough_body
                servers.append((f"{name} {peer.version} {_PEER_MODE[name]}", url, {}, extra))
        for concurrency in (1, 50):
            direct = asyncio.run(_latencies(upstream, concurrency, {}))
            for name, url, headers, extra in servers:
                values = asyncio.run(_latencies(url, concurrency, headers, extra))
                p50 = (_pct(values, 0.5) - _pct(direct, 0.5)) * 1000
                p99 = (_pct(values, 0.99) - _pct(direct, 0.99)) * 1000
                target = {"pass-through": "<= 2 ms p50", "minimal forwarder": "(floor)"}
                rows.append(
                    (
                        f"{name}, {concurrency} clients",
                        f"{p50:+.2f} ms",
                        f"{p99:+.2f} ms",
                        target.get(name, "(peer)"),
                    )
                )
    return rows


_PEER_MODE = {"optillm": "(approach none)", "its_hub": "(budget 1)"}


# Runs in a child process: posts the request BEAM_REQUESTS times, one JSON line per request.
_BEAM_CLIENT = """
import json, sys, time, httpx
url, count = sys.argv[1], int(sys.argv[4])
body, headers = json.loads(sys.argv[2]), json.loads(sys.argv[3])
with httpx.Client(timeout=60) as client:
    for _ in range(count):
        started = time.perf_counter()
        tts = client.post(url, json=body, headers=headers).raise_for_status().json()["tts"]
        print(json.dumps({"wall_s": time.perf_counter() - started, **tts["latency_ms"]}))
"""


def beam_table() -> list[tuple[str, ...]]:
    vllm, prm = PacedVllm(per_token_s=PER_TOKEN_S), FakePrm()
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
    headers = {"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "16", "X-TTS-Beam-Width": "4"}
    with (
        serve(vllm.app()) as v_url,
        serve(prm.app()) as p_url,
        proxy_process(v_url, "--prm-url", p_url) as proxy,
    ):
        url = proxy + "/v1/chat/completions"
        args = [url, json.dumps(body), json.dumps(headers)]
        warm_up = [sys.executable, "-c", _BEAM_CLIENT, *args, "1"]
        subprocess.run(warm_up, check=True, capture_output=True)
        vllm.critical_s = 0.0
        out = subprocess.run(
            [sys.executable, "-c", _BEAM_CLIENT, *args, str(BEAM_REQUESTS)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    runs = [json.loads(line) for line in out.splitlines()]
    critical = vllm.critical_s / len(runs)  # the same request each time: the same critical path
    ratios = [(critical + r["prm"] / 1000) / r["wall_s"] for r in runs]
    own = [r["proxy"] for r in runs]
    waiting = [(r["policy"] + r["prm"]) / 1000 / r["wall_s"] for r in runs]
    return [
        (
            "beam search N=16, M=4: ideal / wall",
            f"{statistics.median(ratios):.3f}",
            f"{min(ratios):.3f}",
            ">= 0.95",
        ),
        (
            "beam search N=16, M=4: upstream wait / wall",
            f"{statistics.median(waiting):.3f}",
            f"{min(waiting):.3f}",
            "",
        ),
        (
            "beam search N=16, M=4: proxy's own time",
            f"{statistics.median(own):.1f} ms",
            f"{max(own):.1f} ms",
            "",
        ),
    ]


def main() -> None:
    with_peers = "--no-peers" not in sys.argv[1:]
    rows = passthrough_table(with_peers) + beam_table()
    header = ("measure", "p50 / median", "p99 / worst", "target")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
