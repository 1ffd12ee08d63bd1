"""Scoring, selection and voting: hand-picked cases and hypothesis properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from strategies import Candidate, ScoredCandidate, Step, aggregate, rank_answers, select_top

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
score_lists = st.lists(unit, min_size=1, max_size=12)


@given(score_lists)
def test_aggregate_orderings(scores: list[float]) -> None:
    low, mean, last, prod = (aggregate(scores, m) for m in ("min", "avg", "last", "prod"))
    assert low <= last <= max(scores)
    assert low <= mean + 1e-12 and mean <= max(scores) + 1e-12
    assert prod <= low + 1e-12


def test_aggregate_values() -> None:
    assert aggregate([0.5, 0.2, 0.8], "last") == 0.8
    assert aggregate([0.5, 0.2, 0.8], "min") == 0.2
    assert aggregate([0.5, 0.2, 0.8], "avg") == pytest.approx(0.5)
    assert aggregate([0.5, 0.2, 0.8], "prod") == pytest.approx(0.08)
    assert aggregate([], "last") == 0.0


def beam(text: str, score: float) -> Candidate:
    return Candidate(steps=(Step(text),), step_scores=(score,))


@given(st.lists(unit, min_size=0, max_size=10), st.integers(min_value=0, max_value=12))
def test_select_top_keeps_min_k_and_never_a_worse_over_a_better(
    scores: list[float], k: int
) -> None:
    beams = [beam(f"t{i}", s) for i, s in enumerate(scores)]
    kept, duplicates = select_top(beams, k)
    assert len(kept) == min(k, len(beams)) and not duplicates
    dropped = set(range(len(beams))) - set(kept)
    for i in kept:
        for j in dropped:
            assert scores[i] > scores[j] or (scores[i] == scores[j] and i < j)


@given(st.lists(unit, min_size=1, max_size=8), st.randoms())
def test_select_top_is_order_invariant(scores: list[float], rng: object) -> None:
    beams = [beam(f"t{i}", s) for i, s in enumerate(scores)]
    shuffled = list(beams)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    best = beams[select_top(beams, 1)[0][0]]
    best_shuffled = shuffled[select_top(shuffled, 1)[0][0]]
    assert best.last_score == best_shuffled.last_score


def scored(answers: list[str], scores: list[float | None]) -> list[ScoredCandidate]:
    return [
        ScoredCandidate(index=i, candidate=Candidate(steps=(Step(a),)), answer=a, score=s)
        for i, (a, s) in enumerate(zip(answers, scores, strict=True))
    ]


@given(
    st.lists(st.sampled_from(["1", "2", "3", ""]), min_size=1, max_size=10).flatmap(
        lambda answers: st.tuples(
            st.just(answers), st.lists(unit, min_size=len(answers), max_size=len(answers))
        )
    ),
    st.sampled_from(["majority", "prm_max", "prm_vote"]),
)
def test_vote_returns_a_produced_answer_and_a_mode(
    data: tuple[list[str], list[float]], voting: str
) -> None:
    answers, scores = data
    groups = [answers.index(a) if a else i for i, a in enumerate(answers)]
    choices = rank_answers(scored(answers, list(scores)), groups, voting)  # type: ignore[arg-type]
    assert choices[0].answer in answers
    real = [a for a in answers if a]
    if real:
        assert choices[0].answer != ""
    if voting == "majority" and real:
        top = max(real.count(a) for a in set(real))
        assert real.count(choices[0].answer) == top


def test_vote_weights() -> None:
    items = scored(["1", "2", "1"], [0.3, 0.9, 0.4])
    groups = [0, 1, 0]
    assert rank_answers(items, groups, "majority")[0].answer == "1"
    assert rank_answers(items, groups, "prm_max")[0].answer == "2"
    vote = rank_answers(items, groups, "prm_vote")
    assert vote[0].answer == "2" and math.isclose(vote[1].weight, 0.7)
    assert vote[1].candidate_index == 2  # the best-scored member represents its answer


def test_vote_tie_breaks_on_score_then_position() -> None:
    items = scored(["1", "2", "2", "1"], [0.5, 0.6, 0.4, 0.5])
    assert rank_answers(items, [0, 1, 1, 0], "prm_vote")[0].answer == "2"  # 1.0 vs 1.0, best .6
    items = scored(["1", "2"], [0.5, 0.5])
    assert rank_answers(items, [0, 1], "prm_max")[0].answer == "1"


def test_free_text_answers_rank_by_score() -> None:
    items = scored(["", "", ""], [0.1, 0.8, 0.3])
    choices = rank_answers(items, [0, 1, 2], "majority")
    assert [c.candidate_index for c in choices] == [1, 2, 0]


def test_a_scorer_label_is_parsed_into_its_kind_in_one_place() -> None:
    from strategies import scorer_kind

    assert scorer_kind("prm:Qwen2.5-Math-PRM-7B") == "prm" and scorer_kind("prm") == "prm"
    assert scorer_kind("verifier:qwen") == "verifier"
    assert scorer_kind("verifier-genprm:qwen") == "verifier-genprm"
    assert scorer_kind("confidence") == "confidence"
    assert scorer_kind("my-heuristic") == "other" and scorer_kind(None) == "none"
