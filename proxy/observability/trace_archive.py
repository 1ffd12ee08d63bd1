"""Traces kept past the in-memory store (``PROXY_TRACES__PERSIST``): each one written to the
experiment store in the background, and read back when memory no longer has it.

Writes never hold up a response: at most ``max_pending`` are in flight, and past that a trace is
not persisted (counted in ``tts_trace_persist_total{outcome="dropped"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

from proxy.errors import UpstreamError
from proxy.observability.metrics import Metrics
from proxy.observability.traces import SearchTrace
from proxy.store import StoreLink

__all__ = ["TraceArchive"]

logger = logging.getLogger(__name__)


class TraceArchive:
    """Background writes of traces to the experiment store, and reads of old ones."""

    def __init__(self, store: StoreLink, metrics: Metrics, max_pending: int = 64) -> None:
        self._store = store
        self._metrics = metrics
        self._max_pending = max_pending
        self._tasks: set[asyncio.Task[None]] = set()

    def save(self, trace: SearchTrace) -> None:
        if len(self._tasks) >= self._max_pending:
            self._metrics.trace_persist.labels("dropped").inc()
            return
        task = asyncio.create_task(self._write(trace))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, trace: SearchTrace) -> None:
        try:
            store = await self._store.get()
            await store.add_trace(
                trace.request_id,
                datetime.fromtimestamp(trace.created, UTC),
                trace.model,
                trace.strategy,
                trace.model_dump(mode="json"),
            )
        except Exception as exc:  # a task boundary: a broken store must not reach any request
            self._metrics.trace_persist.labels("store_error").inc()
            logger.warning("trace %s not persisted: %s", trace.request_id, exc)
            return
        self._metrics.trace_persist.labels("stored").inc()

    async def load(self, request_id: str) -> SearchTrace | None:
        try:
            store = await self._store.get()
            found = await store.trace(request_id)
        except Exception as exc:
            raise UpstreamError(f"the experiment store failed ({type(exc).__name__})") from exc
        return SearchTrace.model_validate(found) if found is not None else None

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Let pending writes finish for up to ``grace_s``, then cancel the rest."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
