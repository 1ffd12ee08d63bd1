"""Fuzzing in CI: schemathesis generates requests from the proxy's and the PRM server's own
OpenAPI schemas (bodies, the ``X-TTS-*`` headers, path parameters), a bounded number per
operation and reproducibly (derandomized). None may be a 5xx, and every error is OpenAI-shaped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from harness.fake_servers import FakeVllm
from harness.prm_models import build_checkpoint
from harness.servers import serve
from prm_server.app import create_app as create_prm_app
from prm_server.scorer import load_hf_scorer
from prm_server.settings import PrmServerSettings
from proxy.app import create_app
from proxy.settings import ProxySettings

FUZZ = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                suppress_health_check=list(HealthCheck))  # fmt: skip
# Small caps keep generated searches cheap; the fuzzer still reaches every limit check.
PROXY: dict[str, Any] = {
    "max_budget": 8, "max_beam_width": 4, "max_max_steps": 3, "default_budget": 4,
    "default_max_steps": 2, "request_timeout_s": 20, "policy_max_retries": 0,
}  # fmt: skip


def _operations(spec: dict[str, Any]) -> dict[str, Any]:
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    return {op.label: op for op in operations}


PROXY_OPERATIONS = _operations(
    create_app(ProxySettings(policy_urls=["http://127.0.0.1:1/v1"], **PROXY)).openapi()
)
PRM_OPERATIONS = _operations(create_prm_app(PrmServerSettings()).openapi())


def _check(response: Any) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert {"message", "type", "param", "code"} <= set(error) and error["message"]


@pytest.fixture(scope="module")
def proxy_url() -> Iterator[str]:
    with serve(FakeVllm().app()) as upstream:
        settings_ = ProxySettings(policy_urls=[upstream + "/v1"], **PROXY)
        with serve(create_app(settings_)) as url:
            yield url


@pytest.fixture(scope="module")
def prm_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    checkpoint: Path = build_checkpoint("qwen_prm", tmp_path_factory.mktemp("fuzz") / "prm")
    scorer = load_hf_scorer(checkpoint, "qwen_prm", name="tiny", device="cpu", dtype="float32")
    with serve(create_prm_app(PrmServerSettings(max_candidates=8), scorer=scorer)) as url:
        yield url


@pytest.mark.parametrize("label", sorted(PROXY_OPERATIONS))
def test_proxy_never_answers_5xx(proxy_url: str, label: str) -> None:
    @FUZZ
    @given(PROXY_OPERATIONS[label].as_strategy())
    def check(case: Any) -> None:
        _check(case.call(base_url=proxy_url, timeout=60))

    check()


@pytest.mark.parametrize("label", sorted(PRM_OPERATIONS))
def test_prm_server_never_answers_5xx(prm_url: str, label: str) -> None:
    @FUZZ
    @given(PRM_OPERATIONS[label].as_strategy())
    def check(case: Any) -> None:
        _check(case.call(base_url=prm_url, timeout=60))

    check()
