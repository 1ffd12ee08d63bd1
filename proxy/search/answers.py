"""Answer comparison off the event loop.

Grouping final answers by equivalence runs sympy (through math-verify) on model output, which is
untrusted text. On the event loop one slow comparison would stall every request in flight. So
answers that need sympy go to a small, bounded pool of worker threads, under a total deadline
per request: past it the request's answers are grouped as text and the search goes on. What
keeps a worker from running away is the cost gate in front of sympy (``strategies.answer_cost``:
no answer that spells a number too big to compute reaches it); the deadline bounds the rest.
Answers that need no sympy (one distinct answer, or plain numbers) are grouped in place.
(math-verify's own timeout uses SIGALRM, which works only in a main thread.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from proxy.observability.metrics import Metrics
from strategies import group_by_text, group_equivalent
from strategies.answers import needs_sympy

__all__ = ["AnswerPool"]

logger = logging.getLogger(__name__)


def _warm() -> None:
    """Import and exercise the parsers (~0.5 s) before a request waits for them."""
    group_equivalent(["1", "\\frac{1}{2}", "0.5", "x^2"])


class AnswerPool:
    """The ``AnswerGrouper`` of the proxy's searches."""

    def __init__(self, workers: int, deadline_s: float, metrics: Metrics) -> None:
        self._deadline_s = deadline_s
        self._metrics = metrics
        # 0 workers: compare on the event loop (a one-user demo)
        self._pool = ThreadPoolExecutor(workers, "answers") if workers else None

    async def start(self) -> None:
        """Warm the parsers at start-up, not in a first request."""
        if self._pool is None:
            _warm()
        else:
            await asyncio.wrap_future(self._pool.submit(_warm))

    async def __call__(self, answers: Sequence[str], timeout_s: int) -> tuple[int, ...]:
        if self._pool is None or not needs_sympy(answers):
            self._metrics.answer_groupings.labels("inline").inc()
            return group_equivalent(answers, timeout_s)
        work = self._pool.submit(group_equivalent, list(answers), timeout_s)
        try:
            groups = await asyncio.wait_for(asyncio.wrap_future(work), self._deadline_s)
        except TimeoutError:
            logger.warning(
                "comparing %d answers took over %g s (PROXY_ANSWER_DEADLINE_S): grouped as text",
                len(answers),
                self._deadline_s,
            )
            self._metrics.answer_groupings.labels("timeout").inc()
            return group_by_text(answers)
        self._metrics.answer_groupings.labels("worker").inc()
        return tuple(groups)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
