"""SSE framing: exact ``data: {...}`` events, comment keep-alives while a search runs, and one
error event followed by ``[DONE]`` when something fails after the stream started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

import anyio
from pydantic import BaseModel

from proxy.errors import ClientDisconnectedError, InternalError, ProxyError
from proxy.server.cancel import until_stopped
from proxy.wire.json_types import JSONObject

__all__ = [
    "DONE",
    "KEEPALIVE",
    "chunk_dict",
    "keepalive_events",
    "sse",
]

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def sse(payload: BaseModel | JSONObject) -> bytes:
    body = (
        payload.model_dump_json(exclude_none=False)
        if isinstance(payload, BaseModel)
        else json.dumps(payload)
    )
    return f"data: {body}\n\n".encode()


async def keepalive_events(
    work: Callable[[], Awaitable[_T]],
    *,
    opening: Callable[[], bytes],
    keepalive: Callable[[], bytes],
    finish: Callable[[_T], Iterable[bytes]],
    fail: Callable[[ProxyError], Iterable[bytes]],
    keepalive_s: float,
    request_id: str,
    disconnected: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """Run ``work`` while sending ``opening`` then a ``keepalive`` every ``keepalive_s``; then
    the ``finish`` events of its result, or the ``fail`` events of its error.

    A client disconnect (``disconnected`` returns) or closing the iterator cancels the work and
    with it every upstream call.
    """
    task = asyncio.ensure_future(work())  # runs across the beats; cancelled below if left
    try:
        yield opening()
        async for _ in _beats(task, keepalive_s, disconnected):
            yield keepalive()
        result = task.result()
    except ClientDisconnectedError:
        return
    except ProxyError as exc:
        for event in fail(exc):
            yield event
        return
    except Exception:  # a task boundary: log, then the error events
        logger.exception("request %s failed mid-stream", request_id)
        for event in fail(InternalError(f"internal error (request id {request_id})")):
            yield event
        return
    finally:
        if not task.done():
            task.cancel()
            # Shielded: an enclosing (anyio) cancel scope must not cut the task's cleanup
            # short, or its upstream connection would stay open.
            with anyio.CancelScope(shield=True), contextlib.suppress(BaseException):
                await task
    for event in finish(result):
        yield event


async def _beats(
    task: asyncio.Future[_T], every_s: float, disconnected: Callable[[], Awaitable[None]]
) -> AsyncIterator[None]:
    """One beat each ``every_s`` while ``task`` runs; ``ClientDisconnectedError`` once the
    client is gone (``ShuttingDownError`` when the grace period ends first)."""

    async def client_gone() -> ClientDisconnectedError:
        await disconnected()
        return ClientDisconnectedError("the client disconnected")

    while not task.done():
        await until_stopped(asyncio.wait({task}, timeout=every_s), client_gone())
        if not task.done():
            yield


def chunk_dict(chunk: BaseModel, include_usage: bool) -> JSONObject:
    """OpenAI's shape: ``usage`` present (null until the last) only when asked for; ``tts`` once."""
    data = chunk.model_dump()
    for choice in data["choices"]:
        choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
    if data.get("tts") is None:
        data.pop("tts", None)
    if not include_usage:
        data.pop("usage", None)
    return data
