"""``POST /v1/responses`` through the official openai SDK (strict response validation, no
retries), searched and passed through, plain and streamed, against the fake upstreams."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import pytest
from openai.types.responses import Response, ResponseOutputMessage

from harness.fake_servers import FakeVllm
from tests.conftest import ProxyFactory

Sdk = Callable[[str], openai.OpenAI]
TOOLS: Any = [{"type": "function", "name": "add", "parameters": {"type": "object"}}]


@pytest.fixture
def sdk(stack: ExitStack) -> Callable[[str], openai.OpenAI]:
    """The official client, strict and without retries; closed with the test's servers."""

    def make(url: str) -> openai.OpenAI:
        return stack.enter_context(
            openai.OpenAI(
                base_url=url + "/v1",
                api_key="unused",
                max_retries=0,
                _strict_response_validation=True,
            )
        )

    return make


def assert_searched(response: Response, vllm: FakeVllm, strategy: str) -> None:
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status == "completed" and response.error is None
    assert "\\boxed{4}" in response.output_text
    item = response.output[0]
    assert isinstance(item, ResponseOutputMessage) and item.status == "completed"
    tts = response.model_extra["tts"] if response.model_extra else {}
    assert tts["strategy"] == strategy
    usage = response.usage
    assert usage is not None
    assert usage.output_tokens == sum(u["completion_tokens"] for u in vllm.reported_usage)
    assert usage.input_tokens == sum(u["prompt_tokens"] for u in vllm.reported_usage)
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert 0 < usage.output_tokens_details.reasoning_tokens < usage.output_tokens


def test_create_runs_the_search_with_instructions_and_limits(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy(search={"strategy": "best_of_n"})
    response = sdk(url).responses.create(
        model="fake-policy",
        input="What is 2 + 2?",
        instructions="Answer in a box.",
        max_output_tokens=300,
        temperature=0.7,
        metadata={"run": "a"},
    )
    assert_searched(response, vllm, "best_of_n")
    assert response.instructions == "Answer in a box." and response.metadata == {"run": "a"}
    prompt = vllm.completion_calls[0]["prompt"][0]
    assert prompt.startswith("<|im_start|>system\nAnswer in a box.<|im_end|>")
    assert vllm.completion_calls[0]["temperature"] == 0.7
    # The server's default budget, in parts (each scored by the PRM while the others generate).
    assert sum(call["n"] for call in vllm.completion_calls) == 8


def test_input_items_headers_and_alias_control_the_search(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    items: Any = [
        {"role": "user", "content": "What is 1 + 1?"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "2", "annotations": []}],
        },
        {"role": "user", "content": [{"type": "input_text", "text": "And 2 + 2?"}]},
    ]
    response = sdk(url).responses.create(
        model="majority-8/fake-policy", input=items, extra_headers={"X-TTS-Budget": "6"}
    )
    assert_searched(response, vllm, "majority")
    assert response.model_extra and response.model_extra["tts"]["budget"] == 6
    assert "<|im_start|>assistant\n2<|im_end|>" in vllm.completion_calls[0]["prompt"][0]


