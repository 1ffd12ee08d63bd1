"""Graceful shutdown: after SIGTERM the server stops accepting; requests still running when the
grace period ends fail with a clean ``503 server_shutting_down`` (streams: their error events)
instead of a dropped connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable

import anyio

from proxy.errors import ShuttingDownError

__all__ = ["Drain", "until_drained"]


class Drain:
    """Set once the grace period after a shutdown signal has passed."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None

    def begin(self, grace_s: float) -> None:
        """Start the grace period (on the server's event loop)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(grace_s, self.event.set)

    async def wait(self) -> ShuttingDownError:
        await self.event.wait()
        return ShuttingDownError(
            "the server is shutting down and its grace period ended before this request "
            "finished; retry it (another replica will answer)"
        )


async def until_drained(
    lines: AsyncIterator[bytes], drain: Drain, fail: Callable[[ShuttingDownError], Iterable[bytes]]
) -> AsyncIterator[bytes]:
    """Relay ``lines``; when the grace period ends first, stop and send ``fail``'s events."""
    stopper = asyncio.ensure_future(drain.wait())
    step: asyncio.Future[bytes] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(lines))
            await asyncio.wait({step, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                break  # the grace period ended first
            try:
                line = step.result()
            except StopAsyncIteration:
                return
            yield line
        await _cancel(step)
        for event in fail(stopper.result()):
            yield event
    finally:  # also when the client went away mid-stream: no read is left running
        stopper.cancel()
        if step is not None and not step.done():
            await _cancel(step)


async def _cancel(task: asyncio.Future[bytes]) -> None:
    task.cancel()
    with anyio.CancelScope(shield=True), contextlib.suppress(BaseException):
        await task
