"""``tts-eval calibrate``: the replay equals a live ``auto`` on the same drawn samples, the fit
finds the optimum of banks whose accuracy curves are known by construction, and the file it writes
loads in the proxy and changes what ``auto`` spends; bad or foreign files stop the proxy."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import re
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.fake_servers import FakeVllm
from harness.servers import serve
from proxy.app import create_app
from proxy.search.profiles import RulesError, load_rules
from proxy.settings import ProxySettings
from strategies import AutoCell, AutoConfig, SearchConfig, search
from tests.conftest import ProxyFactory
from tests.eventually import eventually
from tests.fakes import FakePolicy, FakeScorer
from tts_eval.__main__ import main
from tts_eval.calibration import (
    BINS as ALL_BINS,
)
from tts_eval.calibration import (
    NO_ANSWER,
    Bank,
    Bin,
    Cell,
    MissingSearchError,
    Searched,
    banks_of,
    replay,
    search_key,
)
from tts_eval.fit import Objective, fit
from tts_eval.rows import Row, read_rows
from tts_eval.steps import searched_of, step_runs

CAP = 16
BINS = ("easy", "medium", "hard")


# -- replay == live -----------------------------------------------------------------------------
def _live(answers: list[int], scores: list[float], cells: dict[Bin, Cell], pilots: int) -> Any:
    """``auto`` over a fake policy that serves these samples in this order (no digits but the
    boxed answer, so nothing else reads as an answer), scored by exact text."""
    texts = [
        (f"so \\boxed{{{a}}} " if a >= 0 else "no idea ") + "w " * i for i, a in enumerate(answers)
    ]
    policy = FakePolicy({"": texts}, persist_offsets=True)
    scorer = FakeScorer(by_text={t.strip(): s for t, s in zip(texts, scores, strict=True)})
    auto_cells = {
        b: AutoCell(c.method, c.budget, c.confidence, c.chunk, name=b) for b, c in cells.items()
    }
    methods: Any = dict.fromkeys(BINS, "majority")
    auto = AutoConfig(methods=methods, pilots=pilots, cells=auto_cells)
    config = SearchConfig(budget=CAP, beam_width=4, auto=auto)
    result = asyncio.run(search("auto", "q", policy, scorer, config))
    return result, policy


def _bank(answers: list[int], scores: list[float], gold: int, tokens: list[int]) -> Bank:
    labels = tuple(a if a >= 0 else NO_ANSWER for a in answers)
    return Bank("p", None, labels, gold, tuple(scores), tuple(tokens))


cell_st = st.builds(
    Cell,
    st.sampled_from(["pilots", "majority", "best_of_n"]),
    st.sampled_from([8, 12, 16]),
    st.sampled_from([0.8, 0.9, 0.95, 0.99]),
    st.sampled_from([1, 2, 4]),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-1, 3), min_size=CAP, max_size=CAP),
    st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), min_size=CAP, max_size=CAP),
    cell_st,
    cell_st,
    cell_st,
    st.sampled_from([2, 4, 6]),
)
def test_replay_equals_a_live_auto_on_the_same_drawn_samples(
    answers: list[int], scores: list[float], easy: Cell, medium: Cell, hard: Cell, pilots: int
) -> None:
    given_cells: dict[Bin, Cell] = {"easy": easy, "medium": medium, "hard": hard}
    cells = {
        b: c if c.budget > pilots else Cell(c.method, 8, c.confidence, c.chunk)
        for b, c in given_cells.items()
    }
    result, policy = _live(answers, scores, cells, pilots)
    drawn = sum(call.n for call in policy.calls)
    tokens = [len(re.findall(r"\S+\s*|\s+", t)) for t in policy.script[""]]
    bank = _bank(answers, scores, 1, tokens)
    difficulty, outcome = replay(bank, range(CAP), pilots, cells, CAP)
    assert result.decision.difficulty == difficulty
    assert outcome.samples == drawn == result.usage.generations
    assert outcome.calls == len(policy.calls)
    assert outcome.tokens == result.usage.completion_tokens
    live_answer = result.answer
    assert (live_answer == "1") == outcome.correct, (live_answer, outcome)


# -- the fit ------------------------------------------------------------------------------------
def _banks(kind: str, count: int) -> list[Bank]:
    """Problems whose accuracy curves are known: ``solved`` (every sample right), ``unsolvable``
    (every sample a different wrong answer), ``votes_pay`` (6 of 16 right, the rest different
    wrong answers: the pilots rarely see two right ones, sixteen samples nearly always win)."""
    banks = []
    for k in range(count):
        if kind == "solved":
            labels = [0] * CAP
        elif kind == "unsolvable":
            labels = list(range(1, CAP + 1))
        else:
            labels = [0] * 6 + list(range(1, CAP - 5))
            random.Random(k).shuffle(labels)
        banks.append(Bank(f"{kind}{k}", None, tuple(labels), 0, (0.5,) * CAP, (100,) * CAP))
    return banks


def test_the_fit_answers_from_the_pilots_where_more_samples_cannot_pay() -> None:
    fitted = fit([*_banks("solved", 6), *_banks("unsolvable", 6)], CAP, orders=40)
    assert set(fitted.cells) == {"easy", "hard"}  # 4 pilots: all agree, or none repeats
    for difficulty in ("easy", "hard"):
        chosen = fitted.cells[difficulty].chosen
        assert chosen.cell.method == "pilots" and chosen.tokens == 400
    assert fitted.accuracy == 0.5 and fitted.tokens == 400
    assert fitted.confusion["easy"]["easy"] == 6 and fitted.confusion["hard"]["hard"] == 6


def test_the_fit_spends_where_votes_pay_and_not_where_they_cannot() -> None:
    banks = [*_banks("votes_pay", 30), *_banks("unsolvable", 10)]
    objectives: tuple[Objective, ...] = ("accuracy", "tokens-within-interval")
    for objective in objectives:
        fitted = fit(banks, CAP, orders=60, objective=objective)
        hard = fitted.cells["hard"]
        pilots = next(c for c in hard.tried if c.cell.method == "pilots")
        assert hard.chosen.cell.method != "pilots", objective
        assert hard.chosen.accuracy > pilots.accuracy + 0.2
    # With the unsolvable problems alone in their bin, sampling more cannot pay.
    alone = fit(_banks("unsolvable", 10), CAP, orders=20, objective="tokens-within-interval")
    assert alone.cells["hard"].chosen.cell.method == "pilots"


def test_utility_trades_accuracy_for_tokens_at_the_stated_weight() -> None:
    banks = _banks("votes_pay", 20)
    cheap = fit(banks, CAP, orders=30, objective="utility", token_weight=10.0)
    assert cheap.cells["hard"].chosen.cell.method == "pilots"  # tokens priced out of reach
    rich = fit(banks, CAP, orders=30, objective="utility", token_weight=0.0)
    assert rich.cells["hard"].chosen.cell.method != "pilots"


def test_a_step_cell_is_chosen_where_its_live_search_pays_judged_on_the_problems_it_ran() -> None:
    """Voting cannot solve ``unsolvable`` problems; a live beam search given the 12 generations
    a ``beam_search@16`` cell leaves after 4 pilots solves them. Half of them ran it."""
    searched = Searched(correct=True, tokens=900, calls=3, latency_s=2.0)
    hard = [
        dataclasses.replace(b, searches={search_key("beam_search", 12): searched} if k % 2 else {})
        for k, b in enumerate(_banks("unsolvable", 12))
    ]
    fitted = fit(
        [*_banks("solved", 6), *hard], CAP, orders=20, grid={"steps": [("beam_search", 16)]}
    )
    chosen = fitted.cells["hard"].chosen
    assert chosen.cell.method == "beam_search" and chosen.cell.budget == 16
    assert chosen.problems == 6 and chosen.accuracy == 1.0 and chosen.tokens == 400 + 900
    assert chosen.estimate == 1.0  # the pilots' 0 % plus the paired gap of 100 points
    assert fitted.cells["easy"].chosen.cell.method == "pilots"  # no search on solved problems
    # the fitted auto is replayed on the problems that have every search it may run
    assert fitted.problems == 6 and fitted.accuracy == 1.0
    with pytest.raises(MissingSearchError, match="unsolvable0 has no live beam_search\\+12"):
        replay(hard[0], range(CAP), 4, {b: chosen.cell for b in ALL_BINS}, CAP)
    # too few generations after the pilots for one beam: not a step cell
    assert all(
        c.cell.method != "beam_search"
        for c in fit(hard, CAP, orders=5, pilots=(6,), grid={"steps": [("beam_search", 8)]})
        .cells["hard"]
        .tried
    )


# -- the command, the file, the proxy -----------------------------------------------------------
PROBLEMS = [
    {"id": f"solved{i}", "problem": f"Solved {i}: what is 2+2?", "answer": "4"} for i in range(3)
] + [
    {"id": f"unsolvable{i}", "problem": f"Unsolvable {i}: the hard one", "answer": "1"}
    for i in range(3)
]


def by_problem(prompt: str, i: int) -> str:
    """Right every time on "Solved" problems; a new wrong answer each sample on the others."""
    if "Solved" in prompt:
        return "Two and two.\n\nSo the answer is \\boxed{4}"
    return f"Guessing.\n\nSo the answer is \\boxed{{{100 + i}}}"


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    return path


def calibrate(proxy: str, dataset: Path, out: Path, *extra: str) -> int:
    return main(
        [
            "calibrate",
            "--dataset",
            str(dataset),
            "--endpoint",
            proxy + "/v1",
            "--model",
            "fake-policy",
            "--out",
            str(out),
            "--orders",
            "20",
            "--retries",
            "0",
            *extra,
        ]
    )


def ask_auto(url: str, problem: str) -> dict[str, Any]:
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": problem}]}
    headers = {"X-TTS-Strategy": "auto", "X-TTS-Budget": str(CAP), "X-TTS-Scorer": "confidence"}
    response = httpx.post(url + "/v1/chat/completions", json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


def test_calibrate_writes_a_file_that_changes_autos_spend(
    start_proxy: ProxyFactory, vllm: FakeVllm, dataset: Path, tmp_path: Path
) -> None:
    vllm.prompt_script = by_problem
    proxy = start_proxy(with_prm=False)
    out = tmp_path / "calibration"
    assert calibrate(proxy, dataset, out) == 0
    rules_path = out / "auto_rules.toml"
    for name in ("calibration.md", "frontier-confidence.png", "calibration.html"):
        assert (out / name).stat().st_size > 0
    bank = read_rows([out / "bank"])
    assert len(bank) == len(PROBLEMS)
    for row in bank:
        samples = row.tts["samples"]
        assert len(samples) == CAP and sum(s["tokens"] for s in samples) == row.completion_tokens
    rules = load_rules(rules_path)
    assert rules.model == "fake-policy" and rules.provenance["scorers"] == ["confidence"]
    assert rules.fitted_pilots == {"confidence": 4}
    assert {d: c.method for d, c in rules.fitted["confidence"].items()} == {
        "easy": "pilots",
        "hard": "pilots",
    }

    static = ask_auto(proxy, PROBLEMS[-1]["problem"])["tts"]
    assert static["budget_spent"] == CAP  # the shipped table samples on to the cap
    assert static["auto"]["cell"] == "rules.small.none.hard"
    fitted_proxy = start_proxy(with_prm=False, auto_rules_file=rules_path)
    for problem in (PROBLEMS[0], PROBLEMS[-1]):
        tts = ask_auto(fitted_proxy, problem["problem"])["tts"]
        assert tts["budget_spent"] == 4, tts  # the cell answers from the pilots
        auto = tts["auto"]
        assert auto["rules"] == "auto_rules.toml" and auto["method"] is None
        assert auto["cell"] == f"fitted.confidence.{auto['difficulty']}"
        assert "problems" in auto["evidence"] and "objective" in auto["evidence"]
    assert "cells fitted for confidence" in tts["auto"]["reason"] or tts["auto"]["reason"]


def test_calibrate_estimates_honours_a_spending_limit_and_resumes(
    start_proxy: ProxyFactory,
    vllm: FakeVllm,
    dataset: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vllm.prompt_script = by_problem
    proxy = start_proxy(with_prm=False)
    out = tmp_path / "calibration"
    assert calibrate(proxy, dataset, out, "--dry-run", "--max-tokens", "64") == 0
    assert "6 of 6" not in capsys.readouterr().err and not (out / "bank").exists()
    # A prior of 32 tokens a sample: 512 a problem, so 1100 tokens allow two problems.
    assert calibrate(proxy, dataset, out, "--max-tokens", "64", "--max-spend-tokens", "1100") == 0
    assert "drawing 2 of the 6" in capsys.readouterr().err
    assert len(read_rows([out / "bank"])) == 2
    calls = len(vllm.completion_calls)
    assert calibrate(proxy, dataset, out) == 0  # resumes: only the four problems left
    assert len(vllm.completion_calls) - calls == 4
    assert len(read_rows([out / "bank"])) == len(PROBLEMS)


# -- the rules file at start-up -----------------------------------------------------------------
FITTED = """[provenance]
model = "fake-policy"

