"""Fixtures: fake upstreams and the proxy, each on real uvicorn at 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from harness.fake_prm import FakePrm
from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.settings import ProxySettings


@pytest.fixture
def vllm() -> FakeVllm:
    return FakeVllm()


@pytest.fixture
def prm() -> FakePrm:
    return FakePrm()


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as s:
        yield s


ProxyFactory = Callable[..., str]


@pytest.fixture
def start_proxy(stack: ExitStack, vllm: FakeVllm, prm: FakePrm) -> ProxyFactory:
    """Start the fake vLLM (+ PRM unless ``with_prm=False``) and a proxy; returns the proxy URL."""

    def start(*, with_prm: bool = True, litellm_via_policy: bool = False, **overrides: Any) -> str:
        vllm_url = stack.enter_context(serve(vllm.app()))
        values: dict[str, Any] = {"policy_urls": [vllm_url + "/v1"], "policy": {"max_retries": 1}}
        if litellm_via_policy:
            values["litellm_api_base"] = vllm_url + "/v1"
            values["litellm_api_key"] = "sk-test"
        if with_prm:
            values["prm_url"] = stack.enter_context(serve(prm.app()))
        policy = values["policy"] | overrides.pop("policy", {})  # the test's own limits win
        values.update(overrides, policy=policy)
        return stack.enter_context(serve(create_app(ProxySettings(**values))))

    return start
