"""What every handler shares: the app state dependency, API-key check, JSON body parsing into a
wire model, and racing work against the client going away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable
from typing import TypeVar

import anyio
from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError
from starlette.types import Message

from proxy.errors import AuthenticationError, InvalidRequestError
from proxy.service import AppState

__all__ = ["disconnected", "get_state", "parse_body", "require_key", "until_disconnect"]

_T = TypeVar("_T")
_M = TypeVar("_M", bound=BaseModel)


async def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.tts
    return state


async def require_key(request: Request, state: AppState = Depends(get_state)) -> None:  # noqa: B008
    keys = state.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else ""
    if not any(token == key.get_secret_value() for key in keys):
        raise AuthenticationError("missing or invalid API key (Authorization: Bearer ...)")


def parse_body(raw: bytes, model: type[_M]) -> _M:
    """The body as ``model``; a 400 naming the first bad parameter otherwise."""
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestError(f"the request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise InvalidRequestError(f"{param}: {first['msg']}", param=param) from exc


async def until_disconnect(request: Request, work: Awaitable[_T]) -> _T:
    """Race ``work`` against the client going away; a disconnect cancels all upstream calls."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
                with anyio.CancelScope(shield=True), contextlib.suppress(asyncio.CancelledError):
                    await pending
    if task.cancelled():
        raise asyncio.CancelledError("client disconnected")
    return task.result()


async def disconnected(request: Request) -> None:
    while True:
        message: Message = await request.receive()
        if message["type"] == "http.disconnect":
            return
