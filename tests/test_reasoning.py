"""Reasoning models: a fake policy that thinks (``<think>`` … ``</think>``, traces of varied
length with a wrong boxed answer inside) before it answers. Votes count final answers only; the
chosen sample's thinking comes back in the field each API has for it — ``reasoning`` (and
``reasoning_content``) on chat, a ``reasoning`` item in the Responses API, a ``thinking`` block in
Messages — and never inside the answer's text; usage counts it as reasoning tokens."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import anthropic
import httpx
import openai
import pytest
from anthropic.types import TextBlock, ThinkingBlock

from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.settings import ProxySettings, SearchDefaults

QUESTION: Any = [{"role": "user", "content": "What is 2 + 2?"}]
SEARCH = {"X-TTS-Strategy": "majority", "X-TTS-Budget": "4"}


def thinking_of(i: int) -> str:
    return "Let me think. Maybe \\boxed{5}? " * (i + 1) + "No: 2 + 2 = 4."


def thinks(prefix: str, i: int) -> str:
    """Sample ``i`` thinks ``i + 1`` rounds (a wrong box inside), then answers 4."""
    return f"<think>{thinking_of(i)}</think>\n\nThe answer is \\boxed{{4}}."


def thinks_in_an_opened_section(prefix: str, i: int) -> str:
    """As ``thinks``, when the chat template opened ``<think>`` inside the prompt."""
    return thinks(prefix, i).removeprefix("<think>")


def start(stack: ExitStack, script: Callable[[str, int], str]) -> tuple[str, FakeVllm]:
    """The fake policy answering ``script`` and a proxy in front of it (answers up to 400
    tokens); the proxy's URL and the fake."""
    vllm = FakeVllm(script=script)
    upstream = stack.enter_context(serve(vllm.app()))
    settings = ProxySettings(
        policy_urls=[upstream + "/v1"], search=SearchDefaults(max_answer_tokens=400)
    )
    return stack.enter_context(serve(create_app(settings))), vllm


@pytest.fixture(params=[thinks, thinks_in_an_opened_section])
def proxy(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeVllm]]:
    with ExitStack() as stack:
        yield start(stack, request.param)


def openai_client(url: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1", api_key="unused", max_retries=0, _strict_response_validation=True
    )


def test_chat_votes_on_answers_and_returns_thinking_apart(
    proxy: tuple[str, FakeVllm],
) -> None:
    url, vllm = proxy
    with openai_client(url) as client:
        completion = client.chat.completions.create(
            model="fake-policy", messages=QUESTION, extra_headers=SEARCH
        )
    message = completion.choices[0].message
    assert message.content == "The answer is \\boxed{4}."
    extra = message.model_extra or {}
    assert extra["reasoning"].startswith("Let me think.") and extra["reasoning"].endswith("= 4.")
    assert extra["reasoning_content"] == extra["reasoning"]
    tts = (completion.model_extra or {})["tts"]
    assert {c["answer"] for c in tts["candidates"]} == {"4"}  # the box in the thinking is not
    usage = completion.usage
    assert usage is not None and usage.completion_tokens_details is not None
    reasoning_tokens = usage.completion_tokens_details.reasoning_tokens or 0
    assert reasoning_tokens >= len(extra["reasoning"].split())
    assert usage.completion_tokens == sum(u["completion_tokens"] for u in vllm.reported_usage)


def test_a_streamed_chat_sends_the_thinking_before_the_answer(
    proxy: tuple[str, FakeVllm],
) -> None:
    url, _ = proxy
    with openai_client(url) as client:
        chunks = list(
            client.chat.completions.create(
                model="fake-policy", messages=QUESTION, extra_headers=SEARCH, stream=True
            )
        )
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    thinking = "".join((d.model_extra or {}).get("reasoning") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert thinking.startswith("Let me think.") and "<think>" not in content
    assert content == "The answer is \\boxed{4}."
    first_thinking = next(i for i, d in enumerate(deltas) if (d.model_extra or {}).get("reasoning"))
    first_content = next(i for i, d in enumerate(deltas) if d.content)
    assert first_thinking < first_content


def test_responses_put_the_thinking_in_a_reasoning_item(proxy: tuple[str, FakeVllm]) -> None:
    url, _ = proxy
    with openai_client(url) as client:
        response = client.responses.create(
            model="fake-policy", input="What is 2 + 2?", extra_headers=SEARCH
        )
        with client.responses.stream(
            model="fake-policy", input="What is 2 + 2?", extra_headers=SEARCH
        ) as stream:
            streamed = stream.get_final_response()
    for answer in (response, streamed):
        reasoning, message = answer.output
        assert reasoning.type == "reasoning" and reasoning.content is not None
        assert reasoning.content[0].text.startswith("Let me think.")
        assert message.type == "message"
        assert answer.output_text == "The answer is \\boxed{4}."
        assert answer.usage is not None and answer.usage.output_tokens_details.reasoning_tokens > 0


def test_messages_put_the_thinking_in_a_thinking_block(proxy: tuple[str, FakeVllm]) -> None:
    url, _ = proxy
    with anthropic.Anthropic(
        base_url=url, api_key="unused", max_retries=0, _strict_response_validation=True
    ) as client:
        message = client.messages.create(
            model="claude-x", max_tokens=400, messages=QUESTION, extra_headers=SEARCH
        )
        with client.messages.stream(
            model="claude-x", max_tokens=400, messages=QUESTION, extra_headers=SEARCH
        ) as stream:
            streamed = stream.get_final_message()
    for answer in (message, streamed):
        thinking, text = answer.content
        assert isinstance(thinking, ThinkingBlock) and thinking.thinking.startswith("Let me")
        assert isinstance(text, TextBlock) and text.text == "The answer is \\boxed{4}."


def test_a_pass_through_answers_thinking_fields_become_a_thinking_block() -> None:
    """vLLM with a reasoning parser answers ``reasoning`` beside ``content``: on Messages that
    is a ``thinking`` block, passed through."""
    vllm = FakeVllm(chat_reasoning="Weighing it up.")
    with ExitStack() as stack:
        upstream = stack.enter_context(serve(vllm.app()))
        url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream + "/v1"]))))
        body = {"model": "claude-x", "max_tokens": 64, "messages": QUESTION}
        headers = {"X-TTS-Strategy": "none"}
        answer = httpx.post(url + "/v1/messages", json=body, headers=headers).json()
        with httpx.stream(
            "POST", url + "/v1/messages", json=body | {"stream": True}, headers=headers
        ) as raw:
            events = [line for line in raw.iter_lines() if line.startswith("data: ")]
    assert answer["content"][0] == {
        "type": "thinking",
        "thinking": "Weighing it up.",
        "signature": "",
    }
    assert answer["content"][1]["type"] == "text"
    assert any('"thinking_delta"' in line for line in events)