[auto]
pilots = 4

[fitted.confidence.hard]
method = "pilots"
budget = 4
"""


@pytest.mark.parametrize(
    ("change", "names"),
    [
        (('method = "pilots"', 'method = "mcts"'), r"fitted\.confidence\.hard\.method"),
        (("budget = 4", "budget = 2"), r"fitted\.confidence\.hard\.budget"),
        (("budget = 4", 'budget = 4\nmode = "parallel"'), r"fitted\.confidence\.hard\.mode"),
        (("budget = 4", "budget = 4\nconfidence = 1.5"), r"fitted\.confidence\.hard\.confidence"),
        (("budget = 4", "budget = 4\nchunks = 2"), r"fitted\.confidence\.hard: unknown field"),
        (
            ("[fitted.confidence.hard]", "[fitted.confidence.tricky]"),
            r"fitted\.confidence: unknown field 'tricky'",
        ),
        (("[fitted.confidence.hard]", "[fitted.gpt.hard]"), r"fitted\.gpt"),
        (("[auto]", "[auto"), r"not valid TOML"),
    ],
)
def test_a_malformed_fitted_file_is_refused_naming_the_field(
    tmp_path: Path, change: tuple[str, str], names: str
) -> None:
    path = tmp_path / "auto_rules.toml"
    path.write_text(FITTED.replace(*change))
    with pytest.raises(RulesError, match=names):
        load_rules(path)
    with pytest.raises(RulesError, match=names):
        create_app(ProxySettings(policy_urls=["http://127.0.0.1:9/v1"], auto_rules_file=path))


def test_a_fitted_cell_may_stream_its_samples_at_once(tmp_path: Path) -> None:
    path = tmp_path / "auto_rules.toml"
    path.write_text(FITTED.replace("budget = 4", 'budget = 4\nmode = "concurrent"'))
    assert load_rules(path).fitted["confidence"]["hard"].mode == "concurrent"


def test_a_file_fitted_for_another_model_stops_the_proxy_unless_allowed(
    stack: ExitStack, vllm: FakeVllm, tmp_path: Path
) -> None:
    path = tmp_path / "auto_rules.toml"
    path.write_text(FITTED.replace('model = "fake-policy"', 'model = "qwen2.5-coder-1.5b"'))
    policy = stack.enter_context(serve(vllm.app())) + "/v1"
    settings = ProxySettings(policy_urls=[policy], auto_rules_file=path)
    # The lifespan runs the check: starlette's client runs it in-process and raises its error.
    foreign = r"fitted for model 'qwen2.5-coder-1.5b' but the policy serves 'fake-policy'"
    with pytest.raises(RulesError, match=foreign), TestClient(create_app(settings)):
        pass
    allowed = settings.model_copy(update={"auto_rules_any_model": True})
    url = stack.enter_context(serve(create_app(allowed)))
    tts = ask_auto(url, "Unsolvable: the hard one")["tts"]
    assert tts["auto"]["cell"] in ("fitted.confidence.hard", "rules.small.none.easy")
    same = tmp_path / "same.toml"
    same.write_text(FITTED)
    assert load_rules(same).model == "fake-policy"
    stack.enter_context(
        serve(create_app(ProxySettings(policy_urls=[policy], auto_rules_file=same)))
    )


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL])
def test_calibrate_resumes_after_ctrl_c_or_a_kill(
    start_proxy: ProxyFactory, vllm: FakeVllm, dataset: Path, tmp_path: Path, stop: signal.Signals
) -> None:
    vllm.prompt_script, vllm.delay_s = by_problem, 0.3
    proxy = start_proxy(with_prm=False)
    out = tmp_path / "calibration"
    command = [
        sys.executable,
        "-m",
        "tts_eval",
        "calibrate",
        "--dataset",
        str(dataset),
        "--endpoint",
        proxy + "/v1",
        "--model",
        "fake-policy",
        "--concurrency",
        "1",
        "--orders",
        "10",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        eventually(lambda: len(read_rows([out / "bank"])) >= 2, "two bank rows", 60)
        process.send_signal(stop)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == (130 if stop == signal.SIGINT else -signal.SIGKILL), output
    kept = {row.id for row in read_rows([out / "bank"])}
    assert 2 <= len(kept) < len(PROBLEMS) and not (out / "auto_rules.toml").exists()
    calls = len(vllm.completion_calls)
    vllm.delay_s = 0.0
    assert calibrate(proxy, dataset, out) == 0
    # Nothing kept is drawn again (a request cut off by the kill may still reach vLLM: it is
    # for a problem that was not kept, so it is drawn again either way).
    texts = {p["id"]: p["problem"] for p in PROBLEMS}
    later = [json.dumps(call) for call in vllm.completion_calls[calls:]]
    assert not [i for i in kept if any(texts[i] in prompt for prompt in later)]
    assert {row.id for row in read_rows([out / "bank"])} == set(texts)
    assert load_rules(out / "auto_rules.toml").provenance["problems"] == len(PROBLEMS)


def test_one_bank_per_scorer_and_one_file_with_each_scorers_cells(
    start_proxy: ProxyFactory, vllm: FakeVllm, dataset: Path, tmp_path: Path
) -> None:
    vllm.prompt_script = by_problem
    proxy = start_proxy(with_prm=False)
    out = tmp_path / "calibration"
    scorers = ["--scorer", "confidence", "--scorer", "verifier", "--pilots", "3,4"]
    assert calibrate(proxy, dataset, out, *scorers) == 0
    for scorer in ("confidence", "verifier"):
        rows = read_rows([out / f"bank-{scorer}"])
        assert len(rows) == len(PROBLEMS)
        assert {r.tts["scorer"].split(":")[0] for r in rows} == {scorer}
        assert (out / f"frontier-{scorer}.png").stat().st_size > 0
    rules = load_rules(out / "auto_rules.toml")
    assert set(rules.fitted) == {"confidence", "verifier"}
    assert rules.provenance["scorers"] == ["confidence", "verifier"]
    # 3 pilots settle these problems as well as 4 do, for fewer tokens
    assert rules.fitted_pilots == {"confidence": 3, "verifier": 3}
    fitted_proxy = start_proxy(with_prm=False, auto_rules_file=out / "auto_rules.toml")
    body = {"model": "fake-policy", "messages": [{"role": "user", "content": "Unsolvable 9"}]}
    headers = {"X-TTS-Strategy": "auto", "X-TTS-Budget": "16", "X-TTS-Scorer": "verifier"}
    reply = httpx.post(
        fitted_proxy + "/v1/chat/completions", json=body, headers=headers, timeout=30
    )
    auto = reply.json()["tts"]["auto"]
    assert auto["pilots"] == 3 and auto["cell"] == "fitted.verifier.hard"


def by_step(prefix: str, i: int) -> str:
    """After a first step (a beam search's next depth) the "Unsolvable" problems come out right;
    whole samples (``by_problem``) never do."""
    return "So the answer is \\boxed{" + ("4" if prefix.startswith("Two") else "1") + "}"


def test_calibrate_runs_step_cells_live_in_autos_shape_and_fits_them(
    start_proxy: ProxyFactory, vllm: FakeVllm, dataset: Path, tmp_path: Path
) -> None:
    vllm.prompt_script, vllm.script = by_problem, by_step
    proxy = start_proxy(with_prm=False)
    out = tmp_path / "calibration"
    steps = ["--steps", "beam_search@16", "--step-problems", str(len(PROBLEMS))]
    assert calibrate(proxy, dataset, out, *steps) == 0
    # 16 - 4 pilots = 12 generations: N = 4 per depth, 12 at most over all depths
    live = read_rows([out / "steps" / "beam_search+12"])
    assert len(live) == len(PROBLEMS)
    assert {(r.strategy, r.budget) for r in live} == {("beam_search", 4)}
    assert all(r.tts["budget_spent"] <= 12 for r in live)
    assert all(r.correct for r in live)  # the step search solves every problem here
    rules = load_rules(out / "auto_rules.toml")
    hard = rules.fitted["confidence"]["hard"]
    assert (hard.method, hard.budget) == ("beam_search", 16)
    assert "beam_search@16" in (out / "calibration.md").read_text()
    # auto with the fitted cell runs that same search after its pilots
    fitted_proxy = start_proxy(with_prm=False, auto_rules_file=out / "auto_rules.toml")
    reply = ask_auto(fitted_proxy, PROBLEMS[-1]["problem"])
    tts, usage = reply["tts"], reply["usage"]
    assert tts["auto"]["method"] == "beam_search" and reply["choices"][0]["message"]["content"]
    alone = next(r for r in live if r.id == PROBLEMS[-1]["id"])
    assert tts["budget_spent"] == 4 + alone.tts["budget_spent"]
    pilots = sum(len(by_problem("Unsolvable", i).split()) for i in range(4))
    assert usage["completion_tokens"] == pilots + alone.completion_tokens


def _row(problem: str, answers: list[str], reference: str, **tts: Any) -> Row:
    samples = [{"answer": a, "score": 0.5, "tokens": 10} for a in answers]
    return Row(
        problem,
        "m",
        "openai",
        "best_of_n",
        CAP,
        0,
        "",
        reference,
        False,
        0,
        0,
        0,
        1.0,
        None,
        tts={"samples": samples, **tts},
    )


def test_a_step_searchs_answers_are_pooled_with_the_pilots_as_auto_pools_them() -> None:
    """Labelled as the bank's samples: a sample's group, -2 for a right answer no sample gave,
    a new label otherwise; the heaviest answer of pilots and search wins."""
    bank_row = _row("p", ["7", "8", "9", "10"] * 4, "42")
    (bank,) = banks_of([bank_row], CAP)
    run = step_runs([("beam_search", 16)], [4], CAP)[0]
    live = dataclasses.replace(
        bank_row,
        strategy="beam_search",
        budget=run.per_depth,
        tts={
            "answers": [
                {"answer": "42.0", "weight": 0.7},
                {"answer": "8", "weight": 0.3},
                {"answer": "11", "weight": 0.1},
            ]
        },
    )
    searched = searched_of([live], run, "m", {"p": bank_row}, CAP)["p"]
    assert bank.correct_label == -2
    assert searched.votes == ((-2, 0.7), (bank.labels[1], 0.3), (18, 0.1))
    pilots = {b: Cell("beam_search", 16, 0.99) for b in ALL_BINS}
    attached = dataclasses.replace(bank, searches={run.key: searched})
    _, outcome = replay(attached, range(CAP), 4, pilots, CAP)
    assert outcome.correct is False  # 8: 0.5 + 0.3 beats 42's 0.7
    heavier = dataclasses.replace(searched, votes=((-2, 0.9), *searched.votes[1:]))
    _, outcome = replay(
        dataclasses.replace(bank, searches={run.key: heavier}), range(CAP), 4, pilots, CAP
    )
    assert outcome.correct is True and outcome.tokens == 40 + live.completion_tokens
