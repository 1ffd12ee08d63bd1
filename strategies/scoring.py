"""Scoring a finished candidate from its step scores, selecting beams, and voting on answers.

Pure functions only. Sources: PRM-Last/Min/Avg and Majority/PRM-Max/PRM-Vote as defined in
Liu et al. 2025 (arXiv 2502.06703) §3; ``prod`` as in huggingface/search-and-learn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from strategies.results import AnswerChoice, Candidate, ScoredCandidate
from strategies.types import ScoringMode, VotingMode

__all__ = ["aggregate", "rank_answers", "select_top"]


def aggregate(step_scores: Sequence[float], mode: ScoringMode) -> float:
    """One score for a whole candidate. An unscored candidate gets 0.0."""
    if not step_scores:
        return 0.0
    if mode == "last":
        return step_scores[-1]
    if mode == "min":
        return min(step_scores)
    if mode == "avg":
        return math.fsum(step_scores) / len(step_scores)
    return math.prod(step_scores)


def select_top(candidates: Sequence[Candidate], k: int) -> tuple[list[int], list[int]]:
    """Indices of the best ``k`` distinct candidates by last-step score, and of exact duplicates.

    Ties go to the earlier candidate; a candidate whose text equals a better one's is skipped
    (sibling de-duplication, as in the paper's code) so the kept beams stay diverse.
    """
    order = sorted(range(len(candidates)), key=lambda i: (-candidates[i].last_score, i))
    kept: list[int] = []
    duplicates: list[int] = []
    seen: set[str] = set()
    for index in order:
        text = candidates[index].text
        if text in seen:
            duplicates.append(index)
            continue
        seen.add(text)
        if len(kept) < k:
            kept.append(index)
    return kept, duplicates


@dataclass(slots=True)
class _Tally:
    first: int
    votes: int = 0
    total: float = 0.0
    best: float | None = None
    best_index: int = -1


def rank_answers(
    candidates: Sequence[ScoredCandidate], groups: Sequence[int], voting: VotingMode
) -> tuple[AnswerChoice, ...]:
    """Distinct answers, best first.

    ``groups[i]`` is the equivalence group of ``candidates[i]``. Weight: vote count (``majority``),
    sum of scores (``prm_vote``) or best score (``prm_max``). Ties break on the higher best score,
    then the earlier candidate. Candidates without an answer rank below every real answer.
    """
    tallies: dict[int, _Tally] = {}
    for position, (item, group) in enumerate(zip(candidates, groups, strict=True)):
        tally = tallies.setdefault(group, _Tally(first=position))
        tally.votes += 1
        score = item.score if item.score is not None else 0.0
        tally.total += score
        if tally.best is None or score > tally.best:
            tally.best, tally.best_index = score, position

    def weight(tally: _Tally) -> float:
        if voting == "majority":
            return float(tally.votes)
        if voting == "prm_vote":
            return tally.total
        return tally.best if tally.best is not None else 0.0

    def key(group: int) -> tuple[bool, float, float, int]:
        tally = tallies[group]
        has_answer = bool(candidates[tally.first].answer)
        return (not has_answer, -weight(tally), -(tally.best or 0.0), tally.first)

    ranked = sorted(tallies, key=key)
    return tuple(_choice(candidates, tallies[group], weight(tallies[group])) for group in ranked)


def _choice(candidates: Sequence[ScoredCandidate], tally: _Tally, weight: float) -> AnswerChoice:
    chosen = candidates[tally.best_index]
    return AnswerChoice(
        answer=chosen.answer,
        text=chosen.candidate.text,
        weight=weight,
        votes=tally.votes,
        score=chosen.score,
        candidate_index=chosen.index,
    )
