"""Shadow A/B: the same request sent to a baseline model (through litellm) while our search runs,
both answers recorded in the experiment store. The user only ever gets our answer, and never waits
for the baseline: the comparison finishes in the background, bounded by ``shadow.max_pending``
(beyond it a comparison is skipped and counted), and its cost never reaches the user's ``usage``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import logging
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from proxy.errors import InvalidRequestError, ProxyError, UpstreamTimeoutError
from proxy.observability.metrics import Metrics
from proxy.observability.telemetry import Telemetry
from proxy.settings import ProxySettings
from proxy.shadow.records import Primary, Searched, baseline_side, comparison
from proxy.store import StoreLink
from proxy.upstream.litellm import litellm_call, litellm_params
from proxy.wire.chat import ChatCompletion
from proxy.wire.json_types import JSONObject

__all__ = ["Searched", "Shadow", "ShadowTicket"]

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class ShadowTicket:
    """One comparison in flight: the baseline's task and our side, once known."""

    model: str  # as requested (a route name or a litellm model)
    route: str  # the litellm model called
    primary: asyncio.Future[Primary] = field(default_factory=asyncio.Future)


class Shadow:
    """Starts baseline calls, pairs them with our answers and writes the records."""

    def __init__(
        self,
        settings: ProxySettings,
        metrics: Metrics,
        store: StoreLink,
        telemetry: Telemetry,
        seed: int | None = None,
    ) -> None:
        self._settings = settings
        self._telemetry = telemetry
        self._metrics = metrics
        self._random = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()
        self._store = store

    def target(self, compare: str | None) -> str | None:
        """The baseline to compare this request with: ``compare`` (X-TTS-Compare), else the
        configured one at the configured rate, else None."""
        if compare:
            return compare
        s = self._settings
        if s.shadow.model and self._random.random() < s.shadow.sample_rate:
            return s.shadow.model
        return None

    def start(self, target: str, request: JSONObject) -> ShadowTicket | None:
        """Send ``request`` (one chat call's parameters, no model) to the baseline now; None
        (and counted) when too many are pending."""
        if any(importlib.util.find_spec(m) is None for m in ("litellm", "sqlalchemy")):
            raise InvalidRequestError(
                "comparisons need the litellm and store extras: pip install "
                "'tts-proxy[litellm,store]'",
                param="compare",
            )
        if len(self._tasks) >= self._settings.shadow.max_pending:
            self._metrics.shadow.labels("skipped").inc()
            logger.warning("shadow comparison skipped: %d pending", len(self._tasks))
            return None
        ticket = ShadowTicket(target, self._settings.litellm_routes.get(target, target))
        task = asyncio.create_task(self._compare(ticket, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return ticket

    async def _compare(self, ticket: ShadowTicket, request: JSONObject) -> None:
        call = asyncio.create_task(self._baseline(ticket, request))
        try:
            # Bounded: a request cancelled before its search even started never reports back.
            await asyncio.wait({ticket.primary}, timeout=self._settings.request_timeout_s + 5)
            if not ticket.primary.done():
                ticket.primary.cancel()
            if ticket.primary.cancelled():  # our search failed or the client left
                self._metrics.shadow.labels("abandoned").inc()
                return
            baseline = await call
        finally:
            if not call.done():  # abandoned, or shutting down: stop paying for the baseline
                call.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await call
        record = comparison(
            ticket.primary.result(), baseline_side(ticket.route, *baseline), self._settings
        )
        try:
            store = await self._store.get()
            await store.add(record)
        except Exception as exc:  # a task boundary: a broken store must not reach any request
            self._metrics.shadow.labels("store_error").inc()
            logger.warning("shadow record %s not stored: %s", record.request_id, exc)
            return
        self._metrics.shadow.labels(
            "recorded" if record.baseline.status == "ok" else f"baseline_{record.baseline.status}"
        ).inc()

    async def _baseline(
        self, ticket: ShadowTicket, request: JSONObject
    ) -> tuple[Any, float, ProxyError | None]:
        plain = request | {"stream": False, "n": 1}
        plain.pop("stream_options", None)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._settings.shadow.timeout_s):
                params = litellm_params(self._settings, plain)
                response = await litellm_call(ticket.route, params, self._telemetry)
        except TimeoutError:
            error = UpstreamTimeoutError(f"no answer in {self._settings.shadow.timeout_s:g} s")
            return None, time.perf_counter() - started, error
        except ProxyError as exc:
            return None, time.perf_counter() - started, exc
        return response, time.perf_counter() - started, None

    def finish(
        self,
        ticket: ShadowTicket,
        *,
        request_id: str,
        searched: Searched,
        completion: ChatCompletion,
        latency_s: float,
        prompt: str,
    ) -> None:
        """Hand our answer to the comparison (returns at once)."""
        if not ticket.primary.done():
            ticket.primary.set_result(
                Primary(request_id, searched, completion, latency_s, prompt, datetime.now(UTC))
            )

    @staticmethod
    def abandon(ticket: ShadowTicket) -> None:
        ticket.primary.cancel()

    async def open(self) -> None:
        """Open the store now when comparisons are configured, so a bad URL fails start-up."""
        if self._settings.shadow.model:
            await self._store.get()

    async def aclose(self, grace_s: float = 5.0) -> None:
        """Let pending comparisons finish for up to ``grace_s``, then cancel the rest."""
        if self._tasks:
            _done, pending = await asyncio.wait(set(self._tasks), timeout=grace_s)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
