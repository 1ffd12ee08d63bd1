"""The verifier scorer: a chat model's P(yes) to "is this step correct?", one batched call per
depth, its tokens in usage; the policy by default or another server by URL."""

from __future__ import annotations

import math
from contextlib import ExitStack
from typing import Any

import httpx
import openai
import pytest

from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.settings import ProxySettings, UpstreamLimits
from proxy.upstream.verifier import p_yes

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def ask(url: str, strategy: str, **headers: str) -> Any:
    with openai.OpenAI(
        _strict_response_validation=True, base_url=url + "/v1", api_key="x", max_retries=0
    ) as client:
        return client.chat.completions.create(
            model="fake-policy",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"X-TTS-Strategy": strategy, "X-TTS-Scorer": "verifier"} | headers,
        )


def verifier_calls(vllm: FakeVllm) -> list[dict[str, Any]]:
    return [c for c in vllm.completion_calls if c.get("max_tokens") == 1]


def test_p_yes_reads_the_top_logprobs() -> None:
    assert p_yes({"Yes": math.log(0.8), " no": math.log(0.1)}) == pytest.approx(0.8 / 0.9)
    assert p_yes({" YES": math.log(0.3), "yes": math.log(0.3), "No": math.log(0.4)}) == (
        pytest.approx(0.6)
    )
    assert p_yes({"Maybe": -0.1}) == 0.5 and p_yes(None) == 0.5


def test_best_of_n_scores_each_step_by_p_yes(stack: ExitStack, vllm: FakeVllm) -> None:
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream]))))
    completion = ask(url, "best_of_n", **{"X-TTS-Budget": "4"})
    tts = completion.model_extra["tts"]
    assert tts["scorer"] == "verifier:fake-policy" and tts["verifier_calls"] == 1
    assert tts["prm_calls"] == 0 and tts["verifier_tokens"] > 0
    # the fake's steps carry <0.9>, <0.8>, ... tags; the verifier's P(yes) is that tag
    assert sorted(c["score"] for c in tts["candidates"]) == pytest.approx([0.6, 0.7, 0.8, 0.9])
    (call,) = verifier_calls(vllm)
    assert len(call["prompt"]) == 4 * 3  # every step of 4 samples (3 steps each), one call
    assert call["temperature"] == 0.0 and call["logprobs"] == 20
    assert call["add_special_tokens"] is False
    assert all("Is the new step correct?" in p for p in call["prompt"])
    # usage is what vLLM reported for every call, the verifier's included
    assert completion.usage.completion_tokens == sum(
        u["completion_tokens"] for u in vllm.reported_usage
    )
    assert completion.usage.prompt_tokens == sum(u["prompt_tokens"] for u in vllm.reported_usage)


def test_beam_search_sends_only_new_steps_one_call_per_depth(
    stack: ExitStack, vllm: FakeVllm
) -> None:
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream]))))
    tts = ask(url, "beam_search", **{"X-TTS-Budget": "4", "X-TTS-Beam-Width": "2"}).model_extra[
        "tts"
    ]
    calls = verifier_calls(vllm)
    assert len(calls) == tts["verifier_calls"] == tts["policy_calls"]
    assert [len(c["prompt"]) for c in calls] == tts["generations_per_depth"]  # new steps only


def test_a_verifier_served_elsewhere(stack: ExitStack, vllm: FakeVllm) -> None:
    judge = FakeVllm(model="judge")
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    judge_url = stack.enter_context(serve(judge.app()))
    settings = ProxySettings(policy_urls=[upstream], verifier_url=judge_url, verifier_model="judge")
    url = stack.enter_context(serve(create_app(settings)))
    tts = ask(url, "best_of_n", **{"X-TTS-Budget": "2"}).model_extra["tts"]
    assert tts["scorer"] == "verifier:judge"
    # On a server of its own, each part of the samples is judged as soon as it is back.
    assert verifier_calls(vllm) == [] and len(verifier_calls(judge)) == 2
    assert sum(c["n"] for c in vllm.completion_calls) == 2
    assert verifier_calls(judge)[0]["model"] == "judge"
    with pytest.raises(ValueError, match="verifier_model"):
        ProxySettings(policy_urls=[upstream], verifier_url=judge_url)


def test_a_malformed_verifier_answer_is_a_502(stack: ExitStack, vllm: FakeVllm) -> None:
    from fastapi import FastAPI

    judge = FastAPI()

    @judge.post("/v1/completions")
    async def complete() -> dict[str, Any]:
        return {"choices": [{"index": 0, "text": "Yes"}], "usage": {}}  # one for many prompts

    @judge.post("/tokenize")
    async def tokenize(body: dict[str, Any]) -> dict[str, Any]:
        return {"tokens": [1, 2]}

    @judge.post("/detokenize")
    async def detokenize(body: dict[str, Any]) -> dict[str, Any]:
        return {"prompt": "<s>user: <<tts-verifier-slot>> assistant:"}

    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    judge_url = stack.enter_context(serve(judge))
    settings = ProxySettings(
        policy_urls=[upstream],
        verifier_url=judge_url,
        verifier_model="judge",
        verifier=UpstreamLimits(max_retries=0),
    )
    url = stack.enter_context(serve(create_app(settings)))
    headers = {"X-TTS-Strategy": "best_of_n", "X-TTS-Scorer": "verifier"}
    response = httpx.post(
        url + "/v1/chat/completions",
        timeout=30,
        headers=headers,
        json={"model": "fake-policy", "messages": MESSAGES},
    )
    assert response.status_code == 502, response.text
    assert "verifier" in response.json()["error"]["message"]


