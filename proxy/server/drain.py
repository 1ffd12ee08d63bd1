"""Graceful shutdown: after SIGTERM the server stops accepting; requests still running when the
grace period ends fail with a clean ``503 server_shutting_down`` (streams: their error events)
instead of a dropped connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable

from proxy.errors import ShuttingDownError
from proxy.server.cancel import until_stopped

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
    while True:
        try:
            line = await until_stopped(anext(lines), drain.wait())
        except StopAsyncIteration:
            return
        except ShuttingDownError as error:
            for event in fail(error):
                yield event
            return
        yield line