def thinks_at_length(prefix: str, i: int) -> str:
    """A policy that continues its own partial answer (``prefix``): once the thinking is
    closed, forced or not, it answers."""
    if "</think>" in prefix:
        return "The answer is \\boxed{4}."
    full = thinks("", i)
    return full[len(prefix) :] if full.startswith(prefix) else full


def test_a_thinking_cap_closes_the_thinking_and_the_model_still_answers(
    stack: ExitStack,
) -> None:
    url, vllm = start(stack, thinks_at_length)
    with openai_client(url) as client:
        completion = client.chat.completions.create(
            model="fake-policy",
            messages=QUESTION,
            extra_headers=SEARCH | {"X-TTS-Max-Thinking-Tokens": "6"},
        )
    message = completion.choices[0].message
    assert message.content == "The answer is \\boxed{4}."
    thinking = (message.model_extra or {})["reasoning"]
    # Cut at 6 tokens ("<think>Let" is one), then closed.
    assert thinking.startswith("Let me think. Maybe \\boxed{5}?") and len(thinking.split()) == 6
    thinking_call, answer_call = vllm.completion_calls
    assert thinking_call["max_tokens"] == 6 and thinking_call["stop"] == ["</think>"]
    assert answer_call["max_tokens"] == 400 - 6 and answer_call["n"] == 1
    assert answer_call["stop"] == ["</think>"]  # a second close ends the answer
    assert all(p.endswith("\n</think>\n\n") for p in answer_call["prompt"])
    tts = (completion.model_extra or {})["tts"]
    assert "max_thinking_tokens" not in tts["ignored_params"]
    assert {c["answer"] for c in tts["candidates"]} == {"4"}
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == sum(u["completion_tokens"] for u in vllm.reported_usage)


def test_a_thinking_cap_a_step_search_cannot_keep_is_said(stack: ExitStack) -> None:
    vllm = FakeVllm()
    upstream = stack.enter_context(serve(vllm.app()))
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream + "/v1"]))))
    with openai_client(url) as client:
        completion = client.chat.completions.create(
            model="fake-policy",
            messages=QUESTION,
            extra_headers={"X-TTS-Strategy": "beam_search", "X-TTS-Max-Thinking-Tokens": "6"},
        )
    assert "max_thinking_tokens" in (completion.model_extra or {})["tts"]["ignored_params"]


def test_messages_thinking_budget_is_the_cap_and_pass_through_hands_it_to_vllm(
    stack: ExitStack,
) -> None:
    url, vllm = start(stack, thinks_at_length)
    with anthropic.Anthropic(
        base_url=url, api_key="unused", max_retries=0, _strict_response_validation=True
    ) as client:
        message = client.messages.create(
            model="claude-x",
            max_tokens=400,
            messages=QUESTION,
            thinking={"type": "enabled", "budget_tokens": 6},
            extra_headers=SEARCH,
        )
    thinking, text = message.content
    assert isinstance(thinking, ThinkingBlock) and len(thinking.thinking.split()) == 6
    assert isinstance(text, TextBlock) and text.text == "The answer is \\boxed{4}."
    assert [c["max_tokens"] for c in vllm.completion_calls] == [6, 400 - 6]
    assert "thinking" not in (message.model_extra or {})["tts"]["ignored_params"]
    relayed = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "fake-policy", "messages": QUESTION},
        headers={"X-TTS-Strategy": "none", "X-TTS-Max-Thinking-Tokens": "32"},
    )
    assert relayed.status_code == 200
    assert vllm.chat_calls[-1]["thinking_token_budget"] == 32
