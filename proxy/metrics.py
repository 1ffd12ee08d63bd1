"""Prometheus metrics of one proxy app (its own registry: no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["Metrics"]


class Metrics:
    """Every metric the proxy exports on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tts_requests",
            "Requests by strategy and status (ok, or the HTTP status of the error, streams too)",
            ["strategy", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tts_request_latency_seconds",
            "End-to-end request latency",
            ["strategy"],
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.overhead = Histogram(
            "tts_proxy_overhead_seconds",
            "Time spent in the proxy itself (latency minus upstream time)",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.upstream_calls = Counter(
            "tts_upstream_calls", "Upstream HTTP calls", ["upstream", "path", "outcome"], registry=r
        )
        self.upstream_latency = Histogram(
            "tts_upstream_latency_seconds", "Upstream call latency", ["upstream"], registry=r
        )
        self.tokens = Counter(
            "tts_tokens",
            "Tokens by kind (prompt, completion, reasoning, prm)",
            ["kind"],
            registry=r,
        )
        self.errors = Counter("tts_errors", "Errors by type", ["type"], registry=r)
        self.shadow = Counter(
            "tts_shadow_comparisons",
            "Shadow A/B comparisons by outcome (recorded, baseline_error, baseline_timeout, "
            "skipped, abandoned, store_error)",
            ["outcome"],
            registry=r,
        )
        self.in_flight = Gauge("tts_searches_in_flight", "Searches running now", registry=r)
