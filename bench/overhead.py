"""Proxy overhead benchmark (prints a table; not a test).

1. Pass-through overhead: p50/p99 latency through the proxy minus direct to a fake upstream that
   answers in 100 ms, with 1 and 50 concurrent clients. Target: <= 2 ms added at p50. A minimal
   forwarder (raw ASGI + one httpx call, no validation or features) on the same machine gives the
   floor that the Python HTTP stack itself sets; the same forwarder with aiohttp's client (the
   proxy's upstream transport) shows how much of that floor is httpx's.
2. Orchestration efficiency of beam search N=16: a fake upstream whose latency follows a per-token
   model; ideal critical path (sum over depths of the slowest call + PRM time) / measured wall time.
   Target: >= 0.95. The fakes' own processing counts against this ratio, so two more rows: the
   share of wall time spent waiting on upstream calls and the proxy's own time per request
   (``tts.latency_ms``).

Upstream, proxy and client each run in their own process (the fake vLLM of (2) in this one, the
client in a child), so no measured hop waits on another's GIL.

The pass-through rows include optillm (approach ``none``) and its_hub (``budget`` 1, its
smallest), installed by ``bench.peers`` into throw-away venvs; ``--no-peers`` skips them.

Each server also reports its CPU time per request (user + system, from ``/proc``): on a
saturated machine that, not the wall time, is what queues.

Run: ``.venv/bin/python -m bench.overhead [--no-peers] [--runs 3] [--no-beam] [--no-stream]
[--before DIR]`` (``--before``: another checkout's proxy, an earlier commit's, as one more row).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from bench.peers import PEERS, peer_server
from bench.servers import PacedVllm, app_process, cpu_seconds, proxy_process
from harness.fake_prm import FakePrm
from harness.servers import serve

UPSTREAM_S = 0.100
PER_TOKEN_S = 0.015  # a GPU decode step for one sequence is ~10-20 ms
REQUESTS = 200
RUNS = 3
STREAM_CHUNKS = 100
STREAM_REQUESTS = 50
BEAM_REQUESTS = 10


def chat_app() -> FastAPI:
    """The pass-through upstream: answers every chat completion after ``UPSTREAM_S``."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "bench"}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> dict[str, Any] | StreamingResponse:
        if (await request.json()).get("stream"):
            return StreamingResponse(_chunks(), media_type="text/event-stream")
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


async def _chunks() -> AsyncIterator[str]:
    """A streamed answer: ``STREAM_CHUNKS`` chunks, a millisecond apart, then ``[DONE]``."""
    for _ in range(STREAM_CHUNKS):
        delta = {"index": 0, "delta": {"content": "tok "}, "finish_reason": None}
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 0, "model": "bench"}
        yield f"data: {json.dumps(chunk | {'choices': [delta]})}\n\n"
        await asyncio.sleep(0.001)
    yield "data: [DONE]\n\n"


