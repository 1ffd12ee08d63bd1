"""What every handler shares: the app state dependency, the API-key check, the documented error
responses, and racing work against the client going away.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fastapi import Depends, Request
from fastapi.responses import Response, StreamingResponse
from starlette.types import Message, Receive, Scope, Send

from proxy.errors import AuthenticationError, ClientDisconnectedError, ShuttingDownError
from proxy.server.cancel import until_stopped
from proxy.state import AppState
from proxy.wire.chat import ErrorResponse, TtsOptions

__all__ = [
    "ERROR_RESPONSES",
    "admitted",
    "control_headers",
    "disconnected",
    "ended",
    "get_state",
    "has_key",
    "require_key",
]

# Documented in /openapi.json for every endpoint: the OpenAI error shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "invalid request (the message and param say what to change)"),
        (401, "missing or invalid API key"),
        (404, "unknown model or endpoint"),
        (429, "too many searches in flight"),
        (502, "the policy or PRM server failed"),
        (504, "the search or an upstream timed out"),
    )
}

_T = TypeVar("_T")


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.tts
    return state


def has_key(request: Request, state: AppState) -> bool:
    """Whether the request carries one of the proxy's API keys (constant-time comparison)."""
    header = request.headers.get("authorization", "")
    token = header[7:].encode() if header.lower().startswith("bearer ") else b""
    matches = [hmac.compare_digest(token, k.get_secret_value().encode())
               for k in state.settings.api_keys]  # fmt: skip
    return any(matches)


async def require_key(request: Request, state: AppState = Depends(get_state)) -> None:  # noqa: B008
    if state.settings.api_keys and not has_key(request, state):
        raise AuthenticationError("missing or invalid API key (Authorization: Bearer ...)")


def _header_parameters() -> list[dict[str, Any]]:
    """The ``X-TTS-*`` headers, documented as the ``tts`` object's fields they override."""
    schema = TtsOptions.model_json_schema()["properties"]
    return [
        {"name": "X-TTS-" + "-".join(p.title() for p in name.split("_")), "in": "header",
         "required": False, "description": f"overrides tts.{name}",
         "schema": {"type": "string"} | ({"enum": [str(v) for v in spec["anyOf"][0]["enum"]]}
                                         if "enum" in spec.get("anyOf", [{}])[0] else {})}
        for name, spec in schema.items()
    ]  # fmt: skip


def control_headers() -> dict[str, Any]:
    """A searched endpoint's ``openapi_extra``: its X-TTS-* headers (a new dict each time:
    FastAPI merges into it)."""
    return {"parameters": _header_parameters()}


class _HeldStream(StreamingResponse):
    """A streaming response that gives its admission slot back when it is done (sent in full,
    failed, or cut by a client disconnect)."""

    def __init__(self, source: StreamingResponse, release: Callable[[], None]) -> None:
        super().__init__(source.body_iterator, status_code=source.status_code,
                         headers=dict(source.headers), media_type=source.media_type)  # fmt: skip
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


async def admitted(state: AppState, respond: Callable[[], Awaitable[Response]]) -> Response:
    """Admission before the response starts: a 429 with ``Retry-After`` when full (streams
    included); the slot is held until the response, streamed or not, is finished."""
    slot = state.admission.admit()
    try:
        response = await respond()
    except BaseException:
        slot.release()
        raise
    if isinstance(response, StreamingResponse):
        return _HeldStream(response, slot.release)
    slot.release()
    return response


async def disconnected(request: Request) -> None:
    """Return when the client goes away; raise ``ShuttingDownError`` if the shutdown grace
    period ends first."""
    reason = await ended(request)
    if isinstance(reason, ShuttingDownError):
        raise reason


async def ended(request: Request) -> ClientDisconnectedError | ShuttingDownError:
    """What ends this request early, once it happens: the client gone, or the grace period."""
    try:
        await until_stopped(_client_gone(request), request.app.state.tts.drain.wait())
    except ShuttingDownError as reason:
        return reason
    return ClientDisconnectedError("the client disconnected; its upstream calls were cancelled")


async def _client_gone(request: Request) -> None:
    while True:
        message: Message = await request.receive()
        if message["type"] == "http.disconnect":
            return
