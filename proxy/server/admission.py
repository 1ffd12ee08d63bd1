"""Admission: a bounded number of requests in flight, decided before a response starts."""

from __future__ import annotations

from proxy.errors import OverloadedError
from proxy.observability.metrics import Metrics

__all__ = ["Admission", "Slot"]


class Slot:
    """One admitted request; ``release`` (idempotent) gives the place back."""

    def __init__(self, admission: Admission) -> None:
        self._admission: Admission | None = admission

    def release(self) -> None:
        if self._admission is not None:
            self._admission.give_back()
            self._admission = None


class Admission:
    """A bounded number of requests in flight (searches, pass-through and routes alike). Decided
    before a response starts, so an overloaded stream is a real 429 with ``Retry-After``."""

    def __init__(self, limit: int, metrics: Metrics, retry_after_s: int = 1) -> None:
        self._limit = limit
        self._count = 0
        self._metrics = metrics
        self._retry_after_s = retry_after_s

    def admit(self) -> Slot:
        if self._count >= self._limit:
            raise OverloadedError(
                f"too many requests in flight ({self._limit}, PROXY_MAX_CONCURRENT_SEARCHES); "
                f"retry after {self._retry_after_s} s",
                retry_after_s=self._retry_after_s,
            )
        self._count += 1
        self._metrics.in_flight.inc()
        return Slot(self)

    def give_back(self) -> None:
        self._count -= 1
        self._metrics.in_flight.dec()
