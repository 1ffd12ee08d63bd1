"""Errors, retries, deadlines, admission and disconnects: OpenAI-shaped, bounded, never a hang."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from harness.fake_prm import FakePrm
from harness.fake_servers import FakeVllm
from harness.servers import free_port, serve
from proxy.observability.metrics import Metrics
from proxy.upstream.client import Upstream, UpstreamConfig
from proxy.upstream.policy import CallStats, PrmScorer
from strategies import ScoreRequest, Step
from tests.conftest import ProxyFactory
from tests.eventually import eventually

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]
GOLDEN = json.loads((Path(__file__).parent / "golden" / "prm_score.json").read_text())


def post(url: str, body: Any = None, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    payload = {"model": "fake-policy", "messages": MESSAGES} if body is None else body
    return httpx.post(
        url + "/v1/chat/completions",
        json=payload,
        headers=headers or {},
        timeout=kw.pop("timeout", 30),
        **kw,
    )


def assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("headers", "param"),
    [
        ({"X-TTS-Budget": "lots"}, "budget"),
        ({"X-TTS-Budget": "100000"}, "budget"),
        ({"X-TTS-Strategy": "mcts"}, "strategy"),
        ({"X-TTS-Scoring": "max"}, "scoring"),
        ({"X-TTS-Voting": "borda"}, "voting"),
        ({"X-TTS-Max-Steps": "0"}, "max_steps"),
        ({"X-TTS-Trace": "maybe"}, "trace"),
        ({"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "6"}, "budget"),
        ({"X-TTS-Strategy": "dvts", "X-TTS-Scorer": "none"}, "scorer"),
        ({"X-TTS-Strategy": "majority", "X-TTS-Voting": "prm_max"}, "voting"),
        ({"X-TTS-Strategy": "majority", "X-TTS-Budget": "0"}, "budget"),
        ({"X-TTS-Strategy": "particle_filtering", "X-TTS-Scorer": "none"}, "scorer"),
        (
            {
                "X-TTS-Strategy": "particle_filtering",
                "X-TTS-Budget": "3",
                "X-TTS-Particle-Iterations": "2",
            },
            "particle_iterations",
        ),
        ({"X-TTS-Particle-Iterations": "17"}, "particle_iterations"),
    ],
)
def test_bad_control_values_are_400_naming_the_parameter(
    start_proxy: ProxyFactory, headers: dict[str, str], param: str
) -> None:
    url = start_proxy()
    error = assert_error(post(url, headers=headers), 400, param)
    assert error["type"] == "invalid_request_error"


def test_prm_scorer_without_prm_is_400(start_proxy: ProxyFactory) -> None:
    url = start_proxy(with_prm=False)
    assert_error(post(url, headers={"X-TTS-Scorer": "prm"}), 400, "scorer")


def test_unknown_tts_body_field_is_400(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    body = {"model": "fake-policy", "messages": MESSAGES, "tts": {"budgett": 4}}
    assert_error(post(url, body), 400, "tts.budgett")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "fake-policy"}, "messages"),
        ({"model": "fake-policy", "messages": []}, "messages"),
        ({"messages": MESSAGES}, "model"),
        ({"model": "fake-policy", "messages": MESSAGES, "n": 0}, "n"),
    ],
)
def test_malformed_requests_are_400(start_proxy: ProxyFactory, body: Any, param: str) -> None:
    url = start_proxy()
    assert_error(post(url, body), 400, param)


def test_invalid_json_is_400(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    response = httpx.post(url + "/v1/chat/completions", content=b"{nope", timeout=10)
    assert_error(response, 400)


def test_unknown_model_is_404(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    client = openai.OpenAI(
        _strict_response_validation=True, max_retries=0, base_url=url + "/v1", api_key="x"
    )
    with client, pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-9", messages=MESSAGES)  # type: ignore[arg-type]
    assert info.value.code == "model_not_found"


def test_proxy_keys_are_checked_and_never_forwarded(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy(api_keys=["sk-proxy"], policy={"api_key": "upstream-key"})
    assert_error(post(url), 401)
    assert_error(post(url, headers={"Authorization": "Bearer wrong"}), 401)
    response = post(url, headers={"Authorization": "Bearer sk-proxy", "X-TTS-Strategy": "cot"})
    assert response.status_code == 200
    assert vllm.auth_headers == ["Bearer upstream-key"]
    assert httpx.get(url + "/health").status_code == 200  # probes need no key


def test_policy_server_down_is_502(stack: Any) -> None:
    from proxy.app import create_app
    from proxy.settings import ProxySettings

    dead = f"http://127.0.0.1:{free_port()}/v1"
    url = stack.enter_context(
        serve(create_app(ProxySettings(policy_urls=[dead], policy_model="m")))
    )
    error = assert_error(post(url, {"model": "m", "messages": MESSAGES}), 502)
    assert "policy server" in error["message"]
    health = httpx.get(url + "/health")
    assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert httpx.get(url + "/health/ready").status_code == 503
    assert httpx.get(url + "/health/live").status_code == 200


def test_transient_5xx_and_429_are_retried(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    vllm.fail_statuses = [503, 429]
    vllm.retry_after = "0"
    url = start_proxy(policy={"max_retries": 2})
    assert post(url, headers={"X-TTS-Strategy": "cot"}).status_code == 200
    assert len(vllm.completion_calls) == 3


def test_retries_are_bounded(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    vllm.fail_statuses = [500, 500, 500, 500]
    url = start_proxy(policy={"max_retries": 1})
    error = assert_error(post(url, headers={"X-TTS-Strategy": "cot"}), 502)
    assert "HTTP 500" in error["message"]
    assert len(vllm.completion_calls) == 2


def test_upstream_timeout_is_504(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    vllm.delay_s = 3.0
    url = start_proxy(policy={"timeout_s": 0.3})
    error = assert_error(post(url, headers={"X-TTS-Strategy": "cot"}), 504)
    assert "PROXY_POLICY__TIMEOUT_S" in error["message"]


def test_deadline_returns_best_partial_flagged(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    vllm.delay_s = 1.0  # the first depth ends by ~1 s, the second would by ~2 s: 0.5 s margins
    url = start_proxy()
    headers = {"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "4", "X-TTS-Timeout-Ms": "1500"}
    response = post(url, headers=headers)
    assert response.status_code == 200
    tts = response.json()["tts"]
    assert tts["is_partial"] is True and tts["policy_calls"] == 1
    assert response.json()["choices"][0]["message"]["content"].startswith("Step 1")


def test_deadline_before_any_answer_is_504(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    vllm.delay_s = 1.0
    url = start_proxy()
    response = post(url, headers={"X-TTS-Strategy": "majority", "X-TTS-Timeout-Ms": "200"})
    error = assert_error(response, 504, "timeout_ms")
    assert error["code"] == "deadline_exceeded" and error["type"] == "timeout_error"
    assert "X-TTS-Timeout-Ms (200 ms)" in error["message"]


def test_admission_limit_answers_429_fast(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    vllm.delay_s = 2.0
    url = start_proxy(max_concurrent_searches=1)
    holder = threading.Thread(
        target=post, args=(url,), kwargs={"headers": {"X-TTS-Strategy": "cot"}}
    )
    holder.start()
    assert vllm.started.wait(10)
    started = time.monotonic()
    error = assert_error(post(url, headers={"X-TTS-Strategy": "majority"}), 429)
    assert time.monotonic() - started < 1.0 and error["code"] == "overloaded"
    holder.join()
    # counted under the strategy it asked for, like every other outcome (was "-")
    assert _requests_line(url, 'strategy="majority"', 'status="429"')
    assert not _requests_line(url, 'strategy="-"')


def test_client_disconnect_cancels_upstream_calls(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.delay_s = 5.0
    url = start_proxy()

    async def leave_once_upstream_is_called() -> None:
        body = {"model": "fake-policy", "messages": MESSAGES}
        async with httpx.AsyncClient(timeout=30) as client:
            asking = asyncio.create_task(
                client.post(url + "/v1/chat/completions", json=body, headers=majority)
            )
            assert await asyncio.to_thread(vllm.started.wait, 10)
            asking.cancel()  # the connection closes: the client is gone
            with pytest.raises(asyncio.CancelledError):
                await asking

    majority = {"X-TTS-Strategy": "majority"}
    asyncio.run(leave_once_upstream_is_called())
    eventually(lambda: vllm.cancelled >= 1, "the upstream call cancelled", 5)
    assert vllm.cancelled == 1 and vllm.in_flight == 0


def test_stream_disconnect_cancels_upstream_calls(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.delay_s = 5.0
    url = start_proxy()
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    majority = {"X-TTS-Strategy": "majority"}
    path = url + "/v1/chat/completions"
    with httpx.stream("POST", path, json=body, headers=majority, timeout=10) as response:
        assert vllm.started.wait(5)
        assert next(response.iter_lines()) == ": searching"
    eventually(lambda: vllm.cancelled >= 1, "the upstream call cancelled", 3)
    assert vllm.cancelled == 1
    strategy = 'strategy="majority"'
    eventually(lambda: _requests_line(url, strategy, 'status="499"'), "a 499 counted", 5)
    assert not _requests_line(url, strategy, 'status="ok"')  # counted once, as the 499


def _requests_line(url: str, *labels: str) -> bool:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("tts_requests_total{") and all(label in line for label in labels):
            return True
    return False


def test_failure_mid_stream_is_one_error_event_then_done(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.fail_statuses = [500, 500]
    url = start_proxy(policy={"max_retries": 1})
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    response = post(url, body, headers={"X-TTS-Strategy": "cot"})
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert len(events) == 2 and events[-1] == "[DONE]"
    assert json.loads(events[0])["error"]["code"] == "upstream_error"


def test_errors_before_stream_start_are_plain_json(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    assert_error(post(url, body, headers={"X-TTS-Budget": "-1"}), 400, "budget")


async def test_prm_client_speaks_the_golden_contract() -> None:
    prm = FakePrm()
    with serve(prm.app()) as url:
        config = UpstreamConfig("prm", url + "/v1", None, 2.0, 10.0, 4, 0, "PROXY_PRM__TIMEOUT_S")
        upstream = Upstream(config, Metrics())
        try:
            scorer = PrmScorer(upstream, None, CallStats())
            requests = [
                ScoreRequest(tuple(Step(s + "\n\n") for s in c))
                for c in GOLDEN["request"]["candidates"]
            ]
            batch = await scorer.score(GOLDEN["request"]["problem"], requests)
        finally:
            await upstream.aclose()
    assert prm.calls == [GOLDEN["request"]]
    assert [list(row) for row in batch.scores] == GOLDEN["response"]["scores"]
    assert batch.scored_tokens == GOLDEN["response"]["usage"]["prompt_tokens"]
    assert scorer.name == "prm:fake-prm"


def test_an_unexpected_error_is_a_typed_500_and_the_connection_stays_usable(
    stack: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from proxy.app import create_app
    from proxy.settings import ProxySettings

    vllm_url = stack.enter_context(serve(FakeVllm().app()))
    app = create_app(ProxySettings(policy_urls=[vllm_url + "/v1"]))

    @app.get("/v1/boom")  # a route of this test's own: a bug in a handler, not a client's fault
    async def boom() -> None:
        raise RuntimeError("a bug")

    url = stack.enter_context(serve(app))
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        replies = conn.makefile("rb")
        conn.sendall(b"GET /v1/boom HTTP/1.1\r\nHost: proxy\r\n\r\n")
        status, headers, body = _read_reply(replies)
        assert status == 500 and b"connection: close" not in headers.lower()
        error = json.loads(body)["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "internal_error" and "a bug" not in error["message"]
        conn.sendall(b"GET /health/live HTTP/1.1\r\nHost: proxy\r\n\r\n")  # the same connection
        assert _read_reply(replies)[0] == 200
    assert any("unhandled error on /v1/boom" in r.getMessage() for r in caplog.records)


def _read_reply(replies: Any) -> tuple[int, bytes, bytes]:
    status = int(replies.readline().split()[1])
    headers = b""
    while (line := replies.readline()) not in (b"\r\n", b""):
        headers += line
    length = next(
        int(h.split(b":")[1])
        for h in headers.lower().splitlines()
        if h.startswith(b"content-length")
    )
    return status, headers, replies.read(length)
