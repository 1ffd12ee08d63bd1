"""vLLM's tokenizer endpoints through the proxy (``/tokenize``, ``/detokenize``,
``/tokenizer_info`` at the server root): relayed to the policy server as written, the model
checked and sent by its served name, errors in the OpenAI shape."""

from __future__ import annotations

import json

import httpx
import pytest

from harness.fake_servers import FakeVllm
from tests.conftest import ProxyFactory


def test_tokenize_and_detokenize_round_trip(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()
    tokens = httpx.post(url + "/tokenize", json={"model": "fake-policy", "prompt": "2+2="})
    assert tokens.status_code == 200, tokens.text
    assert tokens.json()["tokens"] == [ord(c) for c in "2+2="]
    assert tokens.json()["count"] == 4
    text = httpx.post(url + "/detokenize", json={"tokens": tokens.json()["tokens"]})
    assert text.status_code == 200 and text.json()["prompt"] == "2+2="
    assert vllm.tokenizer_calls[0] == {"model": "fake-policy", "prompt": "2+2="}


def test_a_chat_is_tokenized_with_the_policy_template(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy()
    body = {"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": True}
    reply = httpx.post(url + "/tokenize", json=body)
    assert reply.status_code == 200, reply.text
    text = "".join(chr(t) for t in reply.json()["tokens"])
    assert "hi" in text and text.startswith("<|im_start|>")
    assert vllm.tokenizer_calls[-1] == body  # extra fields pass as written


def test_an_alias_is_sent_as_the_served_model(start_proxy: ProxyFactory, vllm: FakeVllm) -> None:
    url = start_proxy()
    reply = httpx.post(
        url + "/tokenize", json={"model": "beam_search-8/fake-policy", "prompt": "x"}
    )
    assert reply.status_code == 200, reply.text
    assert vllm.tokenizer_calls[-1]["model"] == "fake-policy"


def test_an_unknown_model_is_a_404_naming_the_known_ones(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    url = start_proxy()
    reply = httpx.post(url + "/tokenize", json={"model": "other", "prompt": "x"})
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
    assert "fake-policy" in error["message"]
    assert vllm.tokenizer_calls == []  # nothing reached the policy server


def test_tokenizer_info_is_relayed(start_proxy: ProxyFactory) -> None:
    url = start_proxy()
    reply = httpx.get(url + "/tokenizer_info")
    assert reply.status_code == 200, reply.text
    assert reply.json()["tokenizer_class"] == "CharacterTokenizer"


def test_a_policy_without_tokenizer_info_is_a_404_that_says_why(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.tokenizer_info = False  # vLLM without --enable-tokenizer-info-endpoint
    url = start_proxy()
    reply = httpx.get(url + "/tokenizer_info")
    assert reply.status_code == 404
    assert "--enable-tokenizer-info-endpoint" in reply.json()["error"]["message"]
    health = httpx.get(url + "/health/ready")  # not the replica's fault: it stays in
    assert health.status_code == 200 and health.json()["policy_replicas_available"] == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "\ud800"}, "prompt"),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages.0.content"),
    ],
)
def test_text_that_is_not_unicode_is_the_clients_400(
    start_proxy: ProxyFactory, vllm: FakeVllm, body: dict[str, object], param: str
) -> None:
    url = start_proxy()
    raw = httpx.post(
        url + "/tokenize",
        content=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert raw.status_code == 400, raw.text
    assert raw.json()["error"]["param"] == param
    assert vllm.tokenizer_calls == []


def test_the_key_is_checked(start_proxy: ProxyFactory) -> None:
    url = start_proxy(api_keys=["sk-1"])
    assert httpx.post(url + "/tokenize", json={"prompt": "x"}).status_code == 401
    keyed = httpx.post(
        url + "/tokenize", json={"prompt": "x"}, headers={"Authorization": "Bearer sk-1"}
    )
    assert keyed.status_code == 200


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tokenize", {"model": "fake-policy"}),  # neither prompt nor messages
        ("/tokenize", {"prompt": "x", "messages": [{"role": "user", "content": "x"}]}),
        ("/detokenize", {"tokens": ["a"]}),
        ("/detokenize", {"tokens": [-1]}),
    ],
)
def test_a_malformed_body_is_the_clients_400(
    start_proxy: ProxyFactory, vllm: FakeVllm, path: str, body: dict[str, object]
) -> None:
    url = start_proxy()
    reply = httpx.post(url + path, json=body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert vllm.tokenizer_calls == []