def stream_row(runs: int = RUNS) -> tuple[str, ...]:
    """The proxy's CPU per streamed pass-through (``STREAM_CHUNKS`` chunks relayed)."""
    body = {"model": "bench", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"X-TTS-Strategy": "none"}

    async def relay(url: str, count: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for _ in range(count):
                async with client.stream(
                    "POST", "/v1/chat/completions", json=body, headers=headers
                ) as response:
                    async for _line in response.aiter_lines():
                        pass

    with (
        app_process("bench.overhead:chat_app", "/v1/models") as upstream,
        proxy_process(upstream.url) as proxy,
    ):
        asyncio.run(relay(proxy.url, 5))  # warm up
        cpu = []
        for _ in range(runs):
            before = cpu_seconds(proxy.pid)
            asyncio.run(relay(proxy.url, STREAM_REQUESTS))
            cpu.append((cpu_seconds(proxy.pid) - before) * 1000 / STREAM_REQUESTS)
    label = f"streamed pass-through ({STREAM_CHUNKS} chunks), 1 client"
    return (label, "", "", _spread(cpu, "{:.1f}"))


def forwarder_app(upstream: str) -> Any:
    """The floor: raw ASGI forwarding each POST body to ``upstream`` with one httpx call."""
    client = httpx.AsyncClient(base_url=upstream, timeout=60)

    async def post(path: str, body: bytes) -> tuple[int, bytes]:
        response = await client.post(
            path, content=body, headers={"content-type": "application/json"}
        )
        return response.status_code, response.content

    return _forwarder(post)


def aiohttp_forwarder_app(upstream: str) -> Any:
    """The floor with aiohttp's client (the proxy's upstream transport) in httpx's place."""
    sessions: list[aiohttp.ClientSession] = []  # made in the server's event loop

    async def post(path: str, body: bytes) -> tuple[int, bytes]:
        if not sessions:
            sessions.append(aiohttp.ClientSession(upstream))
        headers = {"content-type": "application/json"}
        async with sessions[0].post(path, data=body, headers=headers) as response:
            return response.status, await response.read()

    return _forwarder(post)


def _forwarder(post: Callable[[str, bytes], Awaitable[tuple[int, bytes]]]) -> Any:
    """Raw ASGI: each POST's body handed to ``post``, its answer relayed as JSON."""

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
            status, content = await post(scope["path"], body)
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


_NONE = {"X-TTS-Strategy": "none"}


@dataclass(frozen=True)
class _Hop:
    name: str
    url: str
    pid: int
    headers: dict[str, str]
    extra: dict[str, Any]


def passthrough_table(
    with_peers: bool = True, runs: int = RUNS, before: Path | None = None
) -> list[tuple[str, ...]]:
    """Each server's added p50 and p99 (its run's percentile minus the direct run's, taken just
    before) and its CPU per request, ``runs`` times in turn with every server up at once: the
    median of the runs, and their range. ``before``: another checkout's proxy as a row too."""
    with contextlib.ExitStack() as stack:
        upstream = stack.enter_context(app_process("bench.overhead:chat_app", "/v1/models")).url
        proxy = stack.enter_context(proxy_process(upstream))
        floor = stack.enter_context(app_process("bench.overhead:forwarder_app", "/", upstream))
        floor_aio = stack.enter_context(
            app_process("bench.overhead:aiohttp_forwarder_app", "/", upstream)
        )
        hops = [
            _Hop("pass-through", proxy.url, proxy.pid, _NONE, {}),
            _Hop("minimal forwarder", floor.url, floor.pid, {}, {}),
            _Hop("minimal forwarder over aiohttp", floor_aio.url, floor_aio.pid, {}, {}),
        ]
        if before is not None:
            earlier = stack.enter_context(proxy_process(upstream, checkout=before))
            hops.insert(1, _Hop("pass-through (--before)", earlier.url, earlier.pid, _NONE, {}))
        if with_peers:  # their nearest thing to a pass-through
            for name, peer in PEERS.items():
                url, pid = stack.enter_context(peer_server(name, upstream + "/v1"))
                extra = {"model": peer.passthrough_model} | peer.passthrough_body
                label = f"{name} {peer.version} {_PEER_MODE[name]}"
                hops.append(_Hop(label, url, pid, {}, extra))
        rows: list[tuple[str, ...]] = []
        for concurrency in (1, 50):
            added: dict[str, list[tuple[float, float, float]]] = {h.name: [] for h in hops}
            for _ in range(runs):
                for hop in hops:
                    direct = asyncio.run(_latencies(upstream, concurrency, {}))
                    before = cpu_seconds(hop.pid)
                    values = asyncio.run(_latencies(hop.url, concurrency, hop.headers, hop.extra))
                    cpu_ms = (cpu_seconds(hop.pid) - before) * 1000 / len(values)
                    p50 = (_pct(values, 0.5) - _pct(direct, 0.5)) * 1000
                    p99 = (_pct(values, 0.99) - _pct(direct, 0.99)) * 1000
                    added[hop.name].append((p50, p99, cpu_ms))
            for hop in hops:
                p50s, p99s, cpus = zip(*added[hop.name], strict=True)
                rows.append(
                    (
                        f"{hop.name}, {concurrency} clients",
                        _spread(p50s, "{:+.1f}"),
                        _spread(p99s, "{:+.1f}"),
                        _spread(cpus, "{:.2f}"),
                    )
                )
    return rows


def _spread(values: Sequence[float], form: str) -> str:
    """The median and, in brackets, the range."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{form.format(mid)} ({form.format(low)} … {form.format(high)})"


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
        url = proxy.url + "/v1/chat/completions"
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-peers", action="store_true", help="the proxy and the floor only")
    parser.add_argument("--runs", type=int, default=RUNS, help="pass-through runs per server")
    parser.add_argument("--no-beam", action="store_true", help="skip the beam-search rows")
    parser.add_argument(
        "--before", type=Path, help="another checkout (an earlier commit's): its proxy a row too"
    )
    parser.add_argument("--no-stream", action="store_true", help="skip the streamed row")
    args = parser.parse_args()
    rows = passthrough_table(not args.no_peers, args.runs, args.before)
    if not args.no_stream:
        rows.append(stream_row(args.runs))
    _print(("pass-through", "added p50, ms", "added p99, ms", "CPU per request, ms"), rows)
    print("median of the runs (range); the added latency is each run's minus the direct one's")
    if not args.no_beam:
        print()
        _print(("measure", "median", "worst", "target"), beam_table())


def _print(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


if __name__ == "__main__":
    main()
