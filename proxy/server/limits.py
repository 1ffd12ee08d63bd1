"""ASGI guards, in front of the app: request size (a body over ``max_request_bytes`` is a 413
naming the limit, whether ``Content-Length`` announces it or a chunked body runs past it; nothing
over the limit is ever buffered; a body that stalls is a 408 after ``body_read_timeout_s``) and
keyed access to the docs pages; and admission, a bounded number of requests in flight, decided
before a response starts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.errors import OverloadedError, ShuttingDownError, anthropic_type, speaks_anthropic
from proxy.observability.metrics import Metrics

__all__ = ["Admission", "BodyLimit", "DocsGuard", "Slot", "error_body"]


def error_body(
    message: str, kind: str, code: str | None, *, status: int = 400, path: str = ""
) -> bytes:
    """OpenAI's error shape (Anthropic's on the Messages API's ``path``), for answers sent
    before the app (and its handlers) runs."""
    if speaks_anthropic(path):
        body = {"type": "error", "error": {"type": anthropic_type(status), "message": message}}
        return json.dumps(body).encode()
    error = {"message": message, "type": kind, "param": None, "code": code}
    return json.dumps({"error": error}).encode()


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float = 30.0) -> None:
        self._app = app
        self._max = max_bytes
        self._read_timeout_s = read_timeout_s

    def _error(self, path: str) -> bytes:
        message = (
            f"the request body is larger than {self._max} bytes (PROXY_MAX_REQUEST_BYTES); "
            "send a smaller request"
        )
        return error_body(
            message, "invalid_request_error", "request_too_large", status=413, path=path
        )

    async def _reject(
        self, send: Send, path: str, status: int = 413, body: bytes | None = None
    ) -> None:
        body = body if body is not None else self._error(path)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _read(self, receive: Receive, chunks: list[bytes]) -> bool | None:
        """The body into ``chunks``: True when complete, False past the limit, None when the
        client disconnected."""
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self._max:
                return False
            more = bool(message.get("more_body", False))
        return True

    def _slow_error(self, path: str) -> bytes:
        message = (
            f"the request body did not arrive within {self._read_timeout_s:g} s "
            "(PROXY_BODY_READ_TIMEOUT_S)"
        )
        return error_body(
            message, "invalid_request_error", "request_timeout", status=408, path=path
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await self._reject(send, path)
            return
        # Read the body here (never more than the limit), then replay it to the app; later
        # receives (disconnect detection) go to the server as before.
        chunks: list[bytes] = []
        try:
            async with asyncio.timeout(self._read_timeout_s):
                is_complete = await self._read(receive, chunks)
        except TimeoutError:  # a client that stalls mid-body (slow loris) holds nothing
            await self._reject(send, path, 408, self._slow_error(path))
            return
        if is_complete is None:
            return  # the client went away before sending its body
        if not is_complete:
            await self._reject(send, path)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self._app(scope, replay, send)


class DocsGuard:
    """401 (OpenAI-shaped) on ``paths`` unless ``allowed(scope)``; everything else passes."""

    def __init__(
        self, app: ASGIApp, paths: frozenset[str], allowed: Callable[[Scope], bool]
    ) -> None:
        self._app = app
        self._paths = paths
        self._allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self._paths and not self._allowed(scope):
            body = error_body(
                "missing or invalid API key (Authorization: Bearer ...)",
                "authentication_error",
                "invalid_api_key",
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [(b"content-type", b"application/json")],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)


class Slot:
    """One admitted request; ``release`` (idempotent) gives the place back."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.give_back()
            self._admission = None


class Admission:
    """A bounded number of requests in flight (searches, pass-through and routes alike). Decided
    before a response starts, so an overloaded stream is a real 429 with ``Retry-After``."""

    def __init__(self, limit: int, metrics: Metrics, retry_after_s: int = 1) -> None:
        self._limit = limit
        self._count = 0
        self._metrics = metrics
        self._retry_after_s = retry_after_s
        self._idle = asyncio.Event()
        self._idle.set()
        self.is_closed = False  # shutting down: new requests are refused with a 503

    def close(self) -> None:
        """Refuse every new request from now on (a 503 that closes its connection)."""
        self.is_closed = True

    async def idle(self) -> None:
        """Return once no admitted request is left."""
        await self._idle.wait()

    def admit(self) -> Slot:
        if self.is_closed:
            error = ShuttingDownError(
                "the server is shutting down; retry (another replica answers)"
            )
            error.headers = (error.headers or {}) | {"Connection": "close"}
            raise error
        if self._count >= self._limit:
            raise OverloadedError(
                f"too many requests in flight ({self._limit}, PROXY_MAX_CONCURRENT_SEARCHES); "
                f"retry after {self._retry_after_s} s",
                retry_after_s=self._retry_after_s,
            )
        self._count += 1
        self._idle.clear()
        self._metrics.in_flight.inc()
        return Slot(self)

    def give_back(self) -> None:
        self._count -= 1
        self._metrics.in_flight.dec()
        if self._count == 0:
            self._idle.set()
