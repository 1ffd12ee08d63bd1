"""Prometheus metrics of one PRM server (its own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("prm_requests", "Score requests", ["status"], registry=r)
        self.batch_items = Histogram(
            "prm_batch_items",
            "Sequences per forward pass",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.queue_seconds = Histogram(
            "prm_queue_seconds", "Time a sequence waited for its batch", registry=r
        )
        self.tokens = Counter(
            "prm_computed_tokens", "Tokens sent to the model (cached prefixes excluded)", registry=r
        )
        self.compute_seconds = Counter("prm_compute_seconds", "Model time", registry=r)
        self.cache_hits = Counter("prm_cache_hits", "Step scores served from cache", registry=r)
        self.cache_misses = Counter("prm_cache_misses", "Step scores computed", registry=r)
