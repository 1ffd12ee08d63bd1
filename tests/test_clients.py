"""Popular clients, unmodified, against the proxy over the test fakes: LangChain's ChatOpenAI
(chat completions, and the Responses API with ``use_responses_api=True``) and the OpenAI Agents
SDK's default Responses model. A search runs behind each; each must read the answer."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, set_tracing_disabled
from langchain_openai import ChatOpenAI

from harness.fake_servers import FakeVllm
from tests.conftest import ProxyFactory

QUESTION = "What is 2 + 2?"


def text_of(content: Any) -> str:
    """LangChain message content: a string, or content blocks (Responses API)."""
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


@pytest.mark.parametrize("use_responses_api", [False, True])
def test_langchain_invoke_and_stream(
    start_proxy: ProxyFactory, vllm: FakeVllm, use_responses_api: bool
) -> None:
    url = start_proxy(search={"strategy": "best_of_n"})
    llm = ChatOpenAI(
        model="fake-policy",
        base_url=url + "/v1",
        api_key="unused",  # type: ignore[arg-type]
        max_retries=0,
        use_responses_api=use_responses_api,
    )
    message = llm.invoke(QUESTION)
    assert "\\boxed{4}" in text_of(message.content)
    usage = message.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] == sum(u["completion_tokens"] for u in vllm.reported_usage)
    streamed = "".join(text_of(chunk.content) for chunk in llm.stream(QUESTION))
    assert "\\boxed{4}" in streamed
    assert vllm.chat_calls == [] and vllm.responses_calls == []  # searched, not passed through


def test_agents_sdk_default_responses_model(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    set_tracing_disabled(True)  # the SDK's tracing would export to api.openai.com
    url = start_proxy(search={"strategy": "majority"})

    async def main() -> Any:
        async with openai.AsyncOpenAI(
            _strict_response_validation=True, base_url=url + "/v1", api_key="unused", max_retries=0
        ) as c:
            agent = Agent(
                name="solver",
                instructions="Solve the problem.",
                model=OpenAIResponsesModel(model="fake-policy", openai_client=c),
            )
            return await Runner.run(agent, QUESTION)

    result = asyncio.run(main())
    assert "\\boxed{4}" in str(result.final_output)
    assert len(vllm.completion_calls) >= 1 and vllm.responses_calls == []
    prompt = vllm.completion_calls[0]["prompt"][0]
    assert "Solve the problem." in prompt and QUESTION in prompt


def test_pydantic_ai_default_openai_model(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    from pydantic_ai import Agent as PydanticAgent
    from pydantic_ai.models.openai import OpenAIResponsesModel as PydanticResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    url = start_proxy(search={"strategy": "best_of_n"})

    async def main() -> Any:
        async with openai.AsyncOpenAI(
            _strict_response_validation=True, base_url=url + "/v1", api_key="unused", max_retries=0
        ) as c:
            # What ``Agent("openai:<model>")`` builds, pointed at the proxy.
            model = PydanticResponsesModel("fake-policy", provider=OpenAIProvider(openai_client=c))
            return await PydanticAgent(model).run(QUESTION)

    result = asyncio.run(main())
    assert "\\boxed{4}" in result.output
    assert result.usage.output_tokens == sum(u["completion_tokens"] for u in vllm.reported_usage)
    assert vllm.responses_calls == []  # searched, not passed through
