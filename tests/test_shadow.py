"""Shadow A/B in the proxy: the same request goes to a baseline (a fake large API through
litellm) while we search; the user gets only our answer, at once, and both sides land in the
experiment store whatever the baseline does."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import ValidationError

from experiments import Comparison
from experiments.store import ExperimentStore
from harness.fake_api import FakeChatApi
from harness.fake_servers import FakeVllm
from harness.servers import free_port, serve
from proxy.settings import ProxySettings
from tests.conftest import ProxyFactory
from tests.eventually import eventually
from tests.test_proxy_api import MESSAGES, ask, client
from tts_eval.__main__ import main


@pytest.fixture
def big(stack: ExitStack) -> Iterator[tuple[FakeChatApi, str]]:
    fake = FakeChatApi()
    yield fake, stack.enter_context(serve(fake.app())) + "/v1"
    if fake.gate is not None:
        fake.gate.set()  # let the proxy's shutdown finish its comparisons


def stored(path: Path, want: int = 1, timeout_s: float = 20.0) -> list[Comparison]:
    async def read() -> list[Comparison]:
        store = await ExperimentStore.open(str(path))
        try:
            return await store.comparisons()
        finally:
            await store.aclose()

    def enough() -> list[Comparison]:
        records = asyncio.run(read()) if path.exists() else []
        return records if len(records) >= want else []

    if want == 0:  # what is stored now (after the request that must not store anything ended)
        return asyncio.run(read()) if path.exists() else []
    return eventually(enough, f"{want} comparisons stored", timeout_s)


def shadow_proxy(start: ProxyFactory, api_url: str, db: Path, **overrides: Any) -> str:
    values: dict[str, Any] = {
        "litellm_api_base": api_url,
        "litellm_api_key": "sk-test",
        "litellm_routes": {"big": "openai/fake-big"},
        "store_url": f"sqlite:///{db}",
        "policy_usd_per_mtok": 0.2,
    }
    values.update(overrides)
    return start(with_prm=False, **values)


def test_both_sides_are_recorded_and_usage_is_ours_alone(
    start_proxy: ProxyFactory, big: tuple[FakeChatApi, str], tmp_path: Path
) -> None:
    db = tmp_path / "exp.sqlite"
    url = shadow_proxy(start_proxy, big[1], db)
    plain = ask(url, "best_of_n", headers={"X-TTS-Budget": "4"})
    compared = ask(
        url,
        "best_of_n",
        headers={"X-TTS-Budget": "4", "X-TTS-Compare": "big", "X-TTS-Reference": "4"},
    )
    assert compared.usage == plain.usage  # the baseline's tokens are not the user's
    assert compared.model_extra["tts"]["compare"] == {"model": "big", "status": "recording"}
    [record] = stored(db)
    assert record.request_id == compared.id
    assert (record.strategy, record.budget, record.reference) == ("best_of_n", 4, "4")
    assert record.primary.model == "fake-policy" and record.primary.answer == "4"
    assert record.primary.completion_tokens == compared.usage.completion_tokens
    assert record.primary.cost_usd == pytest.approx(compared.usage.total_tokens * 0.2e-6)
    assert record.baseline.model == "openai/fake-big" and record.baseline.status == "ok"
    assert record.baseline.answer == "4" and record.baseline.completion_tokens == 6
    assert record.agree is True and record.match == "math"
    assert record.prompt is None and record.primary.text is None  # text storage is off
    assert len(big[0].calls) == 1 and not big[0].calls[0].get("stream")


def test_a_slow_baseline_never_delays_the_answer(
    start_proxy: ProxyFactory, big: tuple[FakeChatApi, str], tmp_path: Path
) -> None:
    fake, api_url = big
    fake.gate = threading.Event()
    db = tmp_path / "exp.sqlite"
    url = shadow_proxy(start_proxy, api_url, db, store_text=True)
    completion = ask(url, "majority", headers={"X-TTS-Compare": "big"})
    assert completion.choices[0].message.content
    # the baseline's call may reach its server after our answer
    eventually(lambda: fake.calls, "the baseline called", 10)
    assert len(fake.calls) == 1 and fake.finished == 0  # answered while the baseline hangs
    assert stored(db, want=0) == []
    fake.gate.set()
    [record] = stored(db)
    assert record.baseline.status == "ok" and record.baseline.text is not None
    assert record.prompt is not None and "2 + 2" in record.prompt


def test_streamed_requests_are_compared_too(
    start_proxy: ProxyFactory, big: tuple[FakeChatApi, str], tmp_path: Path
) -> None:
    db = tmp_path / "exp.sqlite"
    url = shadow_proxy(start_proxy, big[1], db)
    chunks = list(ask(url, "majority", stream=True, headers={"X-TTS-Compare": "big"}))
    assert chunks
    [record] = stored(db)
    assert record.baseline.status == "ok" and record.agree is not None


@pytest.mark.parametrize("fault", ["failing", "down", "timeout"])
def test_a_broken_baseline_is_recorded_as_such(
    start_proxy: ProxyFactory, big: tuple[FakeChatApi, str], tmp_path: Path, fault: str
) -> None:
    fake, api_url = big
    overrides: dict[str, Any] = {}
    if fault == "failing":
        fake.fail_statuses = [500] * 10
    elif fault == "down":
        api_url = f"http://127.0.0.1:{free_port()}/v1"
    else:
        fake.gate = threading.Event()
        overrides["shadow"] = {"timeout_s": 0.5}
    db = tmp_path / "exp.sqlite"
    url = shadow_proxy(start_proxy, api_url, db, **overrides)
    completion = ask(url, "majority", headers={"X-TTS-Compare": "big"})
    assert completion.choices[0].message.content
    [record] = stored(db)
    assert record.baseline.status == ("timeout" if fault == "timeout" else "error")
    assert record.baseline.error and record.agree is None
    assert record.primary.answer == "4"


@pytest.mark.parametrize("status", [400, 500])
def test_a_large_api_error_quoting_the_prompt_reaches_no_body_log_or_store(
    start_proxy: ProxyFactory,
    big: tuple[FakeChatApi, str],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    status: int,
) -> None:
    fake, api_url = big
    fake.quote_request_in_errors = True
    fake.fail_statuses = [status] * 10
    db = tmp_path / "exp.sqlite"
    url = shadow_proxy(start_proxy, api_url, db, store_text=False, policy={"max_retries": 0})
    secret = [{"role": "user", "content": "my card number is 4111-1111"}]
    with caplog.at_level(logging.DEBUG):
        chat = url + "/v1/chat/completions"
        routed = httpx.post(chat, timeout=30, json={"model": "big", "messages": secret})
        headers = {"X-TTS-Strategy": "majority", "X-TTS-Compare": "big"}
        body = {"model": "fake-policy", "messages": secret}
        compared = httpx.post(chat, timeout=30, json=body, headers=headers)
        [record] = stored(db)
    assert routed.status_code == (400 if status == 400 else 502)
    assert "4111" not in routed.text and compared.status_code == 200
    assert record.baseline.status == "error" and "4111" not in (record.baseline.error or "")
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not any("4111" in line for line in loud)
    assert any("4111" in r.getMessage() for r in caplog.records)  # it did reach debug: a real test


def test_configured_sampling_and_the_pending_bound(
    start_proxy: ProxyFactory, big: tuple[FakeChatApi, str], tmp_path: Path
) -> None:
    fake, api_url = big
    fake.gate = threading.Event()
    db = tmp_path / "exp.sqlite"
    url = shadow_proxy(start_proxy, api_url, db, shadow={"model": "big", "max_pending": 1})
    first = ask(url, "cot")  # no header: the configured baseline, sample rate 1.0
    second = ask(url, "cot")
    assert first.model_extra["tts"]["compare"]["status"] == "recording"
    assert second.model_extra["tts"]["compare"]["status"] == "skipped"
    metrics = httpx.get(url + "/metrics").text
    assert 'tts_shadow_comparisons_total{outcome="skipped"} 1.0' in metrics
    fake.gate.set()
    assert len(stored(db)) == 1
    none = shadow_proxy(
        start_proxy, api_url, tmp_path / "other.sqlite", shadow={"model": "big", "sample_rate": 0.0}
    )
    assert "compare" not in ask(none, "cot").model_extra["tts"]


def test_a_bad_store_url_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="unsupported store URL scheme 'mysql'"):
        ProxySettings(store_url="mysql://nowhere/db")


def test_report_from_the_store(
    start_proxy: ProxyFactory, big: tuple[FakeChatApi, str], tmp_path: Path
) -> None:
    fake, api_url = big
    fake.answer = lambda _m: "\\boxed{5}"
    db = tmp_path / "exp.sqlite"
    url = shadow_proxy(start_proxy, api_url, db)
    for budget in ("2", "4"):
        ask(
            url,
            "majority",
            headers={"X-TTS-Compare": "big", "X-TTS-Budget": budget, "X-TTS-Reference": "4"},
        )
    assert len(stored(db, want=2)) == 2
    out = tmp_path / "report"
    assert main(["report", "--store", f"sqlite:///{db}", "--out", str(out), "--since", "1h"]) == 0
    text = (out / "report.md").read_text()
    assert (
        "| majority | 2 | openai/fake-big | 1 | 0.0 (0.0-79.3) | 0 | 100.0 (n=1) | 0.0 (n=1) |"
        in text
    )
    assert (out / "agreement_vs_budget.png").stat().st_size > 0
    assert (out / "accuracy_vs_budget.png").exists()


def test_a_failed_search_abandons_its_comparison(
    start_proxy: ProxyFactory, vllm: FakeVllm, big: tuple[FakeChatApi, str], tmp_path: Path
) -> None:
    fake, api_url = big
    fake.gate = threading.Event()
    db = tmp_path / "exp.sqlite"
    url = shadow_proxy(start_proxy, api_url, db)
    vllm.fail_statuses = [500] * 10
    with pytest.raises(openai.InternalServerError):
        client(url).chat.completions.create(
            model="fake-policy",
            messages=MESSAGES,
            extra_headers={"X-TTS-Strategy": "majority", "X-TTS-Compare": "big"},
        )
    abandoned = 'tts_shadow_comparisons_total{outcome="abandoned"} 1.0'
    eventually(lambda: abandoned in httpx.get(url + "/metrics").text, "counted abandoned", 10)
    assert stored(db, want=0) == []


def test_compare_on_requests_that_are_not_searched_is_reported_ignored(
    start_proxy: ProxyFactory, big: tuple[FakeChatApi, str], tmp_path: Path
) -> None:
    url = shadow_proxy(start_proxy, big[1], tmp_path / "exp.sqlite")
    plain = ask(url, "none", headers={"X-TTS-Compare": "big"})
    assert plain.model_extra["tts"]["ignored_params"] == ["compare"]
    routed = ask(url, model="big", headers={"X-TTS-Compare": "big"})
    assert routed.model_extra["tts"]["ignored_params"] == ["compare"]
    assert len(big[0].calls) == 1  # the route's own call, no comparison
