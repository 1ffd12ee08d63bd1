"""Policy replicas: failover when one is down or failing, passive ejection and active probes,
model discovery on any replica, and the health endpoints an orchestrator uses."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from harness.fake_servers import FakeVllm
from harness.servers import free_port, serve
from proxy.app import create_app
from proxy.settings import ProxySettings
from tests.eventually import eventually

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def proxy(stack: ExitStack, urls: list[str], **settings: Any) -> str:
    policy = {"max_retries": 0} | settings.pop("policy", {})  # the test's own limits win
    values: dict[str, Any] = {"policy_urls": urls, "policy": policy} | settings
    return stack.enter_context(serve(create_app(ProxySettings(**values))))


def chat(url: str, strategy: str = "best_of_n", **body: Any) -> httpx.Response:
    payload = {"model": "fake-policy", "messages": MESSAGES} | body
    return httpx.post(
        url + "/v1/chat/completions",
        json=payload,
        timeout=30,
        headers={"X-TTS-Strategy": strategy, "X-TTS-Budget": "2"},
    )


@pytest.mark.parametrize("dead_first", [True, False])
def test_a_dead_replica_costs_no_request(stack: ExitStack, dead_first: bool) -> None:
    live = FakeVllm()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    alive = stack.enter_context(serve(live.app())) + "/v1"
    url = proxy(stack, [dead, alive] if dead_first else [alive, dead])  # model looked up live
    sequential = [chat(url).status_code for _ in range(10)]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda _: chat(url).status_code, range(16)))
    assert sequential == [200] * 10 and concurrent == [200] * 16
    for strategy in ("none",):  # pass-through, plain and streamed
        assert chat(url, strategy).status_code == 200
        with httpx.stream(
            "POST",
            url + "/v1/chat/completions",
            timeout=30,
            json={"model": "fake-policy", "messages": MESSAGES, "stream": True},
            headers={"X-TTS-Strategy": strategy},
        ) as response:
            assert response.status_code == 200 and "data: [DONE]" in response.read().decode()
    health = httpx.get(url + "/health")
    assert health.status_code == 200 and health.json()["status"] == "degraded"
    dead_name = "policy[0]" if dead_first else "policy[1]"
    assert health.json()["upstreams"][dead_name].startswith("unreachable")
    assert "urls" not in health.json() and "127.0.0.1" not in health.text
    assert httpx.get(url + "/health/ready").json() == {
        "status": "ok",
        "policy_replicas_available": 1,
    }


def test_a_failing_replica_is_ejected_then_probed_back(stack: ExitStack) -> None:
    flaky, steady = FakeVllm(), FakeVllm()
    flaky.fail_statuses = [500] * 3
    urls = [stack.enter_context(serve(v.app())) + "/v1" for v in (flaky, steady)]
    url = proxy(
        stack, urls, policy_model="fake-policy", policy_eject_s=60, policy_probe_interval_s=0.2
    )
    assert [chat(url, "cot").status_code for _ in range(4)] == [200] * 4
    # Requests arrive alternately; the first that met the 500 moved to the steady replica.
    assert len(flaky.completion_calls) <= 2
    # The flaky replica now answers its probes: back long before its 60 s ejection ends.
    flaky.fail_statuses = []
    before = len(flaky.completion_calls)
    for _ in range(20):
        chat(url, "cot")
        if len(flaky.completion_calls) > before:
            break
    assert len(flaky.completion_calls) > before


def test_health_is_ok_against_vllms_empty_body_and_names_addresses_only_to_key_holders(
    stack: ExitStack,
) -> None:
    upstream = stack.enter_context(serve(FakeVllm().app())) + "/v1"  # /health: 200, empty body
    url = proxy(stack, [upstream], api_keys=["sk-1"])
    anonymous = httpx.get(url + "/health")
    assert anonymous.status_code == 200 and anonymous.json() == {
        "status": "ok",
        "upstreams": {"policy[0]": "ok"},
    }
    keyed = httpx.get(url + "/health", headers={"Authorization": "Bearer sk-1"}).json()
    assert keyed["urls"] == {"policy[0]": upstream}


def test_every_replica_down_is_a_502_naming_the_policy_server(stack: ExitStack) -> None:
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    url = proxy(stack, dead, policy_model="fake-policy")
    response = chat(url)
    assert response.status_code == 502
    assert "policy server" in response.json()["error"]["message"]
    assert httpx.get(url + "/health/ready").status_code == 503


def test_a_replica_whose_generations_hang_is_failed_over_and_kept_out(stack: ExitStack) -> None:
    # Its /health answers, its completions never do: a probe must not bring it back.
    hung, steady = FakeVllm(delay_s=60.0), FakeVllm()
    urls = [stack.enter_context(serve(v.app())) + "/v1" for v in (hung, steady)]
    limits = {"policy": {"timeout_s": 1.0}, "policy_eject_s": 60, "policy_probe_interval_s": 0.1}
    url = proxy(stack, urls, policy_model="fake-policy", **limits)
    first = [chat(url, "cot") for _ in range(2)]
    # The request sent to it timed out there and moved on, well within its own deadline.
    assert [a.status_code for a in first] == [200, 200], first[0].text
    assert len(hung.completion_calls) == 1
    assert max(a.elapsed.total_seconds() for a in first) < 5
    health = httpx.get(url + "/health", headers={"Authorization": "Bearer unused"})
    assert health.json()["upstreams"]["policy[0]"] == "ok, but a request timed out"
    later = [chat(url, "cot") for _ in range(4)]  # after that probe: still kept out
    assert [a.status_code for a in later] == [200] * 4 and len(hung.completion_calls) == 1
    assert httpx.get(url + "/health/ready").json()["policy_replicas_available"] == 1


def test_a_streamed_search_during_an_outage_gets_a_status_not_a_200(stack: ExitStack) -> None:
    dead = [f"http://127.0.0.1:{free_port()}/v1" for _ in range(2)]
    url = proxy(stack, dead, policy_model="fake-policy", policy_eject_s=60)
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    path, cot = url + "/v1/chat/completions", {"X-TTS-Strategy": "cot"}
    eventually(lambda: _unready(url), "both replicas ejected by their probes", 10)
    # Neither answers a probe: refused before the 200, with a status the SDKs retry on.
    refused = httpx.post(path, json=body, headers=cot, timeout=30)
    assert refused.status_code == 502, refused.text
    assert "every policy replica is failing" in refused.json()["error"]["message"]


def _unready(url: str) -> bool:
    return httpx.get(url + "/health/ready").status_code == 503
