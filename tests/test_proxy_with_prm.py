"""The proxy's beam search scored by the real PRM server (a tiny random qwen_prm) over HTTP."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import httpx
import openai

from harness.fake_servers import FakeVllm
from harness.prm_models import build_checkpoint
from harness.servers import serve
from prm_server.app import create_app as create_prm_app
from prm_server.settings import PrmServerSettings
from proxy.app import create_app
from proxy.settings import ProxySettings


def test_beam_search_through_a_real_prm_server(tmp_path: Path, stack: ExitStack) -> None:
    checkpoint = build_checkpoint("qwen_prm", tmp_path / "qwen_prm")
    prm_settings = PrmServerSettings(model=checkpoint, family="qwen_prm", served_name="tiny-prm")
    prm_app = create_prm_app(prm_settings)
    prm_url = stack.enter_context(serve(prm_app))
    vllm_url = stack.enter_context(serve(FakeVllm().app()))
    settings = ProxySettings(policy_urls=[vllm_url + "/v1"], prm_url=prm_url)
    url = stack.enter_context(serve(create_app(settings)))
    client = stack.enter_context(
        openai.OpenAI(
            _strict_response_validation=True, max_retries=0, base_url=url + "/v1", api_key="unused"
        )
    )
    completion = client.chat.completions.create(
        model="fake-policy",
        messages=[{"role": "user", "content": "What is 2 + 2?"}],
        extra_headers={"X-TTS-Strategy": "beam_search", "X-TTS-Budget": "8"},
    )
    tts = completion.model_extra["tts"] if completion.model_extra else {}
    assert tts["scorer"] == "prm:tiny-prm" and tts["prm_calls"] == tts["policy_calls"] == 3
    assert tts["prm_tokens"] > 0
    assert all(0.0 <= c["score"] <= 1.0 for c in tts["candidates"])
    assert "\\boxed{" in (completion.choices[0].message.content or "")
    # Later depths re-sent earlier steps: the PRM answered those from its step-score cache.
    metrics = httpx.get(prm_url + "/metrics").text
    hits = next(line for line in metrics.splitlines() if line.startswith("prm_cache_hits_total"))
    assert float(hits.split()[-1]) > 0
