"""Fuzzing in CI: schemathesis generates requests from the proxy's and the PRM server's own
OpenAPI schemas (bodies, the ``X-TTS-*`` headers, path parameters), a bounded number per
operation and reproducibly (derandomized). None may be a 5xx, and every error is OpenAI-shaped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
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

FUZZ = settings(
    max_examples=60,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
# Small caps keep generated searches cheap; the fuzzer still reaches every limit check.
PROXY: dict[str, Any] = {
    "search": {
        "max_budget": 8,
        "max_beam_width": 4,
        "max_max_steps": 3,
        "budget": 4,
        "max_steps": 2,
    },
    "request_timeout_s": 20,
    "policy": {"max_retries": 0},
}


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
        body = response.json()
        error = body["error"]
        if response.request.path_url.startswith("/v1/messages"):  # Anthropic's shape
            assert body["type"] == "error" and set(error) == {"type", "message"}
            assert error["message"]
        else:
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


PROXY_SPEC = create_app(ProxySettings(policy_urls=["http://127.0.0.1:1/v1"], **PROXY)).openapi()
BASES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"prompt": "hi"},
    "/v1/responses": {"input": "hi"},
    "/v1/messages": {"max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]},
}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = PROXY_SPEC["components"]["schemas"][name]
    return schema


def _takes_text(schema: dict[str, Any]) -> bool:
    schema = _resolve(schema)
    options = [_resolve(s) for s in schema.get("anyOf", [schema])]
    return any(
        o.get("type") == "string" or o.get("items", {}).get("type") == "string" for o in options
    )


def _text_fields() -> list[tuple[str, str]]:
    """Every top-level field of each searched endpoint's body, and of its ``tts`` object, that
    takes text (a string, or a list of strings)."""
    fields = []
    for path in BASES:
        body = PROXY_SPEC["paths"][path]["post"]["requestBody"]["content"]["application/json"]
        properties = _resolve(body["schema"])["properties"]
        fields += [(path, name) for name, spec in properties.items() if _takes_text(spec)]
        tts = _resolve(PROXY_SPEC["components"]["schemas"]["TtsOptions"])["properties"]
        fields += [(path, f"tts.{name}") for name, spec in tts.items() if _takes_text(spec)]
    return fields


@pytest.mark.parametrize(("path", "field"), _text_fields())
def test_a_lone_surrogate_in_any_text_field_is_a_400_naming_it(
    proxy_url: str, path: str, field: str
) -> None:
    body: dict[str, Any] = {"model": "fake-policy", **BASES[path]}
    if field.startswith("tts."):
        body["tts"] = {field[4:]: "SURROGATE"}
    else:
        body[field] = "SURROGATE"
    raw = json.dumps(body).replace('"SURROGATE"', '"a\\ud800"')
    response = httpx.post(
        proxy_url + path, content=raw, timeout=60, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, (field, response.status_code, response.text[:300])
    error = response.json()["error"]
    if path == "/v1/messages":  # Anthropic's errors have no param: the message names it
        assert error["message"].startswith(field), (field, error)
    else:
        assert error["param"] is not None and error["param"].startswith(field), (field, error)
