"""Fault injection against real loopback servers: upstreams that trickle, answer garbage or
hang before their first byte, and clients that send invalid text. Each fault lands on the side
that caused it (502/504 for the upstream, 400 for the client), with no request text in the body."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import struct
import time
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from harness.fake_servers import FakeVllm, render_chat
from harness.servers import serve
from proxy.app import create_app
from proxy.errors import InvalidRequestError
from proxy.observability.metrics import Metrics
from proxy.settings import PolicyUpstream, ProxySettings
from proxy.upstream.client import Upstream, UpstreamConfig
from tests.conftest import ProxyFactory
from tests.eventually import eventually

MESSAGES = [{"role": "user", "content": "What is 2 + 2?"}]


def chat(url: str, strategy: str = "best_of_n", **kw: Any) -> httpx.Response:
    timeout = kw.pop("timeout", 30)
    body = {"model": "fake-policy", "messages": kw.pop("messages", MESSAGES)} | kw
    return httpx.post(
        url + "/v1/chat/completions",
        json=body,
        timeout=timeout,
        headers={"X-TTS-Strategy": strategy, "X-TTS-Budget": "2"},
    )


def test_a_trickling_upstream_meets_a_total_deadline(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.trickle_s = 0.05  # one byte per 50 ms: httpx's idle timeout never fires
    url = start_proxy(policy={"timeout_s": 1.0, "max_retries": 0})
    started = time.monotonic()
    response = chat(url)
    assert response.status_code == 504
    assert time.monotonic() - started < 4.0
    assert "PROXY_POLICY__TIMEOUT_S" in response.json()["error"]["message"]


def garbage_policy(completions: dict[str, Any]) -> FastAPI:
    """A policy server whose /v1/completions answer is well-formed JSON of the wrong shape."""
    app = FastAPI()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"data": [{"id": "fake-policy"}]}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        text = render_chat((await request.json())["messages"], True, False)
        return {"tokens": [ord(c) for c in text]}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        return {"prompt": "".join(chr(t) for t in (await request.json())["tokens"])}

    @app.post("/v1/completions")
    async def complete() -> dict[str, Any]:
        return completions

    return app


@pytest.mark.parametrize(
    "answer",
    [
        {"choices": [{"text": {"a": 1}, "logprobs": {"tokens": 5}}] * 2, "usage": {}},
        {"choices": [{"text": "x"}] * 2, "usage": {"completion_tokens": "many"}},
        {"choices": None, "usage": None},
        {"choices": [None, None]},
        {"choices": [{"text": "x"}] * 2, "usage": "lots"},
        {"choices": [{"text": "x"}] * 2, "usage": {"prompt_tokens_details": ["cached"]}},
    ],
)
def test_malformed_policy_answers_are_502(stack: ExitStack, answer: dict[str, Any]) -> None:
    upstream = stack.enter_context(serve(garbage_policy(answer))) + "/v1"
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream]))))
    response = chat(url)
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["type"] == "upstream_error" and "policy server" in error["message"]


def test_tokenize_without_tokens_is_502(stack: ExitStack) -> None:
    app = garbage_policy({})
    app.router.routes = [r for r in app.router.routes if getattr(r, "path", "") != "/tokenize"]

    @app.post("/tokenize")
    async def tokenize() -> dict[str, Any]:
        return {"count": 3}

    upstream = stack.enter_context(serve(app)) + "/v1"
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream]))))
    response = chat(url)
    assert response.status_code == 502 and "/tokenize" in response.json()["error"]["message"]


def test_malformed_prm_scores_are_502(start_proxy: ProxyFactory, stack: ExitStack) -> None:
    app = FastAPI()

    @app.post("/v1/score")
    async def score() -> dict[str, Any]:
        return {"scores": [["high", None]] * 2}

    prm_url = stack.enter_context(serve(app))
    url = start_proxy(with_prm=False, prm_url=prm_url)
    response = chat(url, "best_of_n", tts={"scorer": "prm"})
    assert response.status_code == 502, response.text
    assert "PRM server" in response.json()["error"]["message"]


def test_invalid_unicode_from_the_client_is_its_400(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    body = '{"model": "fake-policy", "messages": [{"role": "user", "content": "x\\ud800y"}]}'
    response = httpx.post(
        url + "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages.0.content"


def test_a_lone_surrogate_from_the_upstream_is_repaired_not_a_500(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    """JSON may carry text no UTF-8 can (``"\\ud800"``): an upstream's answer holding it is
    relayed with U+FFFD in its place, searched or passed through, JSON or streamed."""
    vllm.chat_reasoning = "think \ud800 again"
    vllm.script = lambda prefix, i: "So \ud800 the answer is \\boxed{4}"
    url = start_proxy(with_prm=False)
    passed = chat(url, "none")
    assert passed.status_code == 200, passed.text
    assert passed.json()["choices"][0]["message"]["reasoning"] == "think \ufffd again"
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json={"model": "fake-policy", "messages": MESSAGES, "stream": True},
        headers={"X-TTS-Strategy": "none"},
        timeout=30,
    ) as streamed:
        events = [line for line in streamed.iter_lines() if line.startswith("data: {")]
    assert streamed.status_code == 200 and "tts" in json.loads(events[-1][6:])
    searched = chat(url, "majority")
    assert searched.status_code == 200, searched.text
    assert (
        searched.json()["choices"][0]["message"]["content"] == "So \ufffd the answer is \\boxed{4}"
    )


@pytest.mark.parametrize(
    ("field", "value", "param"),
    [
        ("user", "a\\ud800", "user"),
        ("stop", ["ok", "\\ud800"], "stop.1"),
        ("top_k_note", {"k\\udfff": 1}, "top_k_note"),
        ("tts", {"reference": "\\ud800"}, "tts.reference"),
    ],
)
@pytest.mark.parametrize("strategy", ["none", "best_of_n"])
def test_invalid_unicode_in_any_field_is_a_400_and_no_replica_s_fault(
    stack: ExitStack, field: str, value: Any, param: str, strategy: str
) -> None:
    """A lone surrogate anywhere in the body (a forwarded field, a key, a tts field) is the
    client's 400 naming the field, sent to no replica; both replicas stay in service."""
    replicas = [FakeVllm(), FakeVllm()]
    urls = [stack.enter_context(serve(r.app())) + "/v1" for r in replicas]
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=urls))))
    raw = json.dumps(value).replace("\\\\", "\\")  # the escape itself, not an escaped backslash
    body = (
        '{"model": "fake-policy", "messages": [{"role": "user", "content": "hi"}], '
        f'"{field}": {raw}}}'
    )
    for _ in range(3):
        response = httpx.post(
            url + "/v1/chat/completions",
            content=body,
            timeout=30,
            headers={"content-type": "application/json", "X-TTS-Strategy": strategy},
        )
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == param and "surrogate" in error["message"]
    assert httpx.get(url + "/health/ready", timeout=30).json()["policy_replicas_available"] == 2
    assert not replicas[0].chat_calls and not replicas[1].chat_calls


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/completions", '{"model": "fake-policy", "prompt": "hi", "user": "a\\ud800"}'),
        ("/v1/responses", '{"model": "fake-policy", "input": "hi", "user": "a\\ud800"}'),
    ],
)
def test_every_endpoint_checks_every_field(start_proxy: ProxyFactory, path: str, body: str) -> None:
    url = start_proxy()
    response = httpx.post(
        url + path, content=body, timeout=30, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "user"
    assert httpx.get(url + "/health/ready", timeout=30).status_code == 200


async def test_text_no_upstream_can_encode_is_a_client_error_not_a_replica_s() -> None:
    """At the upstream client's depth too: an encode error is the request's, never a failure."""
    vllm = FakeVllm()
    with serve(vllm.app()) as vllm_url:
        config = UpstreamConfig(
            "policy", vllm_url + "/v1", None, 2.0, 10.0, 4, 1, "PROXY_POLICY__TIMEOUT_S"
        )
        upstream = Upstream(config, Metrics())
        try:
            with pytest.raises(InvalidRequestError):
                await upstream.post_json("/completions", {"prompt": "a\ud800"})
            assert upstream.health.is_available and upstream.health.failures == 0
        finally:
            await upstream.aclose()


def test_upstream_errors_carry_no_request_text(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    vllm.fail_statuses = [500] * 10
    url = start_proxy(policy={"max_retries": 0})
    secret = "the launch code is 0000 " * 50
    response = chat(url, messages=[{"role": "user", "content": secret}])
    assert response.status_code == 502 and "launch code" not in response.text


def echoing_policy(status: int, as_json: bool) -> FastAPI:
    """A policy whose errors quote the whole request, as some servers' validation errors do."""
    app = garbage_policy({})
    routes = app.router.routes
    app.router.routes = [r for r in routes if getattr(r, "path", "") != "/v1/completions"]

    @app.post("/v1/completions")
    async def complete(request: Request) -> Any:
        from fastapi.responses import JSONResponse, PlainTextResponse

        text = (await request.body()).decode()
        if as_json:
            return JSONResponse({"error": {"message": f"bad request: {text}"}}, status)
        return PlainTextResponse(f"<html>{text}</html>", status)

    return app


@pytest.mark.parametrize(
    ("status", "as_json"), [(500, True), (503, False), (400, True), (400, False)]
)
def test_upstream_error_text_quoting_the_prompt_stays_out_of_bodies_and_logs(
    stack: ExitStack, caplog: pytest.LogCaptureFixture, status: int, as_json: bool
) -> None:
    upstream = stack.enter_context(serve(echoing_policy(status, as_json))) + "/v1"
    settings = ProxySettings(policy_urls=[upstream], policy=PolicyUpstream(max_retries=0))
    url = stack.enter_context(serve(create_app(settings)))
    secret = "the launch code is 0000 " * 50
    with caplog.at_level(logging.INFO):
        response = chat(url, messages=[{"role": "user", "content": secret}])
    assert response.status_code == (400 if status == 400 else 502), response.text
    logged = "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    assert "launch code" not in logged
    message = response.json()["error"]["message"]
    assert "launch code" not in message  # the upstream's own message stays in the debug log
    assert f"HTTP {status}" in message


def test_a_disconnect_before_the_first_pass_through_byte_closes_the_upstream(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.delay_s = 5.0  # the upstream's first byte would come after 5 s
    url = start_proxy()
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            url + "/v1/chat/completions", json=body, timeout=0.5, headers={"X-TTS-Strategy": "none"}
        )
    eventually(lambda: vllm.cancelled >= 1, "the upstream call cancelled", 2)
    assert vllm.cancelled == 1 and vllm.in_flight == 0


def test_a_disconnect_is_one_info_line(
    start_proxy: ProxyFactory, vllm: FakeVllm, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    vllm.delay_s = 3.0
    url = start_proxy()
    with pytest.raises(httpx.ReadTimeout):
        chat(url, "cot", timeout=0.5)
    eventually(lambda: vllm.cancelled >= 1, "the upstream call cancelled", 3)
    said = eventually(
        lambda: [r for r in caplog.records if "disconnected" in r.getMessage()],
        "the disconnect logged",
        3,
    )
    assert [r.levelno for r in said] == [logging.INFO]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_pass_through_stream_meets_a_total_deadline(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.trickle_s = 0.05  # a chunk every 50 ms, for minutes
    url = start_proxy(policy={"timeout_s": 1.0})
    body = {"model": "fake-policy", "messages": MESSAGES, "stream": True}
    started = time.monotonic()
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json=body,
        timeout=30,
        headers={"X-TTS-Strategy": "none"},
    ) as response:
        text = response.read().decode()
    assert time.monotonic() - started < 4.0
    assert '"upstream_timeout"' in text and text.rstrip().endswith("data: [DONE]")


async def drop_every_second_request(
    reader: Any, writer: Any, drops: list[int], reset: bool = False
) -> None:
    """Answer the first request on a connection, then close it on the next without answering:
    the pooled keep-alive connection a server dropped, which clients meet as a protocol error
    (closed) or a read error (``reset``: a TCP reset, as a restarting server or a proxy's idle
    timeout sends)."""
    try:
        await _answer_once(reader, writer, drops)
        if reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except asyncio.IncompleteReadError:
        pass  # the client went first
    finally:
        writer.close()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 request off ``reader`` (its body by Content-Length); its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        ),
        0,
    )
    await reader.readexactly(length)
    return head


async def _answer_once(reader: Any, writer: Any, drops: list[int]) -> None:
    for turn in range(2):
        await read_request(reader)
        if turn == 1:
            drops.append(1)
            break
        body = b'{"ok": true}'
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        await writer.drain()


@pytest.mark.parametrize(("retries", "reset"), [(1, False), (0, False), (1, True), (0, True)])
async def test_a_pooled_connection_the_upstream_dropped_is_retried(
    retries: int, reset: bool
) -> None:
    from proxy.errors import UpstreamError

    drops: list[int] = []
    server = await asyncio.start_server(
        lambda r, w: drop_every_second_request(r, w, drops, reset), "127.0.0.1", 0
    )
    port = server.sockets[0].getsockname()[1]
    config = UpstreamConfig(
        "policy",
        f"http://127.0.0.1:{port}/v1",
        None,
        2.0,
        10.0,
        4,
        retries,
        "PROXY_POLICY__TIMEOUT_S",
    )
    upstream = Upstream(config, Metrics())
    try:
        answers = [await upstream.post_json("/completions", {"i": 0})]
        if retries:
            answers += [await upstream.post_json("/completions", {"i": i}) for i in range(1, 10)]
            assert answers == [{"ok": True}] * 10 and len(drops) == 9
        else:  # the same fault without a retry: the client would have got a 502
            error = "ReadError" if reset else "RemoteProtocolError"
            with pytest.raises(UpstreamError, match=error):
                await upstream.post_json("/completions", {"i": 1})
        # a dropped keep-alive that a retry mends is no fault of the server's
        assert upstream.health.failures == (0 if retries else 1)
    finally:
        await upstream.aclose()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the handlers see the client's close and close their side
