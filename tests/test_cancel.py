"""The cancellation core (``proxy.server.cancel``): work raced against what ends it early, in the
caller's own task. Each test races real coroutines and futures on the event loop."""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import AsyncIterator

import pytest

from proxy.errors import ClientDisconnectedError, ShuttingDownError
from proxy.server.cancel import Drain, Stopped, until_drained, until_stopped


async def test_the_work_that_finishes_first_is_the_result_and_its_stop_is_cancelled() -> None:
    stop_ended = asyncio.Event()

    async def stop() -> BaseException | None:
        try:
            await asyncio.Event().wait()
        finally:
            stop_ended.set()
        return None

    async def work() -> str:
        await asyncio.sleep(0)
        return "done"

    assert await until_stopped(work(), stop()) == "done"
    assert stop_ended.is_set()  # the watcher ran its cleanup before until_stopped returned


async def test_a_stop_that_finishes_first_raises_its_error_after_the_works_cleanup() -> None:
    cleaned = asyncio.Event()
    gone = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()
        return "never"

    async def client_gone() -> ClientDisconnectedError:
        await gone.wait()
        return ClientDisconnectedError("gone")

    asyncio.get_running_loop().call_soon(gone.set)
    with pytest.raises(ClientDisconnectedError):
        await until_stopped(work(), client_gone())
    assert cleaned.is_set()
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0  # no cancellation left pending
    await asyncio.sleep(0)  # and the task goes on awaiting


async def test_a_stop_with_no_error_of_its_own_raises_stopped() -> None:
    async def stop() -> BaseException | None:
        return None

    with pytest.raises(Stopped):
        await until_stopped(asyncio.Event().wait(), stop())


async def test_the_grace_period_ends_every_request_through_one_future() -> None:
    drain = Drain()
    first, second = drain.wait(), drain.wait()
    assert first is second
    drain.begin(0.0)

    with pytest.raises(ShuttingDownError):
        await until_stopped(asyncio.Event().wait(), first)
    assert first.done()


async def test_a_stop_already_over_never_starts_the_work() -> None:
    drain = Drain()
    drain.begin(0.0)
    await drain.wait()
    started = False

    async def work() -> None:
        nonlocal started
        started = True

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine was never awaited" would be one
        with pytest.raises(ShuttingDownError):
            await until_stopped(work(), drain.wait())
        gc.collect()
    assert not started


async def test_a_cancellation_from_outside_stays_a_cancellation() -> None:
    gone = asyncio.Event()
    inside = asyncio.Event()

    async def client_gone() -> ClientDisconnectedError:
        await gone.wait()
        return ClientDisconnectedError("gone")

    async def request() -> None:
        inside.set()
        await until_stopped(asyncio.Event().wait(), client_gone())

    task = asyncio.create_task(request())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_stream_is_relayed_until_the_grace_period_ends() -> None:
    drain = Drain()
    more = asyncio.Event()

    async def lines() -> AsyncIterator[bytes]:
        yield b"one\n"
        yield b"two\n"
        await more.wait()  # held until the grace period has ended
        yield b"never\n"

    relayed = []
    async for line in until_drained(
        lines(), drain, lambda error: [b"error: " + error.code.encode()]
    ):
        relayed.append(line)
        if line == b"two\n":
            drain.begin(0.0)
    assert relayed == [b"one\n", b"two\n", b"error: server_shutting_down"]
