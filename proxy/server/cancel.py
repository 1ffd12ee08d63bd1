"""The one cancellation core: work raced against what ends it early.

Every race in the proxy — a request against its client going away and the shutdown grace
period, a stream against the grace period, a search's keep-alive beats — is
``until_stopped(work, *stops)``: whichever finishes first, the other is cancelled and runs its
cleanup to the end (so an upstream connection is closed, not leaked), and errors come out as
themselves. The work runs in the caller's own task, cancelled the way ``asyncio.timeout``
cancels it (``Task.cancel`` then ``uncancel``); a stop that is a future (the grace period's,
``Drain.wait``) only hangs a callback on it, and any other stop gets one watcher task. So a
request's race costs one task (its client watcher), and a relayed stream line none, where a
task group per race cost three (bench/profile_hop.py).

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
    raised is raised (``Stopped`` if none). A cancellation from outside stays one."""
    race = _Race(stops)
    try:
        if race.reason is not None:  # over before it began: the work is never started
            raise race.reason
        try:
            return await work
        except asyncio.CancelledError:
            raise race.lost() from None
    finally:
        await race.end()
        _close(work, *stops)  # a coroutine never started is closed, not left unawaited


class _Race:
    """The stops of one ``until_stopped``: the first to finish cancels the caller's task (once,
    undone by ``lost``); a future gets a callback, any other stop a watcher task."""

    def __init__(self, stops: Iterable[Awaitable[BaseException | None]]) -> None:
        task = asyncio.current_task()
        assert task is not None, "until_stopped runs in a task"
        self._task = task
        self.reason: BaseException | None = None
        self._is_cancelling = False
        self._futures: list[asyncio.Future[BaseException | None]] = []
        self._watchers: list[asyncio.Future[BaseException | None]] = []
        for stop in stops:
            if asyncio.isfuture(stop):
                future = stop
                if future.done() and self.reason is None:
                    self.reason = _reason(future)
            else:
                future = asyncio.ensure_future(stop)
                self._watchers.append(future)
            self._futures.append(future)
        if self.reason is None:
            for future in self._futures:
                future.add_done_callback(self._stopped)

    def _stopped(self, stop: asyncio.Future[BaseException | None]) -> None:
        if self.reason is None and not stop.cancelled():
            self.reason = _reason(stop)
            self._is_cancelling = True
            self._task.cancel()

    def lost(self) -> BaseException:
        """What to raise for a cancelled work: the stop's error when a stop cancelled it (and
        nothing else did), else the cancellation."""
        if self._is_cancelling:
            self._is_cancelling = False
            if self._task.uncancel() == 0 and self.reason is not None:
                return self.reason
        return asyncio.CancelledError()

    async def end(self) -> None:
        """No stop acts any more; the watchers are cancelled and have finished."""
        for future in self._futures:
            future.remove_done_callback(self._stopped)
        if self._is_cancelling:  # a stop fired after the work had finished
            self._is_cancelling = False
            self._task.uncancel()
        for watcher in self._watchers:
            watcher.cancel()
        if self._watchers:
            await asyncio.wait(self._watchers)


def _reason(stop: asyncio.Future[BaseException | None]) -> BaseException:
    error = stop.exception()
    reason = error if error is not None else stop.result()
    return reason if reason is not None else Stopped()


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
    """Ends once the grace period after a shutdown signal has passed."""

    def __init__(self) -> None:
        self._ended: asyncio.Future[ShuttingDownError] | None = None
        self._timer: asyncio.TimerHandle | None = None

    def begin(self, grace_s: float) -> None:
        """Start the grace period (on the server's event loop)."""
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(grace_s, self._end)

    def _end(self) -> None:
        ended = self.wait()
        if not ended.done():
            ended.set_result(
                ShuttingDownError(
                    "the server is shutting down and its grace period ended before this "
                    "request finished; retry it (another replica will answer)"
                )
            )

    def wait(self) -> asyncio.Future[ShuttingDownError]:
        """The error requests still running get once the grace period has ended: one future
        for all of them (a stop costs ``until_stopped`` a callback, not a task)."""
        if self._ended is None:
            self._ended = asyncio.get_running_loop().create_future()
        return self._ended


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
