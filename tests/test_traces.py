"""Search traces: the store's bounds, ``/v1/tts/traces`` against real searches over the fakes,
and the search metrics on ``/metrics``."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from experiments.store import ExperimentStore
from harness.fake_servers import FakeVllm
from proxy.observability.traces import SearchTrace, TraceStore
from tests.conftest import ProxyFactory
from tests.eventually import eventually

MESSAGES: list[Any] = [{"role": "user", "content": "What is 2 + 2?"}]
BEAM = {"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "8", "X-TTS-Beam-Width": "4"}


def search(url: str, headers: dict[str, str], api_key: str = "unused") -> tuple[str, Any]:
    """One searched request through the strict SDK; its X-Request-Id and its ``tts`` object."""
    with openai.OpenAI(
        _strict_response_validation=True, base_url=url + "/v1", api_key=api_key, max_retries=0
    ) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="fake-policy", messages=MESSAGES, extra_headers=headers
        )
    completion = raw.parse()
    assert completion.model_extra is not None
    return raw.headers["x-request-id"], completion.model_extra["tts"]


def test_a_beam_search_trace_is_served_under_its_request_id(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy()
    request_id, tts = search(url, BEAM | {"X-TTS-Trace": "true"})
    body = httpx.get(f"{url}/v1/tts/traces/{request_id}").json()
    trace = SearchTrace.model_validate(body)
    assert trace.request_id == request_id
    assert trace.strategy == "beam_search"
    assert trace.budget == 8
    # The same tree as the inline trace, minus the texts (PROXY_STORE_TEXT is off).
    inline = {n["node_id"]: n for n in tts["trace"]}
    assert {n.node_id for n in trace.nodes} == set(inline)
    for node in trace.nodes:
        assert node.text is None
        assert (node.parent_id, node.depth, node.status, node.score) == (
            inline[node.node_id]["parent_id"],
            inline[node.node_id]["depth"],
            inline[node.node_id]["status"],
            inline[node.node_id]["score"],
        )
    assert trace.question is None and not trace.has_text
    # Every policy and PRM call is on the timeline, and every node names the call behind it.
    kinds = [c.kind for c in trace.calls]
    assert kinds.count("policy") == tts["policy_calls"] == len(vllm.completion_calls)
    assert kinds.count("scorer") == tts["prm_calls"]
    policy_calls = {c.call_id for c in trace.calls if c.kind == "policy"}
    assert all(n.call_id in policy_calls for n in trace.nodes)
    assert all(c.started_ms <= c.ended_ms for c in trace.calls)
    assert sum(c.completion_tokens for c in trace.calls if c.kind == "policy") == sum(
        u["completion_tokens"] for u in vllm.reported_usage
    )
    # The chosen answer's candidates carry rank 0; the answers and votes are the response's.
    chosen = [n for n in trace.nodes if n.choice == 0]
    assert chosen and all(n.answer == trace.answer == tts["answers"][0]["answer"] for n in chosen)
    assert [(a.answer, a.votes) for a in trace.answers] == [
        (a["answer"], a["votes"]) for a in tts["answers"]
    ]
    assert {"kept", "pruned", "finished"} <= {n.status for n in trace.nodes}


def test_texts_are_stored_only_with_store_text(start_proxy: ProxyFactory) -> None:
    url = start_proxy(store_text=True)
    request_id, _ = search(url, BEAM)
    trace = SearchTrace.model_validate(httpx.get(f"{url}/v1/tts/traces/{request_id}").json())
    assert trace.has_text and trace.question == "What is 2 + 2?"
    assert all(n.text for n in trace.nodes)


def test_deepconf_stopped_streams_are_in_the_trace(start_proxy: ProxyFactory) -> None:
    url = start_proxy(with_prm=False)
    headers = {"X-TTS-Strategy": "deepconf", "X-TTS-Budget": "8", "X-TTS-Confidence-Window": "8"}
    request_id, tts = search(url, headers)
    trace = SearchTrace.model_validate(httpx.get(f"{url}/v1/tts/traces/{request_id}").json())
    stopped = [n for n in trace.nodes if n.status == "stopped"]
    assert len(stopped) == tts["deepconf"]["stopped"]
    assert len([n for n in trace.nodes if n.status == "finished"]) == tts["deepconf"]["kept"]


def test_unknown_traces_are_a_404_naming_the_id(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    response = httpx.get(f"{url}/v1/tts/traces/chatcmpl-nope")
    assert response.status_code == 404
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("request_id", "trace_not_found")
    assert "X-Request-Id" in error["message"]
    bad = httpx.get(f"{url}/v1/tts/traces", params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit"


def test_the_list_is_newest_first_and_the_schema_is_published(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    first, _ = search(url, BEAM)
    second, _ = search(url, {"X-TTS-Strategy": "majority", "X-TTS-Budget": "4"})
    listed = httpx.get(f"{url}/v1/tts/traces").json()
    assert [t["request_id"] for t in listed["data"]] == [second, first]
    assert listed["data"][1]["strategy"] == "beam_search" and listed["data"][1]["nodes"] > 8
    spec = httpx.get(f"{url}/openapi.json").json()
    ok = spec["paths"]["/v1/tts/traces/{request_id}"]["get"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/SearchTrace")
    assert "nodes" in spec["components"]["schemas"]["SearchTrace"]["properties"]


def test_traces_are_behind_the_api_key(start_proxy: ProxyFactory) -> None:
    url = start_proxy(api_keys=["sk-trace"])
    request_id, _ = search(url, BEAM, api_key="sk-trace")
    assert httpx.get(f"{url}/v1/tts/traces/{request_id}").status_code == 401
    assert httpx.get(f"{url}/v1/tts/traces").status_code == 401
    keyed = httpx.get(
        f"{url}/v1/tts/traces/{request_id}", headers={"Authorization": "Bearer sk-trace"}
    )
    assert keyed.status_code == 200
    # The pages hold no data (their script fetches it with the key), so they open without one.
    assert httpx.get(f"{url}/ui/traces/{request_id}").status_code == 200


def test_the_store_stays_bounded_under_a_burst(start_proxy: ProxyFactory) -> None:
    url = start_proxy(traces={"store_max": 5}, max_concurrent_searches=64)

    headers = {"X-TTS-Strategy": "majority", "X-TTS-Budget": "4"}

    async def burst() -> list[str]:
        async with openai.AsyncOpenAI(
            _strict_response_validation=True, base_url=url + "/v1", api_key="x", max_retries=0
        ) as c:
            create = c.chat.completions.with_raw_response.create
            calls = [
                create(model="fake-policy", messages=MESSAGES, extra_headers=headers)
                for _ in range(30)
            ]
            return [r.headers["x-request-id"] for r in await asyncio.gather(*calls)]

    ids = asyncio.run(burst())
    listed = httpx.get(f"{url}/v1/tts/traces", params={"limit": 100}).json()["data"]
    assert len(listed) == 5
    assert {t["request_id"] for t in listed} <= set(ids)
    metrics = httpx.get(f"{url}/metrics").text
    assert "tts_trace_store_traces 5.0" in metrics


def test_the_store_evicts_by_count_age_and_bytes() -> None:
    now = [0.0]
    store = TraceStore(max_count=3, max_age_s=10.0, max_bytes=20_000, clock=lambda: now[0])

    def trace(request_id: str, text_bytes: int = 0) -> SearchTrace:
        node = {
            "node_id": 0,
            "parent_id": None,
            "depth": 0,
            "text": "x" * text_bytes,
            "score": None,
            "status": "finished",
            "call_id": 0,
            "answer": "4",
            "choice": 0,
        }
        return SearchTrace.model_validate(
            {
                "request_id": request_id,
                "created": 0,
                "model": "m",
                "strategy": "majority",
                "requested_strategy": "majority",
                "scorer": None,
                "voting": "majority",
                "budget": 1,
                "question": None,
                "has_text": True,
                "answer": "4",
                "answers": [],
                "nodes": [node],
                "is_truncated": False,
                "calls": [],
                "prompt_tokens": 1,
                "completion_tokens": 1,
                "latency_ms": 1.0,
            }
        )

    for i in range(5):
        store.put(trace(f"r{i}"))
        now[0] += 1
    assert [t.request_id for t in store.recent(10)] == ["r4", "r3", "r2"]  # count
    now[0] += 8.5
    assert [t.request_id for t in store.recent(10)] == ["r4"]  # r2, r3 older than 10 s
    store.put(trace("big", text_bytes=15_000))
    store.put(trace("big2", text_bytes=15_000))
    assert [t.request_id for t in store.recent(10)] == ["big2"]  # bytes
    assert store.bytes <= 20_000
    store.put(trace("huge", text_bytes=30_000))  # over the whole budget: not kept
    assert store.get("huge") is None and len(store) == 1
    assert TraceStore(0, 10.0, 10**6).get("r0") is None


def test_search_metrics_count_what_the_searches_did(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    _, tts = search(url, BEAM | {"X-TTS-Trace": "true"})
    search(url, {"X-TTS-Strategy": "auto", "X-TTS-Budget": "8"})
    metrics = httpx.get(f"{url}/metrics").text
    pruned = sum(1 for n in tts["trace"] if n["status"] == "pruned")
    assert f'tts_search_nodes_total{{status="pruned",strategy="beam_search"}} {pruned}.0' in metrics
    assert 'tts_search_depth_count{strategy="beam_search"} 1.0' in metrics
    assert 'tts_scorer_call_seconds_count{scorer="prm"}' in metrics
    assert "tts_auto_decisions_total{" in metrics


@pytest.mark.parametrize("path", ["/ui/traces", "/ui/static/trace.js", "/ui/static/trace.css"])
def test_the_pages_and_their_assets_are_served(start_proxy: ProxyFactory, path: str) -> None:
    url = start_proxy()
    response = httpx.get(url + path)
    assert response.status_code == 200
    assert "cdn" not in response.text.lower() and "https://" not in response.text
    assert httpx.get(url + "/ui/static/other.js").status_code == 404


def test_persisted_traces_outlive_the_memory_store(
    start_proxy: ProxyFactory, tmp_path: Any
) -> None:
    path = tmp_path / "exp.sqlite"
    url = start_proxy(traces={"persist": True, "store_max": 1}, store_url=str(path))
    first, _ = search(url, BEAM)
    kept = httpx.get(f"{url}/v1/tts/traces/{first}").json()  # still in memory
    second, _ = search(url, {"X-TTS-Strategy": "majority", "X-TTS-Budget": "4"})
    assert [t["request_id"] for t in httpx.get(f"{url}/v1/tts/traces").json()["data"]] == [second]
    written = 'tts_trace_persist_total{outcome="stored"} 2.0'
    eventually(lambda: written in httpx.get(f"{url}/metrics").text, "both traces stored", 10)
    assert httpx.get(f"{url}/v1/tts/traces/{first}").json() == kept  # read back from the store

    async def stored() -> dict[str, Any] | None:
        store = await ExperimentStore.open(str(path))
        try:
            return await store.trace(second)
        finally:
            await store.aclose()

    row = asyncio.run(stored())
    assert row is not None and row["strategy"] == "majority"


def test_streamed_and_responses_api_searches_are_traced_too(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    with openai.OpenAI(
        _strict_response_validation=True, base_url=url + "/v1", api_key="x", max_retries=0
    ) as client:
        with client.responses.with_streaming_response.create(
            model="fake-policy", input="What is 2 + 2?", stream=True, extra_headers=BEAM
        ) as streamed:
            response_id = streamed.headers["x-request-id"]
            assert response_id.startswith("resp_")
            assert "response.completed" in streamed.read().decode()
        chat = client.chat.completions.with_raw_response.create(
            model="fake-policy", messages=MESSAGES, stream=True, extra_headers=BEAM
        )
        chat_id = chat.headers["x-request-id"]
        assert [c.id for c in chat.parse()][-1] == chat_id
    for request_id in (response_id, chat_id):
        trace = httpx.get(f"{url}/v1/tts/traces/{request_id}").json()
        assert trace["strategy"] == "beam_search" and trace["answer"] == "4"
