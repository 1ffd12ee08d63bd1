"""One request skeleton behind chat, legacy completions and Responses: the same routes, counting,
pass-through rules and error bodies on every endpoint (each test failed on the three hand-copied
handlers it replaced)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.fake_servers import FakeVllm
from proxy.api.passthrough import whole_events
from proxy.observability.request_ids import RequestIdFilter
from tests.conftest import ProxyFactory

MESSAGES: list[Any] = [{"role": "user", "content": "What is 2 + 2?"}]
ROUTE = {"litellm_routes": {"big-model": "openai/upstream-big"}, "litellm_via_policy": True}


@pytest.fixture
def strict() -> Iterator[Callable[[str], openai.OpenAI]]:
    """Strict SDK clients, closed after the test (a client left open leaks its sockets into a
    later test's unraisable-warning check)."""
    clients: list[openai.OpenAI] = []

    def client(url: str) -> openai.OpenAI:
        clients.append(
            openai.OpenAI(
                base_url=url + "/v1",
                api_key="unused",
                max_retries=0,
                _strict_response_validation=True,
            )
        )
        return clients[-1]

    yield client
    for each in clients:
        each.close()


def counted(url: str) -> dict[tuple[str, str], float]:
    """``tts_requests_total`` by (strategy, status)."""
    text = httpx.get(url + "/metrics").text
    return {
        (s.labels["strategy"], s.labels["status"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "tts_requests"
        for s in family.samples
        if s.name == "tts_requests_total"
    }


def sse_data(response: httpx.Response) -> list[str]:
    return [line[6:] for line in response.iter_lines() if line.startswith("data: ")]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES}),
        ("/v1/completions", {"prompt": "1+1?"}),
        (
            "/v1/responses",
            {
                "input": "1+1?",
                "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            },
        ),
    ],
)
def test_a_pass_through_is_counted_once_under_none(
    start_proxy: ProxyFactory, vllm: FakeVllm, path: str, body: dict[str, Any]
) -> None:
    url = start_proxy(policy={"max_retries": 0})
    body = {"model": "fake-policy", **body}
    ok = httpx.post(url + path, json=body, headers={"X-TTS-Strategy": "none"}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert counted(url) == {("none", "ok"): 1.0}
    vllm.fail_statuses = [500] * 5
    failed = httpx.post(url + path, json=body, headers={"X-TTS-Strategy": "none"}, timeout=30)
    assert failed.status_code == 502, failed.text
    assert counted(url) == {("none", "ok"): 1.0, ("none", "502"): 1.0}


def test_a_plain_legacy_prompt_passes_through_counted_under_none(
    start_proxy: ProxyFactory, vllm: FakeVllm, strict: Callable[[str], openai.OpenAI]
) -> None:
    # No strategy asked for: passed through; with the server's default strategy cot it was
    # counted under cot when it failed, and not at all when it succeeded.
    url = start_proxy(policy={"max_retries": 0}, search={"strategy": "cot"})
    strict(url).completions.create(model="fake-policy", prompt="1+1?")
    vllm.fail_statuses = [500] * 5
    with pytest.raises(openai.APIStatusError) as failed:
        strict(url).completions.create(model="fake-policy", prompt="1+1?")
    assert failed.value.status_code == 502
    assert counted(url) == {("none", "ok"): 1.0, ("none", "502"): 1.0}


def test_a_large_api_stream_breaking_midway_ends_with_an_error_event(
    start_proxy: ProxyFactory, vllm: FakeVllm, caplog: pytest.LogCaptureFixture
) -> None:
    url = start_proxy(**ROUTE, policy={"max_retries": 0})
    vllm.break_stream_after = 1
    body = {"model": "big-model", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=30) as response:
        assert response.status_code == 200
        events = sse_data(response)  # no RemoteProtocolError: the body ends cleanly
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "upstream_error" and "upstream-big" in error["message"]
    assert "broke its stream" not in error["message"]  # the provider's own text stays out
    assert json.loads(events[0])["choices"][0]["delta"]["content"] == "plain "
    assert counted(url) == {("litellm", "502"): 1.0}
    assert "Exception in ASGI application" not in caplog.text


def test_a_large_api_route_answers_legacy_completions_too(
    start_proxy: ProxyFactory, vllm: FakeVllm, strict: Callable[[str], openai.OpenAI]
) -> None:
    url = start_proxy(**ROUTE)
    done = strict(url).completions.create(model="big-model", prompt="What is 2 + 2?")
    assert done.object == "text_completion" and done.choices[0].text
    # Large APIs speak chat: the prompt went as one user message.
    assert vllm.chat_calls[-1]["model"] == "upstream-big"
    assert vllm.chat_calls[-1]["messages"] == [{"role": "user", "content": "What is 2 + 2?"}]
    assert done.model_extra is not None and done.model_extra["tts"]["strategy"] == "none"
    assert "upstream-big" in done.model_extra["tts"]["reason"]
    # Streamed, as any OpenAI legacy stream: finish_reason null until the last chunk, which the
    # SDK's strict validation refuses; read it as JSON.
    body = {"model": "big-model", "prompt": "2+2?", "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=30) as response:
        events = sse_data(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c.get("object") == "text_completion" for c in chunks), chunks
    assert "".join(c["choices"][0]["text"] or "" for c in chunks if c["choices"])
    assert counted(url) == {("litellm", "ok"): 2.0}


@pytest.mark.parametrize(
    ("path", "body", "calls"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES}, "chat_calls"),
        ("/v1/completions", {"prompt": "1+1?"}, "completion_calls"),
    ],
)
def test_seed_is_handled_alike_on_every_pass_through(
    start_proxy: ProxyFactory, vllm: FakeVllm, path: str, body: dict[str, Any], calls: str
) -> None:
    url = start_proxy()
    body = {"model": "fake-policy", "seed": 7, **body}
    answer = httpx.post(url + path, json=body, headers={"X-TTS-Strategy": "none"}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert "seed" not in getattr(vllm, calls)[-1]  # PROXY_FORWARD_SEED is off
    assert answer.json()["tts"]["ignored_params"] == ["seed"]
    forwarding = start_proxy(forward_seed=True)
    httpx.post(forwarding + path, json=body, headers={"X-TTS-Strategy": "none"}, timeout=30)
    assert getattr(vllm, calls)[-1]["seed"] == 7


def test_a_seeded_searchs_calls_with_one_prompt_each_get_their_own_seed(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    # Best-of-N with the PRM draws its samples in parts, all with one prompt: one seed for all
    # would draw the same samples in each.
    url = start_proxy(forward_seed=True)
    body = {"model": "fake-policy", "messages": MESSAGES, "seed": 7}
    headers = {"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": "8"}
    answer = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert sorted(call["seed"] for call in vllm.completion_calls) == [7, 8, 9, 10]


def test_an_upstreams_own_error_text_never_reaches_the_client(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy(**ROUTE, policy={"max_retries": 0})
    secret = "the prompt was: my bank password is hunter2"
    vllm.fail_messages = [secret] * 2
    vllm.fail_statuses = [400]
    rejected = httpx.post(
        url + "/v1/chat/completions",
        headers={"X-TTS-Strategy": "none"},
        json={"model": "fake-policy", "messages": MESSAGES},
    )
    assert rejected.status_code == 400 and "hunter2" not in rejected.text
    assert "HTTP 400" in rejected.json()["error"]["message"]
    vllm.fail_statuses = [503] * 5
    failed = httpx.post(
        url + "/v1/chat/completions", timeout=30, json={"model": "big-model", "messages": MESSAGES}
    )
    assert failed.status_code == 502 and "hunter2" not in failed.text
    assert "upstream-big" in failed.json()["error"]["message"]


def test_a_context_length_rejection_is_told_in_our_own_words(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy(policy={"max_retries": 0})
    vllm.fail_messages = [
        "This model's maximum context length is 2048 tokens. However, you requested 4100 tokens "
        "(4000 in the messages, 100 in the completion). SECRET-PROMPT"
    ]
    vllm.fail_statuses = [400]
    rejected = httpx.post(
        url + "/v1/chat/completions",
        headers={"X-TTS-Strategy": "none"},
        json={"model": "fake-policy", "messages": MESSAGES},
    )
    error = rejected.json()["error"]
    assert rejected.status_code == 400 and "SECRET" not in error["message"]
    assert "2048" in error["message"] and "4100" in error["message"]
    assert error["code"] == "context_length_exceeded"


def test_validation_errors_have_one_format_whichever_source(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    body = {"model": "fake-policy", "messages": MESSAGES}
    from_body = httpx.post(url + "/v1/chat/completions", json=body | {"tts": {"budget": -1}})
    from_header = httpx.post(
        url + "/v1/chat/completions", json=body, headers={"X-TTS-Budget": "-1"}
    )
    from_field = httpx.post(url + "/v1/chat/completions", json=body | {"n": "many"})
    for response, param in ((from_body, "tts.budget"), (from_header, "budget"), (from_field, "n")):
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["param"] == param and error["code"] is None
        assert error["message"].startswith(f"{param}: ")
    assert "X-TTS-Budget" in from_header.json()["error"]["message"]


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/json; charset=utf-8", "application/vnd.api+json"],
)
def test_a_json_body_is_served_whichever_json_content_type(
    start_proxy: ProxyFactory, vllm: FakeVllm, content_type: str
) -> None:
    # Well-formed JSON bodies take the route's direct handler; its answer is the one FastAPI's
    # own handler gave, and the body relayed upstream is the same.
    url = start_proxy(api_keys=["k"])
    body = {"model": "fake-policy", "messages": MESSAGES, "temperature": 0.5, "user": None}
    headers = {"content-type": content_type, "X-TTS-Strategy": "none", "authorization": "Bearer k"}
    response = httpx.post(url + "/v1/chat/completions", content=json.dumps(body), headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["tts"]["strategy"] == "none"
    relayed = vllm.chat_calls[-1]
    assert relayed["messages"] == MESSAGES and relayed["temperature"] == 0.5
    assert "user" not in relayed and "tts" not in relayed


@pytest.mark.parametrize(
    ("content", "content_type", "status", "param"),
    [
        (b'{"model": "fake-policy", "messages": "no"}', "application/json", 400, "messages"),
        (b'{"model": "fake-policy", "messages": [', "application/json", 400, None),
        (b'{"model": "fake-policy", "messages": []}', "text/plain", 400, None),
        (b'[{"model": "fake-policy"}]', "application/json", 400, None),
    ],
)
def test_a_body_the_direct_handler_cannot_take_gets_fastapis_own_error(
    start_proxy: ProxyFactory, content: bytes, content_type: str, status: int, param: str | None
) -> None:
    url = start_proxy(api_keys=["k"])
    headers = {"content-type": content_type, "authorization": "Bearer k"}
    response = httpx.post(url + "/v1/chat/completions", content=content, headers=headers)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param
    # A body that parses has its key checked before its fields, on either handler.
    if content_type == "application/json" and not content.endswith(b"["):
        unkeyed = httpx.post(
            url + "/v1/chat/completions", content=content, headers={"content-type": content_type}
        )
        assert unkeyed.status_code == 401, unkeyed.text


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/nowhere", 404), ("DELETE", "/v1/models", 405)]
)
def test_error_codes_are_names_never_http_statuses(
    start_proxy: ProxyFactory, method: str, path: str, status: int
) -> None:
    url = start_proxy()
    response = httpx.request(method, url + path)
    assert response.status_code == status
    code = response.json()["error"]["code"]
    assert code is None or not code.isdigit()


def test_the_request_id_is_on_its_log_lines_and_in_its_5xx_body(
    start_proxy: ProxyFactory, vllm: FakeVllm, caplog: pytest.LogCaptureFixture
) -> None:
    url = start_proxy(policy={"max_retries": 0})
    caplog.handler.addFilter(RequestIdFilter())
    vllm.fail_statuses = [500] * 5
    failed = httpx.post(
        url + "/v1/chat/completions",
        headers={"X-TTS-Strategy": "none"},
        json={"model": "fake-policy", "messages": MESSAGES},
    )
    request_id = failed.headers["X-Request-Id"]
    assert request_id.startswith("chatcmpl-")
    assert f"(request id {request_id})" in failed.json()["error"]["message"]
    ours = [r for r in caplog.records if r.name.startswith("proxy") and r.levelno >= 30]
    assert ours and {getattr(r, "request_id", None) for r in ours} == {request_id}


async def test_a_relayed_stream_goes_out_an_event_at_a_time() -> None:
    """Lines are joined into their events (one write each); a last event without its blank
    line still goes out."""

    async def lines() -> AsyncIterator[bytes]:
        for line in (b'data: {"a":1}\n', b"\n", b"event: x\n", b'data: {"b":2}\n', b"\n"):
            yield line
        yield b"data: [DONE]\n\n"  # an event already whole
        yield b'data: {"c":3}\n'  # cut short

    events = [event async for event in whole_events(lines())]
    assert events == [
        b'data: {"a":1}\n\n',
        b'event: x\ndata: {"b":2}\n\n',
        b"data: [DONE]\n\n",
        b'data: {"c":3}\n',
    ]
