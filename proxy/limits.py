"""ASGI guards, in front of the app: request size (a body over ``max_request_bytes`` is a 413
naming the limit, whether ``Content-Length`` announces it or a chunked body runs past it; nothing
over the limit is ever buffered) and keyed access to the docs pages."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["BodyLimit", "DocsGuard"]


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    def _error(self) -> bytes:
        message = (
            f"the request body is larger than {self._max} bytes (PROXY_MAX_REQUEST_BYTES); "
            "send a smaller request"
        )
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                          "code": "request_too_large"}}  # fmt: skip
        return json.dumps(body).encode()

    async def _reject(self, send: Send) -> None:
        body = self._error()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            await self._reject(send)
            return
        # Read the body here (never more than the limit), then replay it to the app; later
        # receives (disconnect detection) go to the server as before.
        chunks: list[bytes] = []
        received = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending its body
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self._max:
                await self._reject(send)
                return
            more = bool(message.get("more_body", False))
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
            body = json.dumps({"error": {
                "message": "missing or invalid API key (Authorization: Bearer ...)",
                "type": "authentication_error", "param": None, "code": "invalid_api_key",
            }}).encode()  # fmt: skip
            await send({"type": "http.response.start", "status": 401,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)
