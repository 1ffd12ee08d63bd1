"""The policy's replicas (``PolicyPool``): least-busy choice among the healthy ones, failover of
a call to another replica (no token has reached the client while a call is retried), the served
model's name from whichever replica answers, and active health probes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TypeVar

from proxy.errors import UpstreamError
from proxy.upstream.client import Upstream
from proxy.wire.json_types import JSONObject

__all__ = ["PolicyPool"]

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


class PolicyPool:
    """The policy replicas. A request sticks to one replica (vLLM's prefix cache hits there)
    until that replica fails; then its calls move to another healthy one."""

    def __init__(self, upstreams: Sequence[Upstream], model: str | None) -> None:
        self.upstreams = list(upstreams)
        self._configured_model = model
        self._discovered: str | None = None
        self._turn = itertools.count()

    def _order(self) -> list[Upstream]:
        start = next(self._turn) % len(self.upstreams)
        return self.upstreams[start:] + self.upstreams[:start]

    def pick(self) -> Upstream:
        """The least busy healthy replica (round robin among equals); if every replica is
        ejected, the least busy of all (the call then says what is wrong)."""
        order = self._order()
        healthy = [u for u in order if u.health.is_available] or order
        return min(healthy, key=lambda upstream: upstream.in_flight)

    def alternative(self, tried: Sequence[Upstream]) -> Upstream | None:
        """A healthy replica not tried yet, least busy first; None when there is none."""
        rest = [u for u in self._order() if u.health.is_available and u not in tried]
        return min(rest, key=lambda upstream: upstream.in_flight) if rest else None

    async def with_failover(
        self, first: Upstream, call: Callable[[Upstream], Awaitable[_T]]
    ) -> tuple[_T, Upstream]:
        """``call(first)``; if that replica fails (transport error, 5xx after its retries, or
        its call timeout ``PROXY_POLICY__TIMEOUT_S``), the same call on each other healthy
        replica in turn, within the request's own deadline (which cancels it all). Returns the
        result and the replica that served."""
        tried = [first]
        upstream = first
        while True:
            try:
                return await call(upstream), upstream
            except UpstreamError as exc:  # a timeout too
                upstream = self._failed_over(tried, exc)

    def _failed_over(self, tried: list[Upstream], error: UpstreamError) -> Upstream:
        """The replica to try after ``tried[-1]`` failed with ``error`` (re-raised when none
        is left); appended to ``tried``."""
        other = self.alternative(tried)
        if other is None:
            raise error
        logger.warning(
            "policy replica %d failed (%s); retrying on replica %d",
            self.upstreams.index(tried[-1]),
            error.code,
            self.upstreams.index(other),
        )
        tried.append(other)
        return other

    async def any_available(self) -> bool:
        """Whether a replica is available, probing them all first when none is (an outage: a
        stream can then be refused with a status instead of a 200 and an error event)."""
        if any(u.health.is_available for u in self.upstreams):
            return True
        await self.probe_all()
        return any(u.health.is_available for u in self.upstreams)

    async def probe_all(self) -> list[str]:
        """Probe every replica at once; what each answered (``Upstream.probe``)."""
        return list(await asyncio.gather(*(u.probe() for u in self.upstreams)))

    async def post_json(
        self, first: Upstream, path: str, payload: JSONObject
    ) -> tuple[JSONObject, Upstream]:
        """``first.post_json(path, payload)`` with failover (see ``with_failover``)."""
        tried = [first]
        upstream = first
        while True:
            try:
                return await upstream.post_json(path, payload), upstream
            except UpstreamError as exc:
                upstream = self._failed_over(tried, exc)

    async def model(self) -> str:
        """The served policy model's name (configured, else the first one a replica lists)."""
        if self._configured_model:
            return self._configured_model
        if self._discovered is None:
            data, _ = await self.with_failover(self.pick(), lambda u: u.get_json("/models"))
            models = data.get("data") or []
            if not models or not isinstance(models[0], dict) or "id" not in models[0]:
                raise UpstreamError("the policy server lists no models")
            self._discovered = str(models[0]["id"])
        return self._discovered

    async def probe_forever(self, interval_s: float) -> None:
        """Active probes: an ejected replica that answers again is back before its ejection
        ends, and a silent one is ejected before a request finds out."""
        while True:
            await self.probe_all()
            await asyncio.sleep(interval_s)

    @contextlib.asynccontextmanager
    async def probing(self, interval_s: float) -> AsyncIterator[None]:
        task = asyncio.create_task(self.probe_forever(interval_s))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
