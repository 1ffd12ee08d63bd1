"""Drop-in breadth and fidelity: legacy completions, model cards, unknown routes, and what real
clients found (stop strings, greedy requests, stream headers, roles, aliases, pass-through
notes, cached tokens, the typed ``tts`` surface). Official SDK, strict, no retries."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import pytest

from harness.fake_servers import FakeVllm, default_script
from tests.conftest import ProxyFactory

Sdk = Callable[[str], openai.OpenAI]
MESSAGES: Any = [{"role": "user", "content": "What is 2 + 2?"}]
PROMPT = "Question: what is 2 + 2?\nAnswer:"


@pytest.fixture
def sdk(stack: ExitStack) -> Sdk:
    def make(url: str) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=url + "/v1", api_key="unused", max_retries=0, _strict_response_validation=True
        )
        return stack.enter_context(client)

    return make


def tts_of(obj: Any) -> dict[str, Any]:
    extra: dict[str, Any] = obj.model_extra or {}
    return dict(extra["tts"])


# -- legacy completions ---------------------------------------------------------------------


def test_completions_pass_through_untouched_whatever_the_default(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy(search={"strategy": "best_of_n"})
    done = sdk(url).completions.create(
        model="fake-policy",
        prompt=PROMPT,
        max_tokens=5,
        logprobs=2,
        echo=True,
        temperature=0.0,
        extra_body={"top_k": 3},
    )
    sent = vllm.completion_calls[0]
    assert sent == {
        "model": "fake-policy",
        "prompt": PROMPT,
        "max_tokens": 5,
        "logprobs": 2,
        "echo": True,
        "temperature": 0.0,
        "top_k": 3,
    }
    assert done.object == "text_completion" and done.choices[0].text
    assert tts_of(done)["strategy"] == "none" and "best_of" in tts_of(done)["reason"]


def test_best_of_is_served_as_best_of_n(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    done = sdk(url).completions.create(model="fake-policy", prompt=PROMPT, best_of=5, logprobs=1)
    assert "\\boxed{4}" in done.choices[0].text and done.choices[0].finish_reason == "stop"
    tts = tts_of(done)
    assert tts["strategy"] == "best_of_n" and tts["budget"] == 5 and tts["budget_unit"] == "samples"
    assert tts["ignored_params"] == ["logprobs"]
    # Five samples; with the PRM they come in parts, each scored while the others generate.
    assert sum(c["n"] for c in vllm.completion_calls) == 5
    assert all(c["prompt"] == [PROMPT] for c in vllm.completion_calls)  # no chat template
    assert done.usage is not None
    assert done.usage.completion_tokens == sum(u["completion_tokens"] for u in vllm.reported_usage)


def test_completions_search_streams_with_usage(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy()
    chunks = list(
        sdk(url).completions.create(
            model="majority-4/fake-policy",
            prompt=PROMPT,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert [c.object for c in chunks] == ["text_completion"] * 2
    assert (
        "\\boxed{4}" in chunks[0].choices[0].text and chunks[0].choices[0].finish_reason == "stop"
    )
    assert tts_of(chunks[0])["strategy"] == "majority" and chunks[0].usage is None
    assert chunks[1].choices == [] and chunks[1].usage is not None
    assert chunks[1].usage.completion_tokens == sum(
        u["completion_tokens"] for u in vllm.reported_usage
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": [1, 2, 3], "best_of": 2}, "prompt"),
        ({"prompt": ["a", "b"], "tts": {"strategy": "majority"}}, "prompt"),
        ({"prompt": PROMPT, "best_of": 2, "n": 3}, "best_of"),
        ({"prompt": PROMPT, "best_of": 0}, "best_of"),
        ({}, "prompt"),
    ],
)
def test_completions_errors_name_the_parameter(
    start_proxy: ProxyFactory, body: dict[str, Any], param: str
) -> None:
    url = start_proxy()
    response = httpx.post(url + "/v1/completions", json={"model": "fake-policy"} | body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


# -- models and routes ----------------------------------------------------------------------


def test_model_cards_for_served_model_aliases_and_routes(
    start_proxy: ProxyFactory, sdk: Sdk
) -> None:
    url = start_proxy(litellm_routes={"gpt-big": "openai/gpt-4o"})
    client = sdk(url)
    assert client.models.retrieve("fake-policy").owned_by == "tts-proxy"
    assert client.models.retrieve("beam_search-16/fake-policy").id == "beam_search-16/fake-policy"
    assert client.models.retrieve("gpt-big").owned_by == "litellm"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("Qwen/Qwen2.5-7B-Instruct")
    body: Any = caught.value.body
    assert body["code"] == "model_not_found" and "strategy" not in body["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/embeddings", 404, "not_found"),
        ("POST", "/v2/chat", 404, "not_found"),
        ("DELETE", "/v1/responses", 405, "method_not_allowed"),
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
    ],
)
def test_unknown_routes_are_openai_shaped_and_list_the_endpoints(
    start_proxy: ProxyFactory, method: str, path: str, status: int, code: str
) -> None:
    url = start_proxy()
    response = httpx.request(method, url + path)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"
    for endpoint in ("/v1/chat/completions", "/v1/responses", "/v1/completions"):
        assert endpoint in error["message"]
    if status == 405:  # HTTP requires the methods that would have been allowed
        assert response.headers["allow"] == "POST"


def test_alias_with_an_unknown_strategy_says_so(start_proxy: ProxyFactory, sdk: Sdk) -> None:
    url = start_proxy()
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(url).chat.completions.create(model="foo-8/fake-policy", messages=MESSAGES)
    body: Any = caught.value.body
    assert body["param"] == "model" and "'foo' is not a known strategy" in body["message"]
    assert "beam_search" in body["message"]


def test_openapi_documents_the_typed_tts_surface(start_proxy: ProxyFactory) -> None:
    spec = httpx.get(start_proxy() + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    assert {"TtsOptions", "TtsReport", "ChatCompletionRequest", "ResponsesRequest"} <= set(schemas)
    assert "budget_unit" in schemas["TtsReport"]["properties"]
    assert set(schemas["TtsOptions"]["properties"]["strategy"]["anyOf"][0]["enum"]) >= {"auto"}
    assert {"/v1/chat/completions", "/v1/responses", "/v1/completions"} <= set(spec["paths"])
    for path in ("/v1/chat/completions", "/v1/responses", "/v1/completions"):
        headers = {p["name"]: p for p in spec["paths"][path]["post"]["parameters"]}
        assert {"X-TTS-Strategy", "X-TTS-Budget", "X-TTS-Beam-Width"} <= set(headers)
        assert "beam_search" in headers["X-TTS-Strategy"]["schema"]["enum"]


# -- fidelity -------------------------------------------------------------------------------


def test_stop_cuts_every_searched_answer(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    # Every sample its own, across calls too, as a real server's are (best-of-N with the PRM
    # draws its samples in parts).
    drawn = itertools.count()
    vllm.script = lambda prefix, _: default_script(prefix, next(drawn))
    url = start_proxy()
    done = sdk(url).chat.completions.create(
        model="fake-policy",
        messages=MESSAGES,
        stop=["Step 2"],
        n=2,
        extra_headers={"X-TTS-Strategy": "best_of_n"},
    )
    assert len(done.choices) == 2
    for choice in done.choices:
        assert re.fullmatch(r"Step 1: think about it <0\.\d>\.\n\n", choice.message.content or "")
        assert choice.finish_reason == "stop"
    assert "stop" not in tts_of(done)["ignored_params"]
    assert done.usage is not None and done.usage.completion_tokens_details is not None
    returned = done.usage.completion_tokens - (
        done.usage.completion_tokens_details.reasoning_tokens or 0
    )
    assert 0 < returned < done.usage.completion_tokens


def test_greedy_request_without_a_strategy_is_one_greedy_answer(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy(search={"strategy": "auto"})
    done = sdk(url).chat.completions.create(model="fake-policy", messages=MESSAGES, temperature=0)
    assert tts_of(done)["strategy"] == "cot" and "greedy" in tts_of(done)["reason"]
    assert {c["n"] for c in vllm.completion_calls} == {1}
    assert {c["temperature"] for c in vllm.completion_calls} == {0}


def test_greedy_request_with_a_strategy_searches_at_the_search_temperature(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    url = start_proxy(temperature=0.8)
    done = sdk(url).chat.completions.create(
        model="fake-policy",
        messages=MESSAGES,
        temperature=0,
        extra_headers={"X-TTS-Strategy": "majority"},
    )
    tts = tts_of(done)
    assert tts["strategy"] == "majority" and "temperature" in tts["ignored_params"]
    assert "search temperature" in tts["temperature_note"]
    assert {c["temperature"] for c in vllm.completion_calls} == {0.8}


def test_streamed_auto_names_the_requested_strategy_then_the_one_that_ran(
    start_proxy: ProxyFactory,
) -> None:
    url = start_proxy(search={"strategy": "auto"})
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body) as response:
        assert response.headers["x-tts-requested-strategy"] == "auto"
        assert "x-tts-strategy" not in response.headers
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
    assert '"strategy":"auto"' in lines[-1].replace(" ", "") and '"auto":{' in lines[-1].replace(
        " ", ""
    )
    plain = httpx.post(url + "/v1/chat/completions", json=body | {"stream": False}, timeout=30)
    assert plain.headers["x-tts-strategy"] == "auto"


def test_unknown_message_role_is_a_400(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    body = {"model": "fake-policy", "messages": [{"role": "wizard", "content": "hi"}]}
    response = httpx.post(url + "/v1/chat/completions", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.role"


def test_pass_through_stream_carries_the_tts_note_on_its_last_chunk(
    start_proxy: ProxyFactory, sdk: Sdk
) -> None:
    url = start_proxy()
    chunks = list(
        sdk(url).chat.completions.create(
            model="fake-policy",
            messages=MESSAGES,
            stream=True,
            seed=3,
            extra_headers={"X-TTS-Strategy": "none"},
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "plain answer"
    note = {
        "strategy": "none",
        "requested_strategy": "none",
        "reason": "pass-through requested",
        "ignored_params": ["seed"],
    }
    assert tts_of(chunks[-1]) == note
    assert all("tts" not in (c.model_extra or {}) for c in chunks[:-1])


def test_cached_prompt_tokens_reach_the_usage(
    start_proxy: ProxyFactory, vllm: FakeVllm, sdk: Sdk
) -> None:
    vllm.cached_tokens = 5
    url = start_proxy()
    done = sdk(url).chat.completions.create(
        model="fake-policy", messages=MESSAGES, extra_headers={"X-TTS-Strategy": "beam_search"}
    )
    assert done.usage is not None and done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == 5 * len(vllm.completion_calls) > 5


def test_budget_fields_say_what_the_budget_counts(start_proxy: ProxyFactory, sdk: Sdk) -> None:
    url = start_proxy()
    done = sdk(url).chat.completions.create(
        model="beam_search-8/fake-policy",
        messages=MESSAGES,
        extra_headers={"X-TTS-Beam-Width": "2", "X-TTS-Max-Steps": "5"},
    )
    tts = tts_of(done)
    assert tts["budget"] == 8 and tts["budget_unit"] == "samples_per_depth"
    assert tts["max_generations"] == 40
    assert tts["budget_spent"] == sum(tts["generations_per_depth"]) > 8


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses", "/v1/completions"])
@pytest.mark.parametrize("content", [b"", b"{not json", b"[1, 2]"])
def test_a_body_that_is_not_a_json_object_says_so(
    start_proxy: ProxyFactory, path: str, content: bytes
) -> None:
    url = start_proxy()
    response = httpx.post(url + path, content=content, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "JSON object" in error["message"]
