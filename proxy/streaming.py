"""SSE framing: exact ``data: {...}`` events, comment keep-alives while a search runs, and one
error event followed by ``[DONE]`` when something fails after the stream started.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
from pydantic import BaseModel

from proxy.errors import InternalError, ProxyError
from proxy.protocol import ChatCompletion
from proxy.responses import completion_chunks

__all__ = ["DONE", "KEEPALIVE", "chunk_dict", "search_events", "sse"]

logger = logging.getLogger(__name__)

DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"


def sse(payload: BaseModel | dict[str, Any]) -> bytes:
    body = (
        payload.model_dump_json(exclude_none=False)
        if isinstance(payload, BaseModel)
        else json.dumps(payload)
    )
    return f"data: {body}\n\n".encode()


async def search_events(
    work: Callable[[], Awaitable[ChatCompletion]],
    *,
    include_usage: bool,
    keepalive_s: float,
    request_id: str,
    disconnected: Callable[[], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """Run ``work`` while sending keep-alives, then stream its answer as chunks.

    A client disconnect (``disconnected`` returns) or closing the iterator cancels the work and
    with it every upstream call.
    """
    task = asyncio.ensure_future(work())
    watcher = asyncio.ensure_future(disconnected())
    try:
        yield b": searching\n\n"
        while not task.done():
            await asyncio.wait({task, watcher}, timeout=keepalive_s, return_when="FIRST_COMPLETED")
            if watcher.done():
                return
            if not task.done():
                yield KEEPALIVE
        completion = task.result()
    except ProxyError as exc:
        yield sse(exc.body())
        yield DONE
        return
    except Exception:  # a task boundary: log, then one error event
        logger.exception("request %s failed mid-stream", request_id)
        yield sse(InternalError(f"internal error (request id {request_id})").body())
        yield DONE
        return
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
                # Shielded: an enclosing (anyio) cancel scope must not cut the task's cleanup
                # short, or its upstream connection would stay open.
                with anyio.CancelScope(shield=True), contextlib.suppress(BaseException):
                    await pending
    for chunk in completion_chunks(completion, include_usage):
        yield sse(chunk_dict(chunk, include_usage))
    yield DONE


def chunk_dict(chunk: BaseModel, include_usage: bool) -> dict[str, Any]:
    """OpenAI's shape: ``usage`` present (null until the last) only when asked for; ``tts`` once."""
    data = chunk.model_dump()
    for choice in data["choices"]:
        choice["delta"] = {k: v for k, v in choice["delta"].items() if v is not None}
    if data.get("tts") is None:
        data.pop("tts", None)
    if not include_usage:
        data.pop("usage", None)
    return data
