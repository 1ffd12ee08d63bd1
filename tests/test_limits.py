"""Request size and memory bounds: a 413 naming the limit (declared or chunked bodies), deeply
nested JSON as a 400, and the rendered-prompt cache held to its byte budget."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.observability.metrics import Metrics
from proxy.upstream.client import Upstream, UpstreamConfig
from proxy.upstream.policy import PromptRenderer
from tests.conftest import ProxyFactory

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def test_a_body_over_the_limit_is_a_413_naming_it(start_proxy: ProxyFactory) -> None:
    url = start_proxy(max_request_bytes=4096)
    big = {"model": "fake-policy", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = httpx.post(url + "/v1/chat/completions", json=big)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "request_too_large" and "4096 bytes" in error["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "fake-policy", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    chunked = httpx.post(
        url + "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert chunked.status_code == 413
    small = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "fake-policy", "messages": MESSAGES},
        headers={"X-TTS-Strategy": "cot"},
    )
    assert small.status_code == 200


def test_deeply_nested_json_is_a_400(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    body = b'{"model": "fake-policy", "messages": [], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    response = httpx.post(
        url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def _policy_config(url: str, *, max_connections: int) -> UpstreamConfig:
    return UpstreamConfig(
        kind="policy",
        base_url=url + "/v1",
        api_key=None,
        connect_timeout_s=5,
        timeout_s=30,
        max_connections=max_connections,
        max_retries=0,
        timeout_setting="t",
    )


@pytest.mark.asyncio
async def test_prompt_cache_stays_within_its_byte_budget() -> None:
    with serve(FakeVllm().app()) as url:
        config = _policy_config(url, max_connections=4)
        upstream = Upstream(config, Metrics())
        renderer = PromptRenderer(max_bytes=20_000)
        try:
            for i in range(12):
                messages = [{"role": "user", "content": f"{i} " + "z" * 3000}]
                await renderer.render(upstream, "fake-policy", messages, str(i))
                assert renderer.size_bytes <= 20_000
            huge = [{"role": "user", "content": "w" * 30_000}]  # larger than the budget: not kept
            prompt = await renderer.render(upstream, "fake-policy", huge, "huge")
            assert "w" * 30_000 in prompt and 0 < renderer.size_bytes <= 20_000
        finally:
            await upstream.aclose()


def test_metrics_and_docs_can_be_protected(start_proxy: ProxyFactory) -> None:
    url = start_proxy(api_keys=["sk-1"], protect_metrics=True, protect_docs=True)
    key = {"Authorization": "Bearer sk-1"}
    for path in ("/metrics", "/openapi.json", "/docs"):
        anonymous = httpx.get(url + path)
        assert (
            anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "invalid_api_key"
        )
        assert httpx.get(url + path, headers=key).status_code == 200
    assert httpx.get(url + "/health/live").status_code == 200  # probes stay open
    open_url = start_proxy(api_keys=["sk-1"])  # the defaults: metrics and docs open
    assert httpx.get(open_url + "/metrics").status_code == 200


def test_a_stalled_body_is_a_408_and_frees_the_connection(start_proxy: ProxyFactory) -> None:
    url = start_proxy(body_read_timeout_s=0.5)
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
        conn.sendall(head + b"Content-Type: application/json\r\n\r\n" + b'{"model"')
        started = time.monotonic()
        answer = b""
        while b"request_timeout" not in answer:  # headers and body may come in two packets
            chunk = conn.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer
    assert time.monotonic() - started < 3.0


@pytest.mark.asyncio
async def test_pooled_connections_reach_max_connections_in_all_and_no_more() -> None:
    """``max_connections`` calls are in flight at once, and the calls beyond wait for one of
    the connections to free up."""
    limit = 35
    held, seen_max = 0, 0
    full = threading.Event()
    gate: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []  # the server loop's

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal held, seen_max
        if scope["type"] != "http":
            return
        if not gate:
            gate.append((asyncio.get_running_loop(), asyncio.Event()))
        held += 1
        seen_max = max(seen_max, held)
        if held == limit:
            full.set()
        await gate[0][1].wait()
        held -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    with serve(app) as url:
        config = _policy_config(url, max_connections=limit)
        upstream = Upstream(config, Metrics())
        try:
            calls = [asyncio.ensure_future(upstream.post_json("/x", {})) for _ in range(limit + 5)]
            assert await asyncio.to_thread(full.wait, 20)  # every connection in use
            loop, opened = gate[0]
            loop.call_soon_threadsafe(opened.set)
            assert await asyncio.gather(*calls) == [{}] * len(calls)
            assert seen_max == limit  # the five beyond waited for a connection
        finally:
            for loop, opened in gate:
                loop.call_soon_threadsafe(opened.set)
            await upstream.aclose()
