"""The upstream transport (aiohttp's client behind httpx's interface): how each way an upstream
can fail reaches the retry and health rules, against raw TCP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from harness.servers import free_port
from proxy.errors import UpstreamError, UpstreamTimeoutError
from proxy.observability.metrics import Metrics
from proxy.upstream.client import Upstream, UpstreamConfig
from tests.test_faults import read_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def _config(url: str, retries: int, timeout_s: float = 10.0) -> UpstreamConfig:
    return UpstreamConfig(
        "policy", url + "/v1", None, 2.0, timeout_s, 4, retries, "PROXY_POLICY__TIMEOUT_S"
    )


def _answering(reply: bytes, seen: list[int]) -> Handler:
    """Each request on a connection gets ``reply``, then the connection is closed."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            seen.append(1)
            writer.write(reply)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


TRUNCATED = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{}"
MALFORMED = b"HTTP/1.1 two hundred\r\n\r\n"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("reply", "error"),
    [(TRUNCATED, "RemoteProtocolError"), (MALFORMED, "RemoteProtocolError")],
    ids=["a body cut short", "a malformed status line"],
)
async def test_a_broken_answer_is_retried_then_a_502_naming_only_its_kind(
    reply: bytes, error: str
) -> None:
    seen: list[int] = []
    server = await asyncio.start_server(_answering(reply, seen), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = Upstream(_config(f"http://127.0.0.1:{port}", retries=1), Metrics())
    try:
        with pytest.raises(UpstreamError, match=f"could not talk to .*\\({error}\\)") as caught:
            await upstream.post_json("/completions", {"prompt": "a secret prompt"})
        assert "secret" not in caught.value.message
        assert len(seen) == 2  # the first attempt and one retry
        assert upstream.health.failures == 1 and not upstream.health.is_available
    finally:
        await upstream.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_a_refused_connection_is_a_connect_error_and_ejects_the_upstream() -> None:
    upstream = Upstream(_config(f"http://127.0.0.1:{free_port()}", retries=0), Metrics())
    try:
        with pytest.raises(UpstreamError, match=r"\(ConnectError\)"):
            await upstream.post_json("/completions", {})
        assert upstream.health.last_error == "transport error (ConnectError)"
        assert await upstream.probe() == "unreachable (ConnectError)"
    finally:
        await upstream.aclose()


@pytest.mark.asyncio
async def test_a_silent_upstream_is_a_timeout_not_a_transport_error() -> None:
    answered = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await read_request(reader)
            await answered.wait()  # never set: the client gives up first
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    upstream = Upstream(_config(f"http://127.0.0.1:{port}", 0, timeout_s=0.3), Metrics())
    try:
        with pytest.raises(UpstreamTimeoutError, match=r"timed out after 0\.3 s"):
            await upstream.post_json("/completions", {})
        assert upstream.health.timeouts == 1
    finally:
        await upstream.aclose()
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_the_request_goes_out_with_the_upstream_s_headers_only() -> None:
    heads: list[bytes] = []
    body = b'{"ok": true}'
    reply = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_request(reader))
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    config = dataclasses.replace(_config(f"http://127.0.0.1:{port}", 0), api_key="k-1")
    upstream = Upstream(config, Metrics())
    try:
        assert await upstream.post_json("/completions", {"prompt": "é"}) == {"ok": True}
        names = _header_names(heads[0])
        assert names == {"host", "user-agent", "authorization", "content-type", "content-length"}
        assert b"user-agent: tts-proxy\r\n" in heads[0].lower()
        assert b"authorization: bearer k-1\r\n" in heads[0].lower()
    finally:
        await upstream.aclose()
        server.close()
        await server.wait_closed()


def _header_names(head: bytes) -> set[str]:
    lines = head.decode().split("\r\n")[1:]
    return {line.split(":", 1)[0].lower() for line in lines if line}
