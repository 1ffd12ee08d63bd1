"""How ``tts-proxy serve`` runs uvicorn: a connection that never completes its request headers
is closed after ``header_read_timeout_s`` (slow-loris), request headers are bounded in bytes and
count (a 431 before they are buffered), and SIGTERM drains with a bounded grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from proxy.server.cancel import Drain
from proxy.server.limits import error_body
from proxy.settings import ProxySettings

__all__ = ["server_for"]

# After the grace the app answers what is left with 503s; this long more for them to be sent.
_BACKSTOP_S = 2


def server_for(app: FastAPI, settings: ProxySettings) -> uvicorn.Server:
    """The uvicorn server that ``tts-proxy serve`` runs."""
    timeout_s = settings.header_read_timeout_s

    class Protocol(_HeaderDeadline):
        header_read_timeout_s = timeout_s
        max_header_bytes = settings.max_header_bytes
        max_header_count = settings.max_header_count

    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        http=Protocol,
        # uvicorn's own backstop; the app fails what is left at the grace's end.
        timeout_graceful_shutdown=settings.shutdown_grace_s + _BACKSTOP_S,
    )
    return _DrainingServer(config, app, settings.shutdown_grace_s)


class _DrainingServer(uvicorn.Server):
    """SIGTERM: stop accepting, give in-flight requests ``shutdown_grace_s``, then fail the
    rest with a clean ``503 server_shutting_down`` (streams: their error events)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._grace_s = grace_s

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        drain: Drain | None = getattr(self._app.state, "drain", None)
        if drain is not None:
            drain.begin(self._grace_s)
        state = getattr(self._app.state, "tts", None)
        if state is not None:
            # Lame duck: the listener stays open while requests are in flight, so a connection
            # a load balancer still sends here gets a 503 it retries elsewhere (and readiness
            # turns 503), not a refused connection; closed once idle or at the grace's end.
            state.admission.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._grace_s):
                    await state.admission.idle()
        await super().shutdown(sockets)


class _HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading a request's headers, and bounds
    on their size.

    A new connection must start a request, and a started request must finish its headers,
    within ``header_read_timeout_s``; otherwise the connection is closed (with a 408 if a
    request had begun). Idle keep-alive connections stay uvicorn's ``timeout_keep_alive``.
    A request line plus headers over ``max_header_bytes``, or more than ``max_header_count``
    fields, is a 431 and the connection is closed: counted as the bytes arrive, so no more
    than the bound and one read are ever held.
    """

    header_read_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 2**10
    max_header_count: int = 100
    _header_timer: asyncio.TimerHandle | None = None
    _in_head = True  # between requests: reading a request line and headers, or waiting
    _heads_done = 0  # requests whose headers ended on this connection
    _head_bytes = 0
    _head_fields = 0
    _field_bytes = 0
    _rejected = False  # answered 431: the rest of what the parser holds is ignored

    # uvicorn narrows the transport to asyncio.Transport; so does this override
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(begun=False)

    def data_received(self, data: bytes) -> None:
        if self._rejected or self.transport.is_closing():
            return
        in_head, heads = self._in_head, self._heads_done
        super().data_received(data)
        # Between requests and no headers ended in this read: all of it was request line and
        # headers (a read that ends them is let through: one read past the bound at most).
        if in_head and heads == self._heads_done and not self._rejected:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._too_large(f"over {self.max_header_bytes} bytes (PROXY_MAX_HEADER_BYTES)")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(begun=True)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._rejected:
            return
        self._field_bytes += len(name) + len(value)  # a read that also ends the headers
        if self._head_fields > self.max_header_count:
            self._too_large(f"more than {self.max_header_count} fields (PROXY_MAX_HEADER_COUNT)")
            return
        if self._field_bytes > self.max_header_bytes:
            self._too_large(f"over {self.max_header_bytes} bytes (PROXY_MAX_HEADER_BYTES)")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        self._in_head, self._heads_done = False, self._heads_done + 1
        if not self._rejected:
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._rejected:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self._rejected:
            super().on_message_complete()
        self._in_head, self._head_bytes, self._head_fields, self._field_bytes = True, 0, 0, 0

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request it cannot parse (a malformed request line, a NUL in a
        header), in OpenAI's shape instead of plain text."""
        self._rejected = True
        self._disarm()
        message = f"the request could not be parsed as HTTP/1.1 ({msg.rstrip('.')})"
        self._close_with(
            b"400 Bad Request", error_body(message, "invalid_request_error", "invalid_http")
        )

    def _too_large(self, what: str) -> None:
        self._rejected = True
        self._disarm()
        message = f"the request's headers are too large: {what}"
        body = error_body(message, "invalid_request_error", "request_header_fields_too_large")
        self._close_with(b"431 Request Header Fields Too Large", body)

    def _close_with(self, status: bytes, body: bytes) -> None:
        """An answer sent before the app runs (OpenAI's shape), then the connection closed."""
        self.transport.write(
            b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, len(body), body)
        )
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, begun: bool) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(
            self.header_read_timeout_s, self._headers_timed_out, begun
        )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self, begun: bool) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if begun:
            message = (
                f"the request headers did not arrive within "
                f"{self.header_read_timeout_s:g} s (PROXY_HEADER_READ_TIMEOUT_S)"
            )
            body = error_body(message, "invalid_request_error", "request_timeout")
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()
