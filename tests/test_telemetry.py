"""OpenTelemetry: the spans of a search (checked with the SDK's in-memory exporter), W3C trace
context into and out of the proxy, and a real OTLP/HTTP export to a loopback collector."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import openai
from fastapi import FastAPI, Request, Response
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from harness.fake_prm import FakePrm
from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.settings import ProxySettings
from tests.eventually import eventually

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
BEAM = {"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "8", "X-TTS-Beam-Width": "4"}


def start(
    stack: ExitStack,
    vllm: FakeVllm,
    prm: FakePrm,
    exporter: InMemorySpanExporter | None = None,
    **overrides: Any,
) -> str:
    values: dict[str, Any] = {
        "policy_urls": [stack.enter_context(serve(vllm.app())) + "/v1"],
        "prm_url": stack.enter_context(serve(prm.app())),
    }
    app = create_app(ProxySettings(**values | overrides), span_exporter=exporter)
    return stack.enter_context(serve(app))


def ask(url: str, headers: dict[str, str]) -> Any:
    with openai.OpenAI(
        _strict_response_validation=True, base_url=url + "/v1", api_key="x", max_retries=0
    ) as client:
        return client.chat.completions.create(
            model="fake-policy",
            messages=[{"role": "user", "content": "What is 2 + 2?"}],
            extra_headers=headers,
        )


def finished(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The spans once the server span has ended (it ends after the last byte is sent)."""

    def spans() -> list[ReadableSpan]:
        done = list(exporter.get_finished_spans())
        return done if any(s.name == name for s in done) else []

    return eventually(spans, f"span {name!r} exported", 5)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def test_a_search_is_one_trace_request_rounds_and_upstream_calls(
    stack: ExitStack, vllm: FakeVllm, prm: FakePrm
) -> None:
    exporter = InMemorySpanExporter()
    url = start(stack, vllm, prm, exporter)
    completion = ask(url, BEAM | {"traceparent": TRACEPARENT})
    tts = completion.model_extra["tts"]
    spans = finished(exporter, "POST /v1/chat/completions")
    assert {f"{s.context.trace_id:032x}" for s in spans} == {TRACE_ID}  # the caller's trace
    by_name = {s.name: s for s in spans}

    server = by_name["POST /v1/chat/completions"]
    assert server.kind is SpanKind.SERVER
    assert parent_of(server) == int(CALLER_SPAN, 16)
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["tts.request_id"] == completion.id

    chat = by_name["chat fake-policy"]
    assert parent_of(chat) == server.context.span_id
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.request.model"] == "fake-policy"
    assert chat.attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
    assert chat.attributes["tts.strategy"] == "beam_search"

    rounds = [s for s in spans if s.name.startswith("tts.round ")]
    assert len(rounds) == tts["policy_calls"]  # a beam search's round is one depth
    assert {parent_of(s) for s in rounds} == {chat.context.span_id}
    round_ids = {s.context.span_id for s in rounds}

    generations = [s for s in spans if s.name == "text_completion fake-policy"]
    assert len(generations) == len(vllm.completion_calls)
    assert all(s.kind is SpanKind.CLIENT and parent_of(s) in round_ids for s in generations)
    output = [s.attributes["gen_ai.usage.output_tokens"] for s in generations if s.attributes]
    assert sum(int(str(tokens)) for tokens in output) == completion.usage.completion_tokens
    scoring = [s for s in spans if s.attributes and s.attributes.get("tts.upstream") == "prm"]
    assert len(scoring) == tts["prm_calls"]
    assert all(parent_of(s) in round_ids for s in scoring)

    # vLLM got each call's own span as its parent, in the caller's trace.
    sent = {f"00-{TRACE_ID}-{s.context.span_id:016x}-01" for s in generations}
    assert set(vllm.traceparents) == sent


def test_without_an_exporter_the_callers_context_still_reaches_vllm(
    stack: ExitStack, vllm: FakeVllm, prm: FakePrm
) -> None:
    url = start(stack, vllm, prm)
    ask(url, BEAM | {"traceparent": TRACEPARENT})
    assert vllm.traceparents and set(vllm.traceparents) == {TRACEPARENT}
    vllm.traceparents.clear()
    ask(url, BEAM)
    assert set(vllm.traceparents) == {None}


def test_spans_are_exported_over_otlp_http(stack: ExitStack, vllm: FakeVllm, prm: FakePrm) -> None:
    received: list[ExportTraceServiceRequest] = []
    collector = FastAPI()

    @collector.post("/v1/traces")
    async def traces(request: Request) -> Response:
        assert request.headers["content-type"] == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.body())
        received.append(message)
        return Response(
            ExportTraceServiceRequest().SerializeToString(), media_type="application/x-protobuf"
        )

    collector_url = stack.enter_context(serve(collector))
    with ExitStack() as proxy:  # the proxy's shutdown flushes its batch of spans
        url = start(
            proxy,
            vllm,
            prm,
            otel_exporter_otlp_endpoint=collector_url,
            otel_service_name="tts-test",
        )
        ask(url, {"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": "4"})
    spans = [
        (resource.resource, span)
        for message in received
        for resource in message.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for _, span in spans}
    assert {"POST /v1/chat/completions", "chat fake-policy", "tts.round 0"} <= names
    services = {
        a.value.string_value for r, _ in spans for a in r.attributes if a.key == "service.name"
    }
    assert services == {"tts-test"}


def test_a_large_api_route_is_a_client_span_with_its_tokens(
    stack: ExitStack, vllm: FakeVllm, prm: FakePrm
) -> None:
    exporter = InMemorySpanExporter()
    vllm_url = stack.enter_context(serve(vllm.app()))
    values: dict[str, Any] = {
        "policy_urls": [vllm_url + "/v1"],
        "litellm_routes": {"big-model": "openai/upstream-big"},
        "litellm_api_base": vllm_url + "/v1",
        "litellm_api_key": "sk-test",
    }
    settings = ProxySettings(**values)
    url = stack.enter_context(serve(create_app(settings, span_exporter=exporter)))
    with openai.OpenAI(
        _strict_response_validation=True, base_url=url + "/v1", api_key="x", max_retries=0
    ) as client:
        completion = client.chat.completions.create(
            model="big-model",
            messages=[{"role": "user", "content": "What is 2 + 2?"}],
            extra_headers={"traceparent": TRACEPARENT},
        )
    spans = finished(exporter, "POST /v1/chat/completions")
    baseline = next(s for s in spans if s.name == "chat openai/upstream-big")
    server = next(s for s in spans if s.name == "POST /v1/chat/completions")
    assert baseline.kind is SpanKind.CLIENT and parent_of(baseline) == server.context.span_id
    assert baseline.attributes is not None and completion.usage is not None
    assert baseline.attributes["tts.upstream"] == "baseline"
    assert baseline.attributes["gen_ai.usage.output_tokens"] == completion.usage.completion_tokens
