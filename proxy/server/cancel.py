"""The one cancellation core: work raced against what ends it early.

Every race in the proxy — a request against its client going away and the shutdown grace
period, a stream against the grace period, a search's keep-alive beats — is
``until_stopped(work, *stops)`` on an
``asyncio.TaskGroup``: whichever finishes first, the other is cancelled and awaited to the end of
its cleanup (so an upstream connection is closed, not leaked), and errors come out as themselves,
never wrapped in an exception group.

Graceful shutdown is one such race: after SIGTERM the server stops accepting; requests still
running when the grace period (``Drain``) ends fail with a clean ``503 server_shutting_down``
(streams: their error events) instead of a dropped connection.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TypeVar

from starlette.types import Receive

from proxy.errors import ClientDisconnectedError, ShuttingDownError

__all__ = ["Drain", "Stopped", "client_gone", "until_drained", "until_stopped"]

_T = TypeVar("_T")


class Stopped(Exception):
    """``stop`` finished first without naming an error of its own."""


async def until_stopped(work: Awaitable[_T], *stops: Awaitable[BaseException | None]) -> _T:
    """``work``'s result; unless one of ``stops`` finishes first: then ``work`` and the other
    stops are cancelled (their cleanup runs to the end) and the error that stop returned or
    raised is raised (``Stopped`` if none)."""

    async def finishing() -> _T:
        return await work

    async def stopping(stop: Awaitable[BaseException | None]) -> None:
        reason = await stop
        raise reason if reason is not None else Stopped()

    try:
        async with asyncio.TaskGroup() as group:
            worker = group.create_task(finishing())
            watchers = [group.create_task(stopping(stop)) for stop in stops]
            worker.add_done_callback(lambda _: [watcher.cancel() for watcher in watchers])
    except BaseExceptionGroup as errors:
        raise errors.exceptions[0] from None
    finally:
        _close(work, *stops)  # any may have been cancelled before it started
    return worker.result()


async def client_gone(receive: Receive) -> ClientDisconnectedError:
    """Returns once the ASGI client has disconnected (the request's body already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass
    return ClientDisconnectedError("the client disconnected; its upstream calls were cancelled")


def _close(*awaitables: Awaitable[object]) -> None:
    for awaitable in awaitables:
        if inspect.iscoroutine(awaitable):
            awaitable.close()  # a no-op for one that ran


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
