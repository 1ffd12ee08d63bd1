"""``auto``: pilots estimate difficulty, settled answers stop early, the rules pick the method,
and the budget is a hard cap."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import AutoConfig, SearchConfig, draws_to_settle, keeps_lead, search
from tests.fakes import FakePolicy, FakeScorer

D = "\n\n"
RULES: dict[str, Any] = {"easy": "best_of_n", "medium": "beam_search", "hard": "beam_search"}


def config(budget: int = 16, pilots: int = 4, **rules: str) -> SearchConfig:
    methods: Any = {**RULES, **rules}
    auto = AutoConfig(methods=methods, pilots=pilots)
    return SearchConfig(budget=budget, beam_width=4, auto=auto)


def boxed(answers: list[int]) -> dict[str, list[str]]:
    """Full answers for the pilots; steps for a search (always finishing at depth 2)."""
    step = "think <0.6>" + D
    return {
        "": [f"so \\boxed{{{a}}} <0.{i % 9 + 1}>" for i, a in enumerate(answers)] + [step],
        step: ["then \\boxed{7} <0.8>", "then \\boxed{8} <0.4>"],
    }


def test_keeps_lead_small_cases_by_hand() -> None:
    # nothing left to draw: settled iff the leader is ahead
    assert keeps_lead(3, 1, 0, 0) == 1.0 and keeps_lead(2, 2, 0, 0) == 0.0
    # one more draw after 1-0-0: Dirichlet(2, 1, 1) predicts leader 1/2, rival 1/4, rest 1/4,
    # and only a draw for the rival ties it
    assert keeps_lead(1, 0, 0, 1) == pytest.approx(3 / 4)
    # two more after 1-0-0: by brute force over the urn's draw sequences
    assert keeps_lead(1, 0, 0, 2) == pytest.approx(1 - _rival_catches_up(1, 0, 0, 2))
    # far from the cap it tends to P(p_leader > p_rival), a Beta(5, 1) tail for 4-0: 1 - 1/32
    assert keeps_lead(4, 0, 0, 400) == pytest.approx(1 - 1 / 32, abs=2e-3)


def _rival_catches_up(leader: int, rival: int, rest: int, remaining: int) -> float:
    """Brute force over every draw sequence with Polya-urn probabilities."""
    if remaining == 0:
        return float(rival >= leader)
    total = leader + rival + rest + 3
    return (
        (leader + 1) / total * _rival_catches_up(leader + 1, rival, rest, remaining - 1)
        + (rival + 1) / total * _rival_catches_up(leader, rival + 1, rest, remaining - 1)
        + (rest + 1) / total * _rival_catches_up(leader, rival, rest + 1, remaining - 1)
    )


@given(st.integers(1, 8), st.integers(0, 8), st.integers(0, 8), st.integers(0, 8))
def test_keeps_lead_matches_the_urn_and_is_monotone(
    leader: int, rival: int, rest: int, remaining: int
) -> None:
    rival = min(rival, leader)
    value = keeps_lead(leader, rival, rest, remaining)
    assert value == pytest.approx(1 - _rival_catches_up(leader, rival, rest, remaining), abs=1e-9)
    assert keeps_lead(leader + 1, rival, rest, remaining) >= value - 1e-12


@given(
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(0, 12),
    st.integers(1, 40),
    st.sampled_from([0.8, 0.9, 0.95, 0.99]),
    st.integers(1, 8),
)
def test_draws_to_settle_is_the_fewest_that_could_settle(
    leader: int, rival: int, rest: int, remaining: int, confidence: float, at_least: int
) -> None:
    rival = min(rival, leader)
    k = draws_to_settle(leader, rival, rest, remaining, confidence, at_least)

    def settles(draws: int) -> bool:
        return keeps_lead(leader + draws, rival, rest, remaining - draws) >= confidence

    assert min(at_least, remaining) <= k <= remaining
    assert settles(k)
    assert all(not settles(fewer) for fewer in range(min(at_least, remaining), k))


def test_draws_to_settle_by_hand() -> None:
    assert draws_to_settle(4, 0, 0, 12, 0.95) == 1  # 5 of 5 with 11 left settles
    assert draws_to_settle(4, 0, 0, 12, 0.95, at_least=4) == 4
    assert draws_to_settle(1, 1, 2, 60, 0.99, at_least=1) > 4  # a split needs many at once
    assert draws_to_settle(1, 1, 0, 3, 0.95, at_least=8) == 3  # never past the budget


async def test_unanimous_pilots_stop_early() -> None:
    policy = FakePolicy({"": ["so \\boxed{4}"]})
    scorer = FakeScorer()
    result = await search("auto", "q", policy, scorer, config())
    assert result.answer == "4" and result.usage.generations == 4
    assert len(policy.calls) == 1 and not scorer.calls  # settled by votes: no PRM call
    decision = result.decision
    assert decision is not None and decision.stopped_early and decision.method is None
    assert decision.difficulty == "easy" and decision.agreement == 1.0


async def test_pilots_that_spend_the_whole_budget_do_not_claim_an_early_stop() -> None:
    # budget == pilots: a 2-1-1 split is all there is; nothing was left to save
    result = await search("auto", "q", FakePolicy(boxed([4, 4, 1, 2])), None, config(budget=4))
    decision = result.decision
    assert decision is not None and not decision.stopped_early
    assert decision.reason == "the pilots used the whole budget"
    assert result.answer == "4" and 0.0 < decision.confidence < 0.95


async def test_hard_problem_gets_the_rules_search_within_the_cap() -> None:
    policy = FakePolicy(boxed([1, 2, 3, 5]))  # four different answers: hard
    result = await search("auto", "q", policy, FakeScorer(), config(budget=16))
    decision = result.decision
    assert decision is not None and decision.difficulty == "hard"
    assert decision.method == "beam_search" and not decision.stopped_early
    assert result.usage.generations <= 16
    assert result.usage.generations_per_depth[0] == 4  # the pilots
    assert result.strategy == "auto"


@pytest.mark.parametrize(
    ("answers", "difficulty"),
    [
        ([4] * 8, "easy"),
        ([4, 4, 4, 4, 1, 2, 3, 5], "easy"),
        ([4, 4, 1, 2, 3, 5, 6, 7], "medium"),
        ([1, 2, 3, 5, 6, 7, 8, 9], "hard"),
    ],
)
async def test_pilot_agreement_bins_difficulty(answers: list[int], difficulty: str) -> None:
    result = await search(
        "auto", "q", FakePolicy(boxed(answers)), FakeScorer(), config(budget=32, pilots=8)
    )
    assert result.decision is not None and result.decision.difficulty == difficulty


@pytest.mark.parametrize(
    "method", ["majority", "best_of_n", "beam_search", "dvts", "particle_filtering", "deepconf"]
)
async def test_the_rules_table_picks_the_method(method: str) -> None:
    policy = FakePolicy(boxed([1, 2, 3, 5]))
    result = await search("auto", "q", policy, FakeScorer(), config(hard=method))
    assert result.decision is not None and result.decision.method == method


@pytest.mark.parametrize("iterations", [2, 14])
async def test_particle_sweeps_are_fitted_to_the_budget_auto_leaves(iterations: int) -> None:
    # 12 samples left after the pilots: a particle search of 4 per depth fits 2 sweeps at most
    # (2 particles each); more sweeps asked for are cut to that, and the cut is said
    policy = FakePolicy(boxed([1, 2, 3, 5]))
    cfg = dataclasses.replace(config(hard="particle_filtering"), particle_iterations=iterations)
    result = await search("auto", "q", policy, FakeScorer(), cfg)
    decision = result.decision
    assert decision is not None and decision.method == "particle_filtering"
    assert result.usage.generations <= 16
    assert ("particle_iterations" in decision.reason) == (iterations > 2)


async def test_sampling_continues_in_chunks_until_settled() -> None:
    # pilots split 2-2; every later sample says 4, so the leader settles before the cap
    script = {"": ["\\boxed{4}", "\\boxed{4}", "\\boxed{1}", "\\boxed{2}"] + ["\\boxed{4}"] * 60}
    policy = FakePolicy(script, persist_offsets=True)
    result = await search(
        "auto", "q", policy, None, config(budget=64, medium="majority", easy="majority")
    )
    assert result.answer == "4"
    assert result.decision is not None and result.decision.stopped_early
    assert result.usage.generations < 64 and all(c.n == 4 for c in policy.calls)


async def test_a_split_vote_draws_what_could_settle_it_in_one_call() -> None:
    # pilots split 1-1-1-1 with 60 left: four more agreeing samples could not settle it at 0.99,
    # so the next call asks for the fewest that could, not for a chunk of 4
    script = {"": ["\\boxed{4}", "\\boxed{1}", "\\boxed{2}", "\\boxed{3}"] + ["\\boxed{4}"] * 60}
    policy = FakePolicy(script, persist_offsets=True)
    auto = AutoConfig(
        methods={"easy": "majority", "medium": "majority", "hard": "majority"},
        pilots=4,
        confidence=0.99,
        chunk=4,
    )
    result = await search("auto", "q", policy, None, SearchConfig(budget=64, auto=auto))
    needed = draws_to_settle(1, 1, 2, 60, 0.99, at_least=4)
    assert needed > 4 and policy.calls[1].n == needed
    assert result.answer == "4" and len(policy.calls) == 2  # those samples all agree: settled


async def test_spends_less_on_easy_than_on_hard() -> None:
    easy = await search("auto", "q", FakePolicy({"": ["\\boxed{4}"]}), FakeScorer(), config())
    hard = await search("auto", "q", FakePolicy(boxed([1, 2, 3, 5])), FakeScorer(), config())
    assert easy.usage.generations < hard.usage.generations


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 40),
    st.lists(st.integers(0, 9), min_size=1, max_size=8),
    st.sampled_from(
        ["majority", "best_of_n", "beam_search", "dvts", "particle_filtering", "deepconf"]
    ),
)
async def test_never_exceeds_the_budget_cap(budget: int, answers: list[int], method: str) -> None:
    policy = FakePolicy(boxed(answers))
    result = await search(
        "auto", "q", policy, FakeScorer(), config(budget=budget, hard=method, medium=method)
    )
    assert result.usage.generations <= budget


async def test_free_text_answers_fall_back_to_the_scorer() -> None:
    texts = ["a poem", "a better poem", "meh", "ok"]
    scorer = FakeScorer(by_text={"a poem": 0.2, "a better poem": 0.9, "meh": 0.5, "ok": 0.4})
    for budget in (4, 8):
        result = await search("auto", "q", FakePolicy({"": texts}), scorer, config(budget=budget))
        assert result.text == "a better poem"
        assert result.decision is not None and "scorer's best" in result.decision.reason


async def test_auto_needs_its_rules() -> None:
    with pytest.raises(ValueError, match="rules"):
        await search("auto", "q", FakePolicy({"": ["x"]}), None, SearchConfig())


async def test_cap_stops_a_search_that_would_overspend() -> None:
    step = "more <0.5>" + D
    script = {"": ["\\boxed{1}", "\\boxed{2}", "\\boxed{3}", "\\boxed{5}", step]}
    for depth in range(1, 30):  # a chain that never finishes
        script[step * depth] = [step]
    policy = FakePolicy(script, persist_offsets=True)  # the search starts after the pilots
    result = await search("auto", "q", policy, FakeScorer(), config(budget=12))
    assert result.usage.generations_per_depth == (4, 4, 4)  # a 4th depth would pass the cap
    assert result.answer in {"1", "2", "3", "5"}  # the unfinished beams had no answer to vote


async def test_deepconf_in_the_rules_takes_the_pilots_as_its_warm_up() -> None:
    pilots = [f"we get so so \\boxed{{{a}}}" for a in (1, 2, 5, 6)]  # hard: four answers
    sure = "we add them and get so so so so \\boxed{3}"
    policy = FakePolicy({"": [*pilots, *[sure] * 12]})
    result = await search("auto", "q", policy, None, config(budget=16, hard="deepconf"))
    decision, report = result.decision, result.deepconf
    assert decision is not None and decision.method == "deepconf" and result.strategy == "auto"
    assert report is not None and report.mode == "online" and report.warmup == 4
    # one call for the pilots, with the log-probs token confidence needs; then streams only
    assert policy.calls[0].n == 4 and policy.calls[0].sampling.top_logprobs == 5
    assert all(c.n == 1 for c in policy.calls[1:]) and len(policy.streams) == len(policy.calls[1:])
    assert result.answer == "3" and result.usage.generations <= 16
    assert decision.stopped_early == report.settled == (report.traces < 16)
    # the pilots are in the trace once, as the first of deepconf's traces
    assert result.trace is not None and len(result.trace) == report.traces


async def test_pilots_without_deepconf_in_the_rules_ask_for_no_confidences() -> None:
    policy = FakePolicy(boxed([1, 2, 3, 5]))
    await search("auto", "q", policy, FakeScorer(), config(hard="majority"))
    assert policy.calls[0].sampling.top_logprobs == 0
