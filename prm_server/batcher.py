"""Dynamic batching across concurrent requests, with an exact step-score cache.

Causality makes a step's score a function of the tokens up to its read position only, so scores
are cached under a hash of exactly those tokens: a prefix that beam search re-sends every depth is
never recomputed, and a request whose steps are all cached never reaches the model. Work items
wait at most ``max_wait_s`` for company, are sorted by cost (the tokens the scorer would run for
them: less than their length when it keeps prefixes) and cut into batches of at most
``max_batch_tokens`` padded tokens; the model runs in one worker thread at a time.
Must not import ``proxy`` or ``strategies``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from prm_server.families import Encoded
from prm_server.metrics import Metrics
from prm_server.scorer import Scorer

__all__ = ["Batcher", "QueueFullError"]

logger = logging.getLogger(__name__)


class QueueFullError(Exception):
    """More work is waiting than ``max_queue_items``."""


@dataclass(slots=True)
class _Work:
    item: Encoded
    future: asyncio.Future[list[float]]
    cost: int  # tokens the model would run for it when enqueued (cached prefixes excluded)
    enqueued: float = field(default_factory=time.perf_counter)


class _ScoreCache:
    """LRU of step scores keyed by a hash of the ids up to (and including) the read position."""

    def __init__(self, max_entries: int) -> None:
        self._data: OrderedDict[bytes, float] = OrderedDict()
        self._max = max_entries

    @staticmethod
    def keys(item: Encoded, model: str) -> list[bytes]:
        hasher = hashlib.blake2b(model.encode(), digest_size=16)
        data = array("l", item.ids).tobytes()
        width = array("l").itemsize
        keys = []
        done = 0
        for position in item.read_positions:
            hasher.update(data[done * width : (position + 1) * width])
            done = position + 1
            keys.append(hasher.copy().digest())
        return keys

    def get(self, key: bytes) -> float | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: bytes, value: float) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        if len(self._data) > self._max:
            self._data.popitem(last=False)


class Batcher:
    """Owns the model's queue; start with ``run()`` as a task in the lifespan."""

    def __init__(
        self,
        scorer: Scorer,
        metrics: Metrics,
        *,
        max_wait_s: float,
        max_batch_tokens: int,
        max_queue_items: int,
        cache_entries: int,
    ) -> None:
        self.scorer = scorer
        self.metrics = metrics
        self.max_wait_s = max_wait_s
        self.max_batch_tokens = max_batch_tokens
        self.max_queue_items = max_queue_items
        self.cache = _ScoreCache(cache_entries)
        self.forward_calls = 0
        self._queue: asyncio.Queue[_Work] = asyncio.Queue()

    async def score(self, items: Sequence[Encoded]) -> list[list[float]]:
        """Scores per read position of each item: from the cache, else from the model."""
        keys = [self.cache.keys(item, self.scorer.name) for item in items]
        results: list[list[float] | None] = []
        pending: list[tuple[int, asyncio.Future[list[float]]]] = []
        for index, (item, item_keys) in enumerate(zip(items, keys, strict=True)):
            cached = [self.cache.get(k) for k in item_keys]
            hits = sum(v is not None for v in cached)
            self.metrics.cache_hits.inc(hits)
            self.metrics.cache_misses.inc(len(cached) - hits)
            if all(v is not None for v in cached):
                results.append([v for v in cached if v is not None])
                continue
            results.append(None)
            pending.append((index, self._enqueue(item)))
        for index, future in pending:
            scores = await future
            results[index] = scores
            for key, value in zip(keys[index], scores, strict=True):
                self.cache.put(key, value)
        return [r for r in results if r is not None]

    def _enqueue(self, item: Encoded) -> asyncio.Future[list[float]]:
        if self._queue.qsize() >= self.max_queue_items:
            raise QueueFullError(f"{self.max_queue_items} items already wait for the model")
        future: asyncio.Future[list[float]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Work(item, future, self.scorer.cost(item)))
        return future

    async def run(self) -> None:
        """Collect, batch and compute forever (cancel to stop)."""
        while True:
            first = await self._queue.get()
            works = [first]
            deadline = time.perf_counter() + self.max_wait_s
            while sum(w.cost for w in works) < self.max_batch_tokens:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    works.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            live = [w for w in works if not w.future.cancelled()]
            for batch in self._batches(live):
                await self._compute(batch)

    def _batches(self, works: list[_Work]) -> list[list[_Work]]:
        """Length-sorted, each within the padded-token budget (at least one item each)."""
        ordered = sorted(works, key=lambda w: w.cost)
        batches: list[list[_Work]] = []
        current: list[_Work] = []
        for work in ordered:
            width = work.cost
            if current and width * (len(current) + 1) > self.max_batch_tokens:
                batches.append(current)
                current = []
            current.append(work)
        if current:
            batches.append(current)
        return batches

    async def _compute(self, batch: list[_Work]) -> None:
        now = time.perf_counter()
        for work in batch:
            self.metrics.queue_seconds.observe(now - work.enqueued)
        tokens = sum(w.cost for w in batch)
        self.metrics.batch_items.observe(len(batch))
        self.forward_calls += 1
        try:
            scores = await asyncio.to_thread(self.scorer.compute, [w.item for w in batch])
        except Exception as exc:  # a task boundary: fail the waiting requests, keep serving
            logger.exception("PRM forward failed for a batch of %d", len(batch))
            for work in batch:
                if not work.future.done():
                    work.future.set_exception(exc)
            return
        self.metrics.tokens.inc(tokens)
        self.metrics.compute_seconds.inc(time.perf_counter() - now)
        for work, row in zip(batch, scores, strict=True):
            if not work.future.done():
                work.future.set_result(row)