def genprm_proxy(stack: ExitStack, vllm: FakeVllm, **settings: Any) -> str:
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    config = ProxySettings(policy_urls=[upstream], verifier_format="genprm", **settings)
    return stack.enter_context(serve(create_app(config)))


def genprm_calls(vllm: FakeVllm) -> list[dict[str, Any]]:
    return [
        c
        for c in vllm.completion_calls
        if any("Let's analyze the Paragraph" in p for p in c["prompt"])
    ]


def test_genprm_analyses_then_reads_p_yes_at_the_boxed_verdict(
    stack: ExitStack, vllm: FakeVllm
) -> None:
    url = genprm_proxy(stack, vllm, verifier_analysis_tokens=64)
    completion = ask(url, "best_of_n", **{"X-TTS-Budget": "4"})
    tts = completion.model_extra["tts"]
    assert tts["scorer"] == "verifier-genprm:fake-policy" and tts["verifier_calls"] == 1
    assert sorted(c["score"] for c in tts["candidates"]) == pytest.approx([0.6, 0.7, 0.8, 0.9])
    analysis, verdict = genprm_calls(vllm)  # two batched calls for one scorer round
    assert len(analysis["prompt"]) == len(verdict["prompt"]) == 4 * 3
    assert analysis["max_tokens"] == 64 and analysis["stop"] == ["</analyze>"]
    assert analysis["temperature"] == 0.0 and analysis["add_special_tokens"] is False
    assert verdict["max_tokens"] == 1 and verdict["logprobs"] == 20
    first = analysis["prompt"][0]
    assert first.startswith("<|im_start|>system\nYou are a math teacher.")
    assert "<|im_start|>user\nQuestion: What is 2 + 2?\n\nStep 1:" in first
    assert first.endswith(
        "<|im_start|>assistant\n<analyze>\nLet's analyze the Paragraph 1 step by step: "
    )
    # the verdict prompt is the analysis prompt + the analysis + the boxed judgement's opening
    for asked, judged in zip(analysis["prompt"], verdict["prompt"], strict=True):
        assert judged.startswith(asked) and judged.endswith("**Judgement**: $\\boxed{")
        assert "</analyze>\n<output>" in judged[len(asked) :]
    # paragraph 3 of a sample is its own user turn after two assistant turns
    third = analysis["prompt"][2]
    assert third.count("<|im_start|>user\n") == 3 and third.count("<|im_start|>assistant\n") == 3
    assert completion.usage.completion_tokens == sum(
        u["completion_tokens"] for u in vllm.reported_usage
    )
    assert tts["verifier_tokens"] == sum(
        u["prompt_tokens"] + u["completion_tokens"]
        for u, c in zip(vllm.reported_usage, vllm.completion_calls, strict=True)
        if c in genprm_calls(vllm)
    )


def test_genprm_carries_its_earlier_analyses_into_later_depths(
    stack: ExitStack, vllm: FakeVllm
) -> None:
    url = genprm_proxy(stack, vllm)
    tts = ask(url, "beam_search", **{"X-TTS-Budget": "4", "X-TTS-Beam-Width": "2"}).model_extra[
        "tts"
    ]
    calls = genprm_calls(vllm)
    assert len(calls) == 2 * tts["verifier_calls"] == 2 * tts["policy_calls"]
    depth_two = calls[2]["prompt"]  # the second round's analyses
    assert all("Let's analyze the Paragraph 2 step by step: " in p for p in depth_two)
    # the kept first steps come with the analysis and verdict written for them in round one
    assert all("paragraph 1 looks right" in p for p in depth_two)
    assert all("$\\boxed{Yes}$\n</output>" in p for p in depth_two)


def test_genprm_without_analysis_is_one_call_per_depth(stack: ExitStack, vllm: FakeVllm) -> None:
    url = genprm_proxy(stack, vllm, verifier_analysis_tokens=0)
    tts = ask(url, "best_of_n", **{"X-TTS-Budget": "2"}).model_extra["tts"]
    (call,) = genprm_calls(vllm)
    assert call["max_tokens"] == 1 and all(p.endswith("$\\boxed{") for p in call["prompt"])
    assert sorted(c["score"] for c in tts["candidates"]) == pytest.approx([0.8, 0.9])


def test_a_template_that_drops_turns_is_a_502_for_genprm(stack: ExitStack) -> None:
    from fastapi import FastAPI

    judge = FastAPI()

    @judge.post("/tokenize")
    async def tokenize(body: dict[str, Any]) -> dict[str, Any]:
        return {"tokens": [1, 2]}

    @judge.post("/detokenize")
    async def detokenize(body: dict[str, Any]) -> dict[str, Any]:  # the assistant turn is lost
        return {"prompt": "<s>user: <<tts-genprm-u1>> user: <<tts-genprm-u2>> assistant:"}

    vllm = FakeVllm()
    judge_url = stack.enter_context(serve(judge))
    url = genprm_proxy(stack, vllm, verifier_url=judge_url, verifier_model="judge")
    headers = {"X-TTS-Strategy": "best_of_n", "X-TTS-Scorer": "verifier"}
    response = httpx.post(
        url + "/v1/chat/completions",
        timeout=30,
        headers=headers,
        json={"model": "fake-policy", "messages": MESSAGES},
    )
    assert response.status_code == 502, response.text
    assert "genprm" in response.json()["error"]["message"]
