"""Samples streamed at once and stopped once enough have finished (``auto``'s concurrent mode).

Must not import I/O libraries; ``asyncio`` runs the streams side by side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from strategies.types import Finish, Generation, Sampling, Streamed, StreamingPolicy

__all__ = ["settle_streams"]


async def settle_streams(
    policy: StreamingPolicy,
    count: int,
    sampling: Sampling,
    judge: Callable[[Generation], Awaitable[int]],
    window: int | None = None,
) -> list[Streamed]:
    """``count`` samples streamed, at most ``window`` at a time (``None``: all at once; a
    stream starts as one ends); each that finishes goes to ``judge``, which answers how many
    finished samples are wanted in all. The streams beyond that are stopped at their next
    chunk, and none is started past it. The finished ones in the order they finished, then the
    stopped ones. A failing stream fails the call; the others are cancelled."""
    stopped: set[int] = set()
    width = count if window is None else max(1, min(window, count))

    def keep(index: int) -> Callable[[Sequence[float]], bool]:
        return lambda _: index not in stopped

    tasks: list[asyncio.Future[Streamed]] = []
    order: dict[asyncio.Future[Streamed], int] = {}
    pending: set[asyncio.Future[Streamed]] = set()
    finished, cut = list[Streamed](), list[Streamed]()
    wanted = count

    def top_up() -> None:
        live = sum(order[t] not in stopped for t in pending)
        while len(tasks) < count and live < width and len(finished) + live < wanted:
            task = asyncio.ensure_future(policy.stream("", sampling, keep(len(tasks))))
            order[task] = len(tasks)
            tasks.append(task)
            pending.add(task)
            live += 1

    try:
        top_up()
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=order.__getitem__):
                streamed = task.result()
                if streamed.generation.finish is Finish.STOPPED:
                    cut.append(streamed)
                    continue
                finished.append(streamed)
                wanted = await judge(streamed.generation)
                running = sorted(order[t] for t in pending)
                stopped.update(running[max(wanted - len(finished), 0) :])
            top_up()
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
            elif not task.cancelled():
                task.exception()  # retrieved: the first failure is the one raised
    return [*finished, *cut]
