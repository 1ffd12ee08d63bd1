"""``POST /v1/messages`` (the Anthropic Messages API) through the official anthropic SDK (strict
response validation, no retries): searched, streamed with pings, tools passed through and
translated both ways, token counting, and errors in Anthropic's shape."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message, TextBlock, ToolUseBlock

from harness.fake_chat import ARGUMENTS
from harness.fake_servers import FakeVllm
from tests.conftest import ProxyFactory

Sdk = Callable[..., anthropic.Anthropic]
QUESTION: Any = [{"role": "user", "content": "What is 2 + 2?"}]
TOOLS: Any = [
    {
        "name": "add",
        "description": "Add two numbers",
        "input_schema": {"type": "object", "properties": {"a": {"type": "number"}}},
    }
]
SYSTEM: Any = [
    {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": "Answer in LaTeX."},
]


@pytest.fixture
def sdk(stack: ExitStack) -> Sdk:
    """The official client, strict and without retries, pointed at the server root."""

    def make(url: str, api_key: str = "unused") -> anthropic.Anthropic:
        return stack.enter_context(
            anthropic.Anthropic(
                base_url=url, api_key=api_key, max_retries=0, _strict_response_validation=True
            )
        )

    return make


def body_of(error: anthropic.APIStatusError) -> dict[str, Any]:
    assert isinstance(error.body, dict)
    return error.body


def tts_of(message: Any) -> dict[str, Any]:
    extra = message.model_extra or {}
    return dict(extra["tts"])


def test_a_claude_model_name_is_searched_on_the_served_model(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    message = sdk(url).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=512,
        system=SYSTEM,
        messages=QUESTION,
        metadata={"user_id": "u-1"},
        extra_body={"tts": {"strategy": "best_of_n", "budget": 4}},
    )
    assert isinstance(message, Message) and message.id.startswith("msg_")
    assert message.model == "claude-sonnet-4-5" and message.role == "assistant"  # as asked
    block = message.content[0]
    assert isinstance(block, TextBlock) and "\\boxed{4}" in block.text
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    # Every generated token of the search is counted, as on the other endpoints.
    assert message.usage.output_tokens == sum(u["completion_tokens"] for u in vllm.reported_usage)
    assert message.usage.input_tokens == sum(u["prompt_tokens"] for u in vllm.reported_usage)
    tts = tts_of(message)
    assert tts["strategy"] == "best_of_n" and tts["budget_spent"] == 4
    assert {"cache_control", "metadata"} <= set(tts["ignored_params"])
    # The system blocks reached the policy as one system message, before the question.
    prompt = vllm.completion_calls[-1]["prompt"][0]
    assert prompt.index("You are terse.\n\nAnswer in LaTeX.") < prompt.index("What is 2 + 2?")


def test_max_tokens_and_a_stop_sequence_reach_the_search(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    message = sdk(url).messages.create(
        model="fake-policy",
        max_tokens=3,
        messages=QUESTION,
        extra_headers={"X-TTS-Strategy": "cot"},
    )
    assert message.stop_reason == "max_tokens"
    assert vllm.completion_calls[-1]["max_tokens"] <= 3


def test_a_streamed_search_sends_the_messages_events_with_pings(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    vllm.delay_s = 0.3
    url = start_proxy(keepalive_interval_s=0.05)
    client = sdk(url)
    events = list(
        client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=512,
            messages=QUESTION,
            stream=True,
            extra_headers={"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": "2"},
        )
    )
    kinds = [event.type for event in events]
    assert kinds[:2] == ["message_start", "content_block_start"]
    assert kinds[-4:] == [
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    # The SDK drops ping events; the raw stream has them, as Anthropic's does.
    with httpx.stream(
        "POST",
        url + "/v1/messages",
        json={"model": "claude-haiku-4-5", "max_tokens": 64, "messages": QUESTION, "stream": True},
        headers={"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": "2"},
        timeout=30,
    ) as raw:
        lines = [line for line in raw.iter_lines() if line.startswith("event: ")]
    assert "event: ping" in lines and lines[-1] == "event: message_stop"
    with client.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=512,
        messages=QUESTION,
        extra_headers={"X-TTS-Strategy": "best_of_n", "X-TTS-Budget": "2"},
    ) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert isinstance(block, TextBlock) and "\\boxed{4}" in block.text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_tools_pass_through_translated_both_ways(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    client = sdk(url)
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        system=SYSTEM,
        messages=QUESTION,
        tools=TOOLS,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    sent = vllm.chat_calls[-1]
    assert sent["model"] == "fake-policy" and sent["max_tokens"] == 256
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "add",
                "parameters": TOOLS[0]["input_schema"],
                "description": "Add two numbers",
            },
        }
    ]
    assert sent["tool_choice"] == "required" and sent["parallel_tool_calls"] is False
    assert message.stop_reason == "tool_use"
    call = message.content[-1]
    assert isinstance(call, ToolUseBlock) and call.name == "add" and call.input == ARGUMENTS
    assert message.usage.input_tokens == 11 and message.usage.output_tokens == 6
    assert tts_of(message)["strategy"] == "none"
    # The next turn: the assistant's tool_use and the user's tool_result, as chat.
    turns: Any = [
        *QUESTION,
        {"role": "assistant", "content": [call.model_dump(exclude_none=True)]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": "4"},
                {"type": "text", "text": "Thanks."},
            ],
        },
    ]
    answer = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=256, messages=turns, tools=TOOLS
    )
    messages = vllm.chat_calls[-1]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.id
    assert json.loads(messages[1]["tool_calls"][0]["function"]["arguments"]) == ARGUMENTS
    assert messages[2] == {"role": "tool", "tool_call_id": call.id, "content": "4"}
    assert messages[3] == {"role": "user", "content": "Thanks."}
    block = answer.content[0]
    assert isinstance(block, TextBlock) and block.text == "plain answer from the policy"
    assert answer.stop_reason == "end_turn"


def test_a_streamed_tool_call_arrives_as_input_json_deltas(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    with sdk(url).messages.stream(
        model="claude-sonnet-4-5", max_tokens=256, messages=QUESTION, tools=TOOLS
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert vllm.chat_calls[-1]["stream_options"] == {"include_usage": True}
    assert "input_json" in kinds
    call = final.content[-1]
    assert isinstance(call, ToolUseBlock) and call.input == ARGUMENTS
    assert final.stop_reason == "tool_use" and final.usage.output_tokens == 6


def test_count_tokens_uses_the_policy_template(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    counted = sdk(url).messages.count_tokens(
        model="claude-haiku-4-5", system="Be brief.", messages=QUESTION
    )
    sent = vllm.tokenizer_calls[-1]
    assert sent["model"] == "fake-policy" and sent["add_generation_prompt"] is True
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert counted.input_tokens == len(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_errors_take_anthropics_shape(start_proxy: ProxyFactory, sdk: Sdk) -> None:
    url = start_proxy(api_keys=["sk-proxy"], model_aliases={"claude-opus-*": "best_of_n-4/x"})
    client = sdk(url, api_key="sk-proxy")
    with pytest.raises(anthropic.AuthenticationError) as denied:
        sdk(url, api_key="wrong").messages.create(
            model="claude-sonnet-4-5", max_tokens=8, messages=QUESTION
        )
    assert body_of(denied.value) == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": body_of(denied.value)["error"]["message"],
        },
    }
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.create(model="claude-opus-4-1", max_tokens=8, messages=QUESTION)
    assert body_of(unknown.value)["error"]["type"] == "not_found_error"
    assert body_of(unknown.value)["error"]["message"].endswith(
        "('claude-opus-4-1' is aliased to 'best_of_n-4/x' by PROXY_MODEL_ALIASES)"
    )
    bad: Any = [{"role": "user", "content": [{"type": "document", "source": {}}]}]
    with pytest.raises(anthropic.BadRequestError) as unsupported:
        client.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=bad)
    error = body_of(unsupported.value)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("messages.0.content.0: a 'document' block")
    missing = httpx.post(
        url + "/v1/messages",
        json={"model": "claude-sonnet-4-5", "messages": QUESTION},
        headers={"x-api-key": "sk-proxy", "anthropic-version": "2023-06-01"},
    )
    assert missing.status_code == 400
    assert missing.json()["type"] == "error" and "max_tokens" in missing.json()["error"]["message"]
    doubled = sdk(url + "/v1", api_key="sk-proxy")
    with pytest.raises(anthropic.NotFoundError) as misplaced:
        doubled.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=QUESTION)
    assert "ANTHROPIC_BASE_URL" in body_of(misplaced.value)["error"]["message"]


def test_a_full_server_is_anthropics_529_overloaded(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy(max_concurrent_searches=1)
    vllm.delay_s = 1.5
    holder = threading.Thread(
        target=httpx.post,
        args=(url + "/v1/messages",),
        kwargs={
            "json": {"model": "claude-x", "max_tokens": 64, "messages": QUESTION},
            "headers": {"X-TTS-Strategy": "cot"},
            "timeout": 30,
        },
    )
    holder.start()
    assert vllm.started.wait(10)
    with pytest.raises(anthropic.APIStatusError) as full:
        sdk(url).messages.create(model="claude-x", max_tokens=8, messages=QUESTION, stream=True)
    assert full.value.status_code == 529 and full.value.response.headers["retry-after"] == "1"
    assert body_of(full.value)["error"]["type"] == "overloaded_error"
    holder.join()


def test_a_pass_through_stream_that_breaks_ends_with_an_error_event(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy()
    vllm.break_stream_after = 1
    body = {"model": "claude-x", "max_tokens": 64, "messages": QUESTION, "stream": True}
    with httpx.stream(
        "POST", url + "/v1/messages", json=body, headers={"X-TTS-Strategy": "none"}, timeout=30
    ) as raw:
        assert raw.status_code == 200
        lines = [line for line in raw.iter_lines() if line]
    assert lines[0] == "event: message_start"
    assert lines[-2] == "event: error"
    error = json.loads(lines[-1].removeprefix("data: "))
    assert error["type"] == "error" and error["error"]["type"] == "api_error"


def test_an_image_passes_through_as_an_image_url_part(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    image = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    turns: Any = [
        {
            "role": "user",
            "content": [
                {"type": "image", "source": image},
                {"type": "text", "text": "What is in it?"},
            ],
        }
    ]
    message = sdk(url).messages.create(model="claude-x", max_tokens=32, messages=turns)
    assert vllm.chat_calls[-1]["messages"][0]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "What is in it?"},
    ]
    tts = tts_of(message)
    assert tts["strategy"] == "none" and tts["reason"].startswith("non-text content")
