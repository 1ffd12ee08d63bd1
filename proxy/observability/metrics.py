"""Prometheus metrics of one proxy app (its own registry: no global state)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from proxy.errors import ProxyError
from strategies import SearchResult

__all__ = ["Metrics", "RequestTally", "record_search"]


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
        self.answer_groupings = Counter(
            "tts_answer_groupings",
            "Final answers grouped by equivalence, by where (inline: no sympy needed; worker: in a "
            "worker thread; timeout: past PROXY_ANSWER_DEADLINE_S, grouped as text)",
            ["outcome"],
            registry=r,
        )
        self.shadow = Counter(
            "tts_shadow_comparisons",
            "Shadow A/B comparisons by outcome (recorded, baseline_error, baseline_timeout, "
            "skipped, abandoned, store_error)",
            ["outcome"],
            registry=r,
        )
        self.in_flight = Gauge("tts_searches_in_flight", "Searches running now", registry=r)
        # -- what the searches did -------------------------------------------------------------
        self.nodes = Counter(
            "tts_search_nodes",
            "Search-tree nodes by final status (pruned: beams dropped; stopped: deepconf "
            "streams closed early; duplicate: equal beams merged)",
            ["strategy", "status"],
            registry=r,
        )
        self.depth = Histogram(
            "tts_search_depth",
            "Deepest step a search reached",
            ["strategy"],
            buckets=(1, 2, 3, 5, 8, 12, 20, 30, 40, 60, 100),
            registry=r,
        )
        self.early_stops = Counter(
            "tts_search_early_stops",
            "Searches that stopped before their budget: auto_settled, deepconf_settled, "
            "deadline (X-TTS-Timeout-Ms), token_cap (max_total_tokens)",
            ["strategy", "reason"],
            registry=r,
        )
        self.auto = Counter(
            "tts_auto_decisions",
            "auto's difficulty bins and the methods it chose",
            ["difficulty", "method"],
            registry=r,
        )
        self.trace_store = Gauge("tts_trace_store_traces", "Search traces kept", registry=r)
        self.trace_store_bytes = Gauge(
            "tts_trace_store_bytes", "Estimated size of the kept traces", registry=r
        )
        self.trace_persist = Counter(
            "tts_trace_persist",
            "Traces written to the experiment store (stored, dropped: too "
            "many writes pending, store_error)",
            ["outcome"],
            registry=r,
        )
        self.scorer_latency = Histogram(
            "tts_scorer_call_seconds",
            "Step-scorer calls (PRM, verifier, confidence)",
            ["scorer"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )


def record_search(metrics: Metrics, result: SearchResult) -> None:
    """A finished search's tree, stops, ``auto`` decision and scorer calls."""
    strategy = result.strategy
    nodes = result.trace or ()
    for node in nodes:
        metrics.nodes.labels(strategy, node.status).inc()
    metrics.depth.labels(strategy).observe(max((n.depth + 1 for n in nodes), default=0))
    decision, deepconf = result.decision, result.deepconf
    reasons = {
        "auto_settled": decision is not None and decision.stopped_early,
        "deepconf_settled": deepconf is not None and deepconf.settled,
        "deadline": result.is_partial,
        "token_cap": result.is_token_capped,
    }
    for reason, happened in reasons.items():
        if happened:
            metrics.early_stops.labels(strategy, reason).inc()
    if decision is not None:
        metrics.auto.labels(decision.difficulty, decision.method or "pilots").inc()
    scorer = result.scorer_kind
    for call in result.calls:
        if call.kind == "scorer":
            metrics.scorer_latency.labels(scorer).observe(call.ended_s - call.started_s)


class RequestTally:
    """One request's line in ``tts_requests_total``: counted once, whichever way it ends (a JSON
    answer, an error response, the error event of a stream, a client gone mid-stream)."""

    def __init__(self, metrics: Metrics, strategy: str = "-") -> None:
        self.metrics = metrics
        self.strategy = strategy  # "-" until the request is planned
        self.status: str | None = None

    def count(self, status: str) -> None:
        if self.status is None:
            self.status = status
            self.metrics.requests.labels(self.strategy, status).inc()

    def ok(self) -> None:
        self.count("ok")

    def error(self, error: ProxyError) -> None:
        if self.status is None:
            self.metrics.errors.labels(error.type).inc()
        self.count(str(error.status_code))

    def failing(
        self, fail: Callable[[ProxyError], Iterable[bytes]]
    ) -> Callable[[ProxyError], Iterable[bytes]]:
        """``fail`` (a stream's error events), counting the error first."""

        def counted(error: ProxyError) -> Iterable[bytes]:
            self.error(error)
            return fail(error)

        return counted
