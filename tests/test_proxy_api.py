"""The proxy through the official openai SDK, against fake vLLM and PRM servers on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from harness.fake_prm import FakePrm
from harness.fake_servers import FakeVllm
from tests.conftest import ProxyFactory

MESSAGES: list[Any] = [{"role": "user", "content": "What is 2 + 2?"}]


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Each test's SDK clients closed after it (an open one leaks its sockets into a later
    test's unraisable-warning check)."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def client(url: str, **kwargs: Any) -> openai.OpenAI:
    _OPEN.append(
        openai.OpenAI(
            _strict_response_validation=True,
            max_retries=0,
            base_url=url + "/v1",
            api_key=kwargs.pop("api_key", "unused"),
            **kwargs,
        )
    )
    return _OPEN[-1]


def ask(url: str, strategy: str | None = None, **kwargs: Any) -> Any:
    headers = {"X-TTS-Strategy": strategy} if strategy else {}
    headers.update(kwargs.pop("headers", {}))
    return client(url).chat.completions.create(
        model=kwargs.pop("model", "fake-policy"),
        messages=kwargs.pop("messages", MESSAGES),
        extra_headers=headers,
        **kwargs,
    )


@pytest.mark.parametrize(
    "strategy", ["cot", "majority", "best_of_n", "beam_search", "dvts", "particle_filtering"]
)
def test_every_strategy_answers_in_openai_shape(
    start_proxy: ProxyFactory, vllm: FakeVllm, strategy: str
) -> None:
    url = start_proxy()
    completion = ask(url, strategy)
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "fake-policy"
    assert completion.choices[0].message.role == "assistant"
    assert "\\boxed{4}" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    tts = completion.model_extra["tts"]
    assert tts["strategy"] == strategy
    assert completion.usage is not None
    assert completion.usage.completion_tokens == sum(
        u["completion_tokens"] for u in vllm.reported_usage
    )
    assert completion.usage.prompt_tokens == sum(u["prompt_tokens"] for u in vllm.reported_usage)
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )


def test_particle_filtering_reports_its_seed_and_replays(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy(with_prm=False)  # the confidence scorer
    by_alias = ask(url, model="particle_filtering-4/fake-policy", seed=123)
    tts = by_alias.model_extra["tts"]
    assert tts["strategy"] == "particle_filtering" and tts["scorer"] == "confidence"
    assert tts["seed"] == 123 and tts["budget"] == 4 and tts["budget_unit"] == "particles"
    assert "seed" in tts["ignored_params"]  # the policy's sampling is not seeded
    per_depth = tts["generations_per_depth"]
    assert per_depth[0] == 4 and all(n <= 4 for n in per_depth)  # live particles only
    assert len(vllm.completion_calls) == tts["policy_calls"] == len(per_depth)
    unseeded = ask(url, "particle_filtering").model_extra["tts"]
    other = ask(url, "particle_filtering").model_extra["tts"]
    assert isinstance(unseeded["seed"], int) and unseeded["seed"] != other["seed"]  # by id
    assert "seed" not in ask(url, "majority").model_extra["tts"]


def test_particle_gibbs_per_request(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy(with_prm=False)
    headers = {"X-TTS-Budget": "8", "X-TTS-Particle-Iterations": "2"}
    tts = ask(url, "particle_filtering", headers=headers, seed=5).model_extra["tts"]
    assert tts["particle_iterations"] == 2 and tts["budget"] == 8
    # two sweeps of 4: the first round of each samples its fresh particles (4, then 3)
    per_depth = tts["generations_per_depth"]
    assert per_depth[0] == 4 and 3 in per_depth and max(per_depth) <= 4
    body = {"tts": {"particle_iterations": 2}}
    again = ask(
        url, "particle_filtering", headers={"X-TTS-Budget": "8"}, seed=5, extra_body=body
    ).model_extra["tts"]
    assert again["particle_iterations"] == 2
    assert "particle_iterations" not in ask(url, "particle_filtering").model_extra["tts"]


@pytest.mark.parametrize("where", ["header", "body"])
def test_max_total_tokens_caps_what_the_search_generates(
    start_proxy: ProxyFactory, vllm: FakeVllm, where: str
) -> None:
    url = start_proxy()
    unbounded = ask(url, "beam_search", headers={"X-TTS-Budget": "8"})
    assert unbounded.usage is not None and unbounded.usage.completion_tokens > 40
    cap = (
        {"headers": {"X-TTS-Max-Total-Tokens": "40"}}
        if where == "header"
        else {"extra_body": {"tts": {"max_total_tokens": 40}}}
    )
    capped = ask(url, "beam_search", **{"headers": {"X-TTS-Budget": "8"}} | cap)
    assert capped.usage is not None and capped.usage.completion_tokens <= 40
    tts = capped.model_extra["tts"]
    assert tts["max_total_tokens"] == 40 and tts["is_token_capped"] is True
    assert capped.choices[0].message.content  # the best so far
    assert "max_total_tokens" not in unbounded.model_extra["tts"]


def test_max_generations_caps_a_step_searchs_samples_over_all_depths(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy()
    headers = {"X-TTS-Budget": "4", "X-TTS-Beam-Width": "4"}
    unbounded = ask(url, "beam_search", headers=headers).model_extra["tts"]
    assert unbounded["budget_spent"] == 12 and unbounded["max_generations"] == 4 * 40
    capped = ask(url, "beam_search", headers=headers | {"X-TTS-Max-Generations": "8"})
    tts = capped.model_extra["tts"]
    assert tts["budget_spent"] == 8 and tts["max_generations"] == 8  # two depths of four
    assert capped.choices[0].message.content  # the best so far
    response = httpx.post(
        url + "/v1/chat/completions",
        headers={"X-TTS-Strategy": "beam_search", "X-TTS-Max-Generations": "0"},
        timeout=30,
        json={"model": "fake-policy", "messages": MESSAGES},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_generations"


@pytest.mark.parametrize("strategy", ["best_of_n", "auto"])
def test_a_token_cap_spent_before_any_answer_is_a_400_not_a_deadline(
    start_proxy: ProxyFactory, strategy: str
) -> None:
    url = start_proxy()
    headers = {"X-TTS-Strategy": strategy, "X-TTS-Max-Total-Tokens": "1"}
    response = httpx.post(
        url + "/v1/chat/completions",
        headers=headers,
        timeout=30,
        json={"model": "fake-policy", "messages": MESSAGES},
    )
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == "max_total_tokens"
    assert "max_total_tokens (1)" in error["message"] and "Timeout" not in error["message"]


def test_beam_search_sends_one_policy_call_per_depth(
    start_proxy: ProxyFactory, vllm: FakeVllm, prm: FakePrm
) -> None:
    url = start_proxy()
    completion = ask(url, "beam_search", headers={"X-TTS-Budget": "8", "X-TTS-Beam-Width": "4"})
    tts = completion.model_extra["tts"]
    # The default script ends every sample after three steps: three depths.
    assert len(vllm.completion_calls) == 3 == tts["policy_calls"]
    assert [len(c["prompt"]) * c["n"] for c in vllm.completion_calls] == [8, 8, 8]
    assert vllm.completion_calls[1]["stop"] == ["\n\n"]
    assert vllm.completion_calls[1]["include_stop_str_in_output"] is True
    assert len(prm.calls) == 3 == tts["prm_calls"]
    assert tts["generations_per_depth"] == [8, 8, 8] and tts["budget_spent"] == 24
    assert tts["scorer"] == "prm:fake-prm"


def test_reasoning_tokens_are_the_hidden_ones(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    completion = ask(url, "majority", headers={"X-TTS-Budget": "4"})
    usage = completion.usage
    assert usage is not None and usage.completion_tokens_details is not None
    visible = len(httpx_tokens(completion.choices[0].message.content or ""))
    assert usage.completion_tokens_details.reasoning_tokens == usage.completion_tokens - visible


def httpx_tokens(text: str) -> list[str]:
    from harness.fake_servers import tokens_of

    return tokens_of(text)


def test_n_returns_distinct_answers_best_first(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    completion = ask(url, "majority", n=3, headers={"X-TTS-Budget": "8"})
    contents = [c.message.content or "" for c in completion.choices]
    # answers over 8 samples: 4 x5, 5 x2, 6 x1 (plus 7 never drawn at n=8? index 7 -> 7)
    assert [c.index for c in completion.choices] == [0, 1, 2]
    assert "\\boxed{4}" in contents[0] and "\\boxed{5}" in contents[1]
    assert len({c.split("boxed")[1] for c in contents}) == 3


def test_header_beats_body_beats_alias(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()
    completion = ask(
        url,
        model="best_of_n-2/fake-policy",
        headers={"X-TTS-Budget": "3"},
        extra_body={"tts": {"budget": 5, "strategy": "majority"}},
    )
    tts = completion.model_extra["tts"]
    assert tts["strategy"] == "majority"  # body beats alias
    assert tts["budget"] == 3 and vllm.completion_calls[-1]["n"] == 3  # header beats body
    completion = ask(url, model="best_of_n-2/fake-policy")
    tts = completion.model_extra["tts"]
    assert (tts["strategy"], tts["budget"]) == ("best_of_n", 2)  # alias beats default


def test_server_default_is_auto_with_its_decision_visible(start_proxy: ProxyFactory) -> None:
    url = start_proxy(with_prm=False)
    tts = ask(url, headers={"X-TTS-Budget": "16"}).model_extra["tts"]
    assert tts["requested_strategy"] == "auto" and tts["strategy"] == "auto"
    auto = tts["auto"]
    # pilots answer 4, 4, 5, 4: easy, but not settled; the rules say majority for no PRM
    assert auto["pilots"] == 4 and auto["difficulty"] == "easy" and auto["method"] == "majority"
    assert tts["profile"] == {"size": "small", "params_b": None, "family": None, "scorer": "none"}
    assert tts["budget_spent"] <= 16


def test_confidence_scorer_without_prm_is_labelled(start_proxy: ProxyFactory) -> None:
    url = start_proxy(with_prm=False)
    completion = ask(url, "best_of_n", headers={"X-TTS-Budget": "4"})
    tts = completion.model_extra["tts"]
    assert tts["scorer"] == "confidence" and "no PRM" in tts["scorer_note"]
    assert tts["prm_calls"] == 0
    # sample 0 has the highest token log-probs in the fake, and answers 4
    assert tts["candidates"][0]["score"] == pytest.approx(0.951229, abs=1e-5)


def test_trace_is_returned_when_asked(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    completion = ask(url, "beam_search", headers={"X-TTS-Trace": "true", "X-TTS-Budget": "4"})
    trace = completion.model_extra["tts"]["trace"]
    assert {node["status"] for node in trace} <= {"kept", "pruned", "finished", "duplicate"}
    assert any(node["parent_id"] is None for node in trace)


def test_response_headers_mirror_key_figures(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    response = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "fake-policy", "messages": MESSAGES},
        headers={"X-TTS-Strategy": "majority", "X-TTS-Budget": "4"},
        timeout=30,
    )
    assert response.headers["X-TTS-Strategy"] == "majority"
    assert response.headers["X-TTS-Budget-Spent"] == "4"
    assert float(response.headers["X-TTS-Overhead-Ms"]) >= 0
    assert response.headers["X-Request-Id"] == response.json()["id"]


def test_async_client_works(start_proxy: ProxyFactory) -> None:
    import asyncio

    url = start_proxy()

    async def go() -> str:
        async with openai.AsyncOpenAI(
            _strict_response_validation=True, max_retries=0, base_url=url + "/v1", api_key="x"
        ) as aclient:
            completion = await aclient.chat.completions.create(
                model="fake-policy", messages=MESSAGES, extra_headers={"X-TTS-Strategy": "dvts"}
            )
            return completion.choices[0].message.content or ""

    assert "\\boxed{4}" in asyncio.run(go())


def test_seed_is_not_forwarded_by_default(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()
    completion = ask(url, "majority", seed=7)
    assert "seed" not in vllm.completion_calls[-1]
    assert "seed" in completion.model_extra["tts"]["ignored_params"]


def test_unknown_sampling_params_are_forwarded(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()
    ask(url, "majority", extra_body={"top_k": 20, "min_p": 0.05})
    assert vllm.completion_calls[-1]["top_k"] == 20 and vllm.completion_calls[-1]["min_p"] == 0.05


def test_continues_a_partial_assistant_answer(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()
    messages = [*MESSAGES, {"role": "assistant", "content": "Step 1: think about it.\n\n"}]
    ask(url, "cot", messages=messages)
    assert vllm.completion_calls[-1]["prompt"][0].endswith("Step 1: think about it.\n\n")


def test_models_health_and_metrics(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    assert [m.id for m in client(url).models.list()] == ["fake-policy"]
    health = httpx.get(url + "/health").json()
    assert health["status"] == "ok" and len(health["upstreams"]) == 2
    ask(url, "majority")
    metrics = httpx.get(url + "/metrics").text
    assert 'tts_requests_total{status="ok",strategy="majority"} 1.0' in metrics
    assert "tts_upstream_calls_total" in metrics and 'tts_tokens_total{kind="prompt"}' in metrics


def test_tools_are_passed_through_unchanged(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    completion = ask(url, "beam_search", tools=tools)
    assert vllm.chat_calls[-1]["tools"] == tools and not vllm.completion_calls
    tts = completion.model_extra["tts"]
    assert tts["strategy"] == "none" and "tools" in tts["reason"]


def test_strategy_none_streams_through(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()
    stream = ask(url, "none", stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "plain answer" and vllm.chat_calls[-1]["stream"] is True


def test_streaming_search_exact_chunks(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    stream = ask(url, "best_of_n", stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "\\boxed{4}" in content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens > 0


def test_stream_without_include_usage_has_no_usage(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    response = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "fake-policy", "messages": MESSAGES, "stream": True},
        headers={"X-TTS-Strategy": "majority"},
        timeout=30,
    )
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    assert all("usage" not in json.loads(e) for e in events[:-1])


def test_large_api_route_goes_through_litellm(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    # The fake vLLM doubles as "a large API" that speaks OpenAI's chat completions.
    url = start_proxy(litellm_routes={"big-model": "openai/upstream-big"}, litellm_via_policy=True)
    completion = ask(url, model="big-model")
    assert completion.choices[0].message.content == "plain answer from the policy"
    assert vllm.chat_calls[-1]["model"] == "upstream-big"
    assert completion.usage is not None and completion.usage.total_tokens == 12
    assert completion.model_extra is not None
    assert completion.model_extra["tts"]["strategy"] == "none"
    assert "big-model" in [m.id for m in client(url).models.list()]


@pytest.mark.parametrize(
    ("fault", "status", "error_type"),
    [
        ("400", 400, "invalid_request_error"),
        ("503", 502, "upstream_error"),
        ("hang", 504, "upstream_error"),
    ],
)
def test_large_api_faults_are_mapped_by_litellm_error_class(
    start_proxy: ProxyFactory, vllm: FakeVllm, fault: str, status: int, error_type: str
) -> None:
    url = start_proxy(
        litellm_routes={"big-model": "openai/upstream-big"},
        litellm_via_policy=True,
        policy={"timeout_s": 0.5},
    )
    if fault == "hang":
        vllm.delay_s = 5.0
    else:
        vllm.fail_statuses = [int(fault)] * 10  # past the SDK's own retries
    response = httpx.post(
        url + "/v1/chat/completions", timeout=30, json={"model": "big-model", "messages": MESSAGES}
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["type"] == error_type and "upstream-big" in error["message"]
    assert (error["code"] == "upstream_timeout") == (fault == "hang")


def test_replicas_share_requests_and_keep_a_search_on_one(stack: Any, prm: FakePrm) -> None:
    from harness.servers import serve
    from proxy.app import create_app
    from proxy.settings import ProxySettings

    first, second = FakeVllm(), FakeVllm()
    urls = [stack.enter_context(serve(f.app())) + "/v1" for f in (first, second)]
    prm_url = stack.enter_context(serve(prm.app()))
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=urls, prm_url=prm_url))))
    for _ in range(4):
        ask(url, "beam_search", headers={"X-TTS-Budget": "8"})
    # each search made 3 calls, all on one replica; the 4 searches were spread over both
    assert len(first.completion_calls) % 3 == 0 and len(second.completion_calls) % 3 == 0
    assert first.completion_calls and second.completion_calls
