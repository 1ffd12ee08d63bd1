"""Admission: every route counts, overload is decided before a response starts (a real 429 with
``Retry-After`` for streams too), and a slot comes back however its response ends."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import openai
import pytest

from harness.fake_servers import FakeVllm
from tests.conftest import ProxyFactory
from tests.eventually import eventually

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def hold_one(url: str, vllm: FakeVllm) -> threading.Thread:
    """A slow searched request that holds the only slot."""
    vllm.delay_s = 1.5
    body = {"model": "fake-policy", "messages": MESSAGES}
    holder = threading.Thread(
        target=httpx.post,
        args=(url + "/v1/chat/completions",),
        kwargs={"json": body, "timeout": 30, "headers": {"X-TTS-Strategy": "cot"}},
    )
    holder.start()
    assert vllm.started.wait(10)
    return holder


@pytest.mark.parametrize(
    ("path", "body", "headers"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES, "stream": True}, {}),
        ("/v1/chat/completions", {"messages": MESSAGES}, {"X-TTS-Strategy": "none"}),
        ("/v1/responses", {"input": "Hi", "stream": True}, {}),
        ("/v1/completions", {"prompt": "Hi", "stream": True}, {}),
    ],
)
def test_overload_is_a_429_with_retry_after_before_any_stream(
    start_proxy: ProxyFactory,
    vllm: FakeVllm,
    path: str,
    body: dict[str, Any],
    headers: dict[str, str],
) -> None:
    url = start_proxy(max_concurrent_searches=1)
    holder = hold_one(url, vllm)
    response = httpx.post(url + path, json={"model": "fake-policy"} | body, headers=headers)
    assert response.status_code == 429 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "overloaded"
    holder.join()


def test_the_sdk_sees_a_retryable_rate_limit_for_streams(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy(max_concurrent_searches=1)
    holder = hold_one(url, vllm)
    client = openai.OpenAI(
        _strict_response_validation=True, base_url=url + "/v1", api_key="unused", max_retries=0
    )
    with client, pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="fake-policy", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    holder.join()


def test_slots_come_back_after_streams_end_or_break(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy(max_concurrent_searches=1)
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    for _ in range(3):  # streamed to the end
        with httpx.stream("POST", url + "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200 and response.read()
    vllm.delay_s = 2.0  # a client that gives up mid-search
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=0.5) as response,
    ):
        for _ in response.iter_bytes():
            pass
    vllm.delay_s = 0.0
    cot = {"X-TTS-Strategy": "cot"}
    eventually(
        lambda: (
            httpx.post(
                url + "/v1/chat/completions", json=body | {"stream": False}, headers=cot, timeout=30
            ).status_code
            == 200
        ),
        "a slot free again",
        5,
    )


def test_failures_are_counted_streamed_or_not(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy(policy={"max_retries": 0})
    vllm.fail_statuses = [500] * 20
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, headers={"X-TTS-Strategy": "best_of_n"}
    ) as response:
        assert response.status_code == 200 and b'"error"' in response.read()
    bad = httpx.post(url + "/v1/chat/completions", json={"model": "fake-policy", "messages": []})
    assert bad.status_code == 400
    text = httpx.get(url + "/metrics").text
    assert 'tts_requests_total{status="502",strategy="best_of_n"} 1.0' in text
    assert 'tts_errors_total{type="upstream_error"} 1.0' in text
    assert 'tts_requests_total{status="400",strategy="-"} 1.0' in text
