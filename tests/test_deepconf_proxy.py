"""DeepConf through the proxy against a fake vLLM that streams tokens with top log-probs: the
fake sees the low-confidence streams closed early, and usage counts what was generated."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import openai

from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.settings import ProxySettings, SearchDefaults
from tests.eventually import eventually

MESSAGES = [{"role": "user", "content": "What is 1 + 2?"}]


def script(prefix: str, i: int) -> str:
    """Even samples answer 3 with peaked tokens; odd ones wander (``~`` tokens) to 7."""
    if i % 2 == 0:
        return "One plus two is three, so \\boxed{3}"
    return "hmm~ " * 40 + "\\boxed{7}"


def ask(url: str, **headers: str) -> Any:
    with openai.OpenAI(
        _strict_response_validation=True, base_url=url + "/v1", api_key="x", max_retries=0
    ) as client:
        return client.chat.completions.create(
            model="fake-policy",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_headers={"X-TTS-Strategy": "deepconf", "X-TTS-Budget": "8"} | headers,
        )


def test_online_deepconf_closes_unsure_streams_and_counts_honestly(stack: ExitStack) -> None:
    vllm = FakeVllm(script=script)
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream]))))
    online = ask(url, **{"X-TTS-DeepConf-Mode": "online"})
    tts = online.model_extra["tts"]
    report = tts["deepconf"]
    assert tts["strategy"] == "deepconf" and report["mode"] == "online"
    assert "\\boxed{3}" in online.choices[0].message.content
    assert report["warmup"] == 2 and report["stopped"] >= 1
    eventually(lambda: vllm.streams_closed_early >= report["stopped"], "streams closed", 5)
    assert vllm.streams_closed_early == report["stopped"]  # the fake saw them closed early
    assert vllm.stream_tokens_sent < vllm.streams_opened * 41  # fewer tokens than finishing
    reported = sum(u["completion_tokens"] for u in vllm.reported_usage)
    assert online.usage.completion_tokens <= reported  # never more than the server generated
    stream_calls = [c for c in vllm.completion_calls if c.get("stream")]
    assert stream_calls and all(c["logprobs"] == 5 and c["n"] == 1 for c in stream_calls)
    assert all(c["stream_options"]["continuous_usage_stats"] for c in stream_calls)

    offline = ask(url, **{"X-TTS-DeepConf-Mode": "offline", "X-TTS-Keep-Percent": "50"})
    report = offline.model_extra["tts"]["deepconf"]
    assert report["mode"] == "offline" and report["kept"] == 4 and report["traces"] == 8
    assert "\\boxed{3}" in offline.choices[0].message.content
    assert online.usage.completion_tokens < offline.usage.completion_tokens  # the saving


def test_deepconf_knobs_are_validated(stack: ExitStack) -> None:
    import httpx

    vllm = FakeVllm(script=script)
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream]))))
    for header, value in (
        ("X-TTS-Keep-Percent", "0"),
        ("X-TTS-Warmup", "0"),
        ("X-TTS-DeepConf-Mode", "sideways"),
        ("X-TTS-Confidence-Window", "9999"),
    ):
        response = httpx.post(
            url + "/v1/chat/completions",
            timeout=30,
            json={"model": "fake-policy", "messages": MESSAGES},
            headers={"X-TTS-Strategy": "deepconf", header: value},
        )
        assert response.status_code == 400, (header, response.text)
        param = header.removeprefix("X-TTS-").lower().replace("-", "_")
        assert response.json()["error"]["param"] == param


def test_the_server_default_mode_applies_without_a_header(stack: ExitStack) -> None:
    vllm = FakeVllm(script=script)
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    settings = ProxySettings(policy_urls=[upstream], search=SearchDefaults(deepconf_mode="offline"))
    url = stack.enter_context(serve(create_app(settings)))
    assert ask(url).model_extra["tts"]["deepconf"]["mode"] == "offline"
    assert not [c for c in vllm.completion_calls if c.get("stream")]


def test_the_server_default_keep_percent_applies_without_a_header(stack: ExitStack) -> None:
    vllm = FakeVllm(script=script)
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    settings = ProxySettings(
        policy_urls=[upstream], search=SearchDefaults(deepconf_keep_percent=10)
    )
    url = stack.enter_context(serve(create_app(settings)))
    assert ask(url).model_extra["tts"]["deepconf"]["keep_percent"] == 10
    assert (
        ask(url, **{"X-TTS-Keep-Percent": "50"}).model_extra["tts"]["deepconf"]["keep_percent"]
        == 50
    )
