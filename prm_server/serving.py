"""How ``tts-prm serve`` runs uvicorn: a connection must finish its request headers within
``header_read_timeout_s`` or it is closed (half-open connections cannot pile up), with an
OpenAI-shaped 408 if a request had begun. (The proxy has the same guard; the two packages share
no code by design, so each holds its own.)"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["server_for"]


def server_for(
    app: FastAPI, host: str, port: int, log_level: str, header_s: float
) -> uvicorn.Server:
    class Protocol(_Deadline):
        deadline_s = header_s

    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, http=Protocol)
    return uvicorn.Server(config)


class _Deadline(HttpToolsProtocol):
    deadline_s = 10.0
    _timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._restart(begun=False)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._restart(begun=True)

    def on_headers_complete(self) -> None:
        self._stop()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()
        super().connection_lost(exc)

    def _restart(self, begun: bool) -> None:
        self._stop()
        self._timer = self.loop.call_later(self.deadline_s, self._expire, begun)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self, begun: bool) -> None:
        self._timer = None
        if begun and not self.transport.is_closing():
            message = f"the request headers did not arrive within {self.deadline_s:g} s"
            error = {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": "request_timeout",
            }
            body = json.dumps({"error": error}).encode()
            head = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            self.transport.write(
                head + b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
            )
        self.transport.close()