def test_async_client_and_tts_body_object(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()

    async def main() -> Response:
        async with openai.AsyncOpenAI(
            base_url=url + "/v1", api_key="unused", max_retries=0, _strict_response_validation=True
        ) as client:
            return await client.responses.create(
                model="fake-policy",
                input="What is 2 + 2?",
                extra_body={"tts": {"strategy": "beam_search", "budget": 4, "beam_width": 2}},
            )

    assert_searched(asyncio.run(main()), vllm, "beam_search")


def test_stream_is_the_exact_event_sequence_with_keepalives(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    vllm.delay_s = 0.3
    url = start_proxy(keepalive_interval_s=0.1)
    events = list(
        sdk(url).responses.create(
            model="fake-policy",
            input="What is 2 + 2?",
            stream=True,
            extra_headers={"X-TTS-Strategy": "best_of_n"},
        )
    )
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[1] == "response.in_progress"
    assert kinds.count("response.in_progress") >= 2  # keep-alives while searching
    tail = [k for k in kinds if k != "response.in_progress"]
    assert tail == [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1]
    assert final.type == "response.completed"
    assert_searched(final.response, vllm, "best_of_n")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == final.response.output_text


def test_stream_helper_gives_the_final_response(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy(search={"strategy": "dvts"})
    with sdk(url).responses.stream(model="fake-policy", input="What is 2 + 2?") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert_searched(final, vllm, "dvts")


def test_cut_short_answer_is_incomplete(start_proxy: ProxyFactory, sdk: Sdk) -> None:
    url = start_proxy()
    response = sdk(url).responses.create(
        model="fake-policy",
        input="What is 2 + 2?",
        max_output_tokens=3,
        extra_headers={"X-TTS-Strategy": "cot"},
    )
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    item = response.output[0]
    assert isinstance(item, ResponseOutputMessage) and item.status == "incomplete"


def test_upstream_failure_mid_stream_is_response_failed(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    vllm.fail_statuses = [500] * 10
    url = start_proxy(policy={"max_retries": 0})
    events = list(
        sdk(url).responses.create(
            model="fake-policy",
            input="What is 2 + 2?",
            stream=True,
            extra_headers={"X-TTS-Strategy": "best_of_n"},
        )
    )
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-2:] == ["error", "response.failed"]
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed" and failed.response.error is not None
    assert failed.response.error.code == "server_error" and failed.response.error.message


def test_tools_are_passed_through_unchanged(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy(search={"strategy": "best_of_n"})
    response = sdk(url).responses.create(
        model="beam_search-8/fake-policy",
        input="Add 2 and 2.",
        tools=TOOLS,
        tool_choice="auto",
        extra_body={"tts": {"trace": True}, "top_k": 5},
    )
    assert response.output_text == "plain response from the policy"
    assert vllm.completion_calls == []
    sent = vllm.responses_calls[0]
    assert sent == {
        "model": "fake-policy",
        "input": "Add 2 and 2.",
        "tools": TOOLS,
        "tool_choice": "auto",
        "top_k": 5,
    }
    tts = response.model_extra["tts"] if response.model_extra else {}
    assert tts["strategy"] == "none" and "tools" in tts["reason"]


@pytest.mark.parametrize(
    "extra",
    [
        {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}},
        {
            "input": [
                {
                    "role": "user",
                    "content": [{"type": "input_image", "image_url": "data:image/png;base64,AA=="}],
                }
            ]
        },
        {"input": [{"type": "function_call_output", "call_id": "c1", "output": "4"}]},
        {"extra_headers": {"X-TTS-Strategy": "none"}},
    ],
)
def test_what_cannot_be_searched_streams_through_with_a_note(
    start_proxy: ProxyFactory, vllm: FakeVllm, extra: dict[str, Any], sdk: Sdk
) -> None:
    url = start_proxy(search={"strategy": "best_of_n"})
    kwargs: dict[str, Any] = {"model": "fake-policy", "input": "Hi"} | extra
    events = list(sdk(url).responses.create(stream=True, **kwargs))
    assert [e.type for e in events] == [
        "response.created",
        "response.output_text.delta",
        "response.completed",
    ]
    assert vllm.completion_calls == [] and vllm.responses_calls[0]["stream"] is True
    last = events[-1].model_extra or {}
    assert last["tts"]["strategy"] == "none"
    assert all("tts" not in (e.model_extra or {}) for e in events[:-1])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("store", True),
        ("previous_response_id", "resp_1"),
        ("background", True),
        ("conversation", "conv_1"),
    ],
)
def test_stateful_fields_are_a_400_naming_them(
    start_proxy: ProxyFactory, field: str, value: Any, sdk: Sdk
) -> None:
    url = start_proxy()
    with pytest.raises(openai.BadRequestError) as caught:
        sdk(url).responses.create(model="fake-policy", input="Hi", **{field: value})
    body: Any = caught.value.body
    assert body["param"] == field and body["code"] == "unsupported_parameter"
    assert "this proxy keeps no" in body["message"] or "not supported" in body["message"]


def test_store_false_is_accepted_and_echoed(start_proxy: ProxyFactory, sdk: Sdk) -> None:
    url = start_proxy(search={"strategy": "cot"})
    response = sdk(url).responses.create(model="fake-policy", input="What is 2+2?", store=False)
    assert (response.model_extra or {}).get("store") is False and response.status == "completed"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake-policy"}, "input"),
        ({"model": "fake-policy", "input": [{"role": "wizard", "content": "x"}]}, "input[0].role"),
        ({"model": "fake-policy", "input": [{"role": "user", "content": 3}]}, "input[0].content"),
        ({"model": "fake-policy", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"model": "fake-policy", "input": "x", "tts": {"budget": "many"}}, "tts.budget"),
        ({"model": "nope", "input": "x"}, "model"),
    ],
)
def test_bad_requests_are_openai_shaped(
    start_proxy: ProxyFactory, body: dict[str, Any], param: str
) -> None:
    url = start_proxy()
    response = httpx.post(url + "/v1/responses", json=body, timeout=30)
    assert response.status_code in (400, 404), response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
