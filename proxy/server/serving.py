"""How ``tts-proxy serve`` runs uvicorn: a connection that never completes its request headers
is closed after ``header_read_timeout_s`` (slow-loris), and SIGTERM drains with a bounded grace.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

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

    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level.lower(),
        http=Protocol,
        # uvicorn's own backstop; the app fails what is left at the grace's end.
        timeout_graceful_shutdown=settings.shutdown_grace_s + _BACKSTOP_S,
    )  # fmt: skip
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
        await super().shutdown(sockets)


class _HeaderDeadline(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on reading a request's headers.

    A new connection must start a request, and a started request must finish its headers,
    within ``header_read_timeout_s``; otherwise the connection is closed (with a 408 if a
    request had begun). Idle keep-alive connections stay uvicorn's ``timeout_keep_alive``.
    """

    header_read_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm(begun=False)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm(begun=True)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

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
