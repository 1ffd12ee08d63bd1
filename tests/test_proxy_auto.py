"""The proxy's side of ``auto``: the rules file, the setup profile, the reasoning prompt."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.search.plan import SearchRequest, resolve_plan
from proxy.search.profiles import default_rules, load_rules, profile_of
from proxy.settings import ProxySettings
from tests.conftest import ProxyFactory
from tests.eventually import eventually

RULES = load_rules()


def settings(**kw: Any) -> ProxySettings:
    return ProxySettings(**kw)


@pytest.mark.parametrize(
    ("model", "params", "size"),
    [
        ("Qwen2.5-1.5B-Instruct", 1.5, "small"),
        ("smollm2-135m", 0.135, "small"),
        ("Qwen2.5-7B-Instruct", 7.0, "mid"),
        ("Llama-3.1-70B-Instruct", 70.0, "mid"),
        ("Qwen2.5-72B-Instruct", 72.0, "large"),
        ("smollm2", None, "small"),
    ],
)
def test_size_class_from_the_model_name(model: str, params: float | None, size: str) -> None:
    profile = profile_of(model, "confidence", settings(), RULES)
    assert (profile.params_b, profile.size) == (params, size)


def test_size_and_family_settings_override_the_name() -> None:
    profile = profile_of(
        "my-model",
        "prm",
        settings(policy_params_b=32, policy_family="llama3", prm_url="http://x"),
        RULES,
    )
    assert profile.size == "mid" and profile.family is not None
    assert profile.family.name == "llama3"


@pytest.mark.parametrize(
    ("prm_model", "strength"),
    [
        ("Qwen2.5-Math-PRM-7B", "strong"),
        ("math-shepherd-mistral-7b-prm", "weak"),
        ("RLHFlow/Llama3.1-8B-PRM-Deepseek-Data", "weak"),
        (None, "strong"),
    ],
)
def test_scorer_strength_from_the_prm_name(prm_model: str | None, strength: str) -> None:
    s = settings(prm_url="http://prm", prm_model=prm_model)
    assert profile_of("m", "prm", s, RULES).scorer == strength
    assert profile_of("m", "confidence", s, RULES).scorer == "none"


def plan_for(model: str, scorer: str, **kw: Any) -> Any:
    s = settings(prm_url="http://prm", **kw)
    request = SearchRequest(model=model, messages=({"role": "user", "content": "q"},))
    return resolve_plan(
        request, {"x-tts-scorer": scorer}, s, RULES, served=model, request_id="chatcmpl-1"
    )


@pytest.mark.parametrize(
    ("model", "scorer", "expected"),
    [
        ("qwen2.5-1.5b-instruct", "prm", ("best_of_n", "beam_search", "particle_filtering")),
        ("qwen2.5-14b-instruct", "prm", ("dvts", "dvts", "beam_search")),
        ("qwen2.5-72b-instruct", "prm", ("best_of_n", "best_of_n", "best_of_n")),
        ("qwen2.5-1.5b-instruct", "confidence", ("majority", "best_of_n", "best_of_n")),
        ("deepseek-r1-distill-qwen-7b", "prm", ("best_of_n", "best_of_n", "best_of_n")),
        ("qwen2.5-14b-instruct", "confidence", ("majority", "deepconf", "deepconf")),
        ("qwen2.5-72b-instruct", "confidence", ("majority", "deepconf", "deepconf")),
        ("deepseek-r1-distill-qwen-14b", "confidence", ("majority", "deepconf", "deepconf")),
        ("qwen2.5-1.5b-instruct", "verifier", ("majority", "best_of_n", "best_of_n")),
    ],
)
def test_rules_cells_resolve_per_setup(model: str, scorer: str, expected: tuple[str, ...]) -> None:
    auto = plan_for(model, scorer).config.auto
    assert (auto.methods["easy"], auto.methods["medium"], auto.methods["hard"]) == expected


@pytest.mark.parametrize(
    ("overrides", "strength"),
    [
        ({}, "weak"),
        ({"verifier_format": "genprm"}, "strong"),
        ({"verifier_format": "genprm", "verifier_strength": "weak"}, "weak"),
        ({"verifier_strength": "strong"}, "strong"),
    ],
)
def test_the_verifiers_strength_follows_its_format(
    overrides: dict[str, Any], strength: str
) -> None:
    assert profile_of("m", "verifier", settings(**overrides), RULES).scorer == strength
    auto = plan_for("qwen2.5-1.5b-instruct", "verifier", **overrides).config.auto
    expected = ("best_of_n", "beam_search", "particle_filtering")
    assert (tuple(auto.methods.values()) == expected) == (strength == "strong")


def _hard_then_agreeing(prefix: str, i: int) -> str:
    """Four pilots with four answers, then every later trace answers 4."""
    return f"So the answer is \\boxed{{{[1, 2, 3, 5][i] if i < 4 else 4}}}."


def test_auto_votes_with_deepconf_for_a_mid_policy_without_a_scorer(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.script = _hard_then_agreeing
    url = start_proxy(with_prm=False, policy_params_b=14)
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
    headers = {"X-TTS-Budget": "16"}
    tts = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30).json()
    tts = tts["tts"]
    assert tts["auto"]["difficulty"] == "hard" and tts["auto"]["method"] == "deepconf"
    assert tts["deepconf"]["mode"] == "online" and tts["deepconf"]["warmup"] == 4
    pilots, *streams = vllm.completion_calls
    assert pilots["n"] == 4 and pilots["logprobs"] == 5 and not pilots.get("stream")
    assert streams and all(c.get("stream") and c.get("n", 1) == 1 for c in streams)
    assert vllm.streams_opened == len(streams) and tts["budget_spent"] <= 16


def test_weak_prm_prefers_votes_over_search() -> None:
    auto = plan_for("qwen2.5-1.5b-instruct", "prm", prm_model="math-shepherd").config.auto
    assert set(auto.methods.values()) <= {"majority", "best_of_n"}


def test_family_sampling_defaults_apply_when_the_request_sets_none() -> None:
    config = plan_for("deepseek-r1-distill-qwen-1.5b", "prm").config
    assert (config.temperature, config.top_p) == (0.6, 0.95)


def test_a_bad_rules_file_fails_naming_the_cell(tmp_path: Path) -> None:
    text = default_rules().read_text().replace('hard = "particle_filtering"', 'hard = "mcts"', 1)
    bad = tmp_path / "rules.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match=r"rules\.small\.strong"):
        load_rules(bad)


def test_user_rules_file_overrides_the_table(start_proxy: ProxyFactory, tmp_path: Path) -> None:
    text = (
        default_rules()
        .read_text()
        .replace('[rules.small.none]\neasy = "majority"', '[rules.small.none]\neasy = "best_of_n"')
    )
    custom = tmp_path / "rules.toml"
    custom.write_text(text)
    url = start_proxy(with_prm=False, auto_rules_file=custom)
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
    tts = httpx.post(url + "/v1/chat/completions", json=body, timeout=30).json()["tts"]
    assert tts["auto"]["difficulty"] == "easy" and tts["auto"]["method"] == "best_of_n"


def test_reasoning_prompt_added_for_a_known_family(
    start_proxy: ProxyFactory, vllm: FakeVllm
) -> None:
    vllm.model = "qwen2.5-1.5b-instruct"
    url = start_proxy()
    body = {"model": vllm.model, "messages": [{"role": "user", "content": "2+2?"}]}
    headers = {"X-TTS-Strategy": "majority"}
    tts = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30).json()
    assert tts["tts"]["reasoning_prompt"] == "qwen2_5"
    assert (
        "<|im_start|>system\nPlease reason step by step" in vllm.completion_calls[-1]["prompt"][0]
    )
    body["messages"] = [{"role": "system", "content": "Be terse."}, *body["messages"]]
    tts = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30).json()
    assert tts["tts"]["reasoning_prompt"] is None  # the request's own system prompt wins
    assert "Please reason" not in vllm.completion_calls[-1]["prompt"][0]


def _settled_early(prefix: str, i: int) -> str:
    """The first four samples answer 3 at once; the rest take 40 tokens to agree."""
    return "\\boxed{3}" if i < 4 else "so " * 40 + "\\boxed{3}"


def test_concurrent_auto_stops_the_streams_once_the_vote_settles(
    stack: ExitStack, tmp_path: Path
) -> None:
    """``X-TTS-Auto-Mode: concurrent`` streams the cap at once and closes what is left when the
    vote settles (the fake sees them closed); a rules file's ``[auto] mode`` does the same."""
    vllm = FakeVllm(script=_settled_early)
    upstream = stack.enter_context(serve(vllm.app())) + "/v1"
    url = stack.enter_context(serve(create_app(ProxySettings(policy_urls=[upstream]))))
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "1+2?"}]}
    headers = {"X-TTS-Strategy": "auto", "X-TTS-Budget": "16", "X-TTS-Auto-Mode": "concurrent"}
    data = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60).json()
    report = data["tts"]["auto"]
    assert report["mode"] == "concurrent" and report["streams_stopped"] == 12
    assert (
        data["tts"]["budget_spent"] == 16
        and "\\boxed{3}" in data["choices"][0]["message"]["content"]
    )
    eventually(lambda: vllm.streams_closed_early == 12, "the 12 streams closed", 5)
    generated = sum(u["completion_tokens"] for u in vllm.reported_usage)
    # what the proxy read before it closed each stream: never more than the fake sent
    assert data["usage"]["completion_tokens"] <= generated < 4 + 12 * 41

    rules = tmp_path / "rules.toml"
    rules.write_text("[auto]\nmode = 'concurrent'\n")
    url = stack.enter_context(
        serve(create_app(ProxySettings(policy_urls=[upstream], auto_rules_file=rules)))
    )
    headers.pop("X-TTS-Auto-Mode")
    data = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60).json()
    assert data["tts"]["auto"]["mode"] == "concurrent"
    headers["X-TTS-Auto-Mode"] = "sequential"  # the request's own mode wins
    data = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=60).json()
    assert data["tts"]["auto"]["mode"] == "sequential"
