"""OpenTelemetry spans for searches: one per request, per search round and per upstream call.

Exported over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) is set;
the SDK reads the other standard ``OTEL_*`` variables (headers, timeout, compression) itself.
Unset, nothing is recorded, but an incoming ``traceparent`` still reaches the upstreams, so
vLLM's own spans join the caller's trace. Each app builds its own ``TracerProvider``; the global
one is never set. Attributes follow the GenAI semantic conventions where they fit
(``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.*``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from strategies import CallKind

__all__ = ["RequestSpans", "RoundSpans", "Telemetry", "record_usage"]

_PROPAGATOR = TraceContextTextMapPropagator()
# The upstream paths that are model calls, as GenAI operation names.
_OPERATIONS = {"/completions": "text_completion", "/chat/completions": "chat"}


class Telemetry:
    """The app's tracer (a no-op one when nothing exports) and W3C trace-context propagation."""

    def __init__(self, provider: TracerProvider | None) -> None:
        self._provider = provider
        self.tracer: trace.Tracer = (
            provider.get_tracer("tts-proxy") if provider is not None else trace.NoOpTracer()
        )

    @property
    def is_recording(self) -> bool:
        return self._provider is not None

    @classmethod
    def create(
        cls,
        *,
        endpoint: str | None,
        traces_endpoint: str | None,
        service_name: str,
        exporter: SpanExporter | None = None,
    ) -> Telemetry:
        """OTLP/HTTP export when an endpoint is set; ``exporter`` (e.g. the SDK's in-memory one)
        is flushed synchronously instead, for tests."""
        if exporter is None and endpoint is None and traces_endpoint is None:
            return cls(None)
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter is not None:
            provider.add_span_processor(SimpleSpanProcessor(exporter))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            url = traces_endpoint or f"{(endpoint or '').rstrip('/')}/v1/traces"
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        return cls(provider)

    def shutdown(self) -> None:
        if self._provider is not None:
            self._provider.shutdown()

    @contextlib.contextmanager
    def server_span(self, name: str, headers: Mapping[str, str]) -> Iterator[Span | None]:
        """The request's span, continuing the caller's ``traceparent``; current while inside."""
        parent = _PROPAGATOR.extract(carrier=dict(headers))
        if not self.is_recording:
            token = context.attach(parent)  # forwarded upstream as it came
            try:
                yield None
            finally:
                context.detach(token)
            return
        with self.tracer.start_as_current_span(name, context=parent, kind=SpanKind.SERVER) as span:
            yield span

    @contextlib.contextmanager
    def internal_span(self, name: str, **attributes: AttributeValue) -> Iterator[Span | None]:
        if not self.is_recording:
            yield None
            return
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def client_span(
        self, upstream: str, method: str, path: str, payload: Mapping[str, Any] | None
    ) -> Iterator[tuple[Span | None, dict[str, str]]]:
        """A span for one upstream call and the headers that carry its context there."""
        headers: dict[str, str] = {}
        if not self.is_recording:
            _PROPAGATOR.inject(headers)
            yield None, headers
            return
        operation = _OPERATIONS.get(path)
        model = payload.get("model") if payload else None
        name = f"{operation} {model}" if operation and model else f"{upstream} {method} {path}"
        attributes: dict[str, AttributeValue] = {
            "tts.upstream": upstream,
            "http.request.method": method,
            "url.path": path,
        }
        if operation:
            attributes["gen_ai.operation.name"] = operation
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        with self.tracer.start_as_current_span(
            name, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            _PROPAGATOR.inject(headers)
            yield span, headers

    @contextlib.contextmanager
    def baseline_span(self, route: str) -> Iterator[Span | None]:
        """A large-API call through litellm (a route, or a shadow comparison's baseline)."""
        if not self.is_recording:
            yield None
            return
        attributes = {
            "tts.upstream": "baseline",
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": route,
        }
        with self.tracer.start_as_current_span(
            f"chat {route}", kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            yield span

    def search_observer(self) -> RoundSpans | None:
        """One span per search round under the current span (``None``: nothing records)."""
        return RoundSpans(self.tracer) if self.is_recording else None


def record_usage(span: Span | None, data: Mapping[str, Any]) -> None:
    """A model call's token counts on its span, from the OpenAI-style ``usage`` it returned."""
    if span is None:
        return
    usage = data.get("usage")
    if isinstance(usage, Mapping):
        for key, name in (("prompt_tokens", "input"), ("completion_tokens", "output")):
            if isinstance(usage.get(key), int):
                span.set_attribute(f"gen_ai.usage.{name}_tokens", usage[key])
    model = data.get("model")
    if isinstance(model, str):
        span.set_attribute("gen_ai.response.model", model)


class RoundSpans:
    """A ``SearchObserver``: each round's calls run inside that round's span, so their client
    spans nest under it. A round's span ends where its last call ended (``close``)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer
        self._parent = context.get_current()
        self._spans: dict[int, Span] = {}
        self._ended_ns: dict[int, int] = {}

    @contextlib.contextmanager
    def call(self, kind: CallKind, round_index: int) -> Iterator[None]:
        span = self._spans.get(round_index)
        if span is None:
            span = self._tracer.start_span(
                f"tts.round {round_index}",
                context=self._parent,
                attributes={"tts.round": round_index},
            )
            self._spans[round_index] = span
        span.add_event(f"{kind} call")
        try:
            with trace.use_span(span, end_on_exit=False):
                yield
        finally:
            self._ended_ns[round_index] = time.time_ns()

    def close(self) -> None:
        for index, span in self._spans.items():
            span.end(end_time=self._ended_ns.get(index))
        self._spans.clear()


class RequestSpans:
    """ASGI middleware: a server span for each model request (chat, completions, responses),
    current for everything the request does, streamed bodies included."""

    _PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/responses"})

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self._app = app
        self._telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self._PATHS:
            await self._app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        name = f"{scope['method']} {scope['path']}"
        with self._telemetry.server_span(name, headers) as span:
            if span is None:
                await self._app(scope, receive, send)
                return
            span.set_attributes({"http.request.method": scope["method"], "url.path": scope["path"]})

            async def sent(message: Message) -> None:
                if message["type"] == "http.response.start":
                    span.set_attribute("http.response.status_code", message["status"])
                    for key, value in message.get("headers", ()):
                        if key.lower() == b"x-request-id":
                            span.set_attribute("tts.request_id", value.decode("latin-1"))
                await send(message)

            await self._app(scope, receive, sent)
