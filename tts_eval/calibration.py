"""Fitting ``auto`` to one policy and scorer from a bank of drawn samples (pure functions).

A bank holds, per labelled problem, ``cap`` whole samples drawn through the proxy (a voting
search with the trace on): each sample's answer, its score by the configured scorer and its
generated tokens. Voting methods and ``auto``'s stopping rule are **replayed** over many random
orders of each bank instead of being generated again (Aggarwal et al. 2023 compare
adaptive-consistency rules the same way): the first ``pilots`` samples of an order are the
pilots, the next ones what a chunk would draw.

``replay`` mirrors ``strategies.auto.run_auto`` step for step on precomputed answer labels (the
equivalence grouping is done once per problem, not once per replay); the tests hold the two equal
on the same drawn samples; ``tts_eval.fit`` picks the cells from these replays.

Step searches (beam search, DVTS, particle filtering) cannot be replayed from whole samples: a
step cell's search is run live once per problem, in the shape ``auto`` gives it for the
generations the cell leaves after its pilots (``strategies.search_shape``), and attached to the
problem's bank (``Bank.searches``). The replay draws the pilots from the bank as for every cell;
where they do not settle the problem, the outcome is the live search's (its answer and tokens,
plus the pilots'), its answers pooled with the pilots' in the final vote as ``auto`` pools them.
A step cell is judged only on the problems that have its search.
"""

from __future__ import annotations

import hashlib
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple, get_args

from strategies import difficulty_of, draws_to_settle, group_equivalent, keeps_lead
from tts_eval.rows import Row

__all__ = [
    "BEAM_WIDTH",
    "BINS",
    "NO_ANSWER",
    "STEP_METHODS",
    "Bank",
    "Bin",
    "Cell",
    "Expected",
    "Method",
    "MissingSearchError",
    "Outcome",
    "Searched",
    "StepMethod",
    "banks_of",
    "evaluate",
    "fixed",
    "orders_of",
    "pass1_bin",
    "replay",
    "search_generations",
    "search_key",
    "searches_needed",
]

Bin = Literal["easy", "medium", "hard"]
BINS: tuple[Bin, ...] = ("easy", "medium", "hard")
NO_ANSWER = -1


StepMethod = Literal["beam_search", "dvts", "particle_filtering"]
STEP_METHODS: tuple[StepMethod, ...] = get_args(StepMethod)


@dataclass(frozen=True, slots=True)
class Searched:
    """One live step search on a problem, in ``auto``'s shape for the generations a cell leaves
    after its pilots: whether its answer was right, its generated tokens, its policy calls and
    its latency; ``votes``: its answers as (the bank's label, weight), which ``auto`` pools with
    the pilots' scores in its final vote (None: unknown, its own answer is taken)."""

    correct: bool
    tokens: int
    calls: int
    latency_s: float
    votes: tuple[tuple[int, float], ...] | None = None


def search_key(method: str, generations: int) -> str:
    """``beam_search+12``: a step search given 12 generations (a cell's budget minus pilots)."""
    return f"{method}+{generations}"


class MissingSearchError(KeyError):
    """A step cell needs a live search its problem's bank does not hold."""


@dataclass(frozen=True, slots=True)
class Bank:
    """One problem's drawn samples: answer labels (equal labels are equivalent answers,
    ``NO_ANSWER`` when none was extracted), which are right, scores and generated tokens."""

    id: str
    level: int | None
    labels: tuple[int, ...]
    correct_label: int  # the label of the reference answer (matches no sample: -2)
    scores: tuple[float, ...]
    tokens: tuple[int, ...]
    # Seconds per decoding step, measured on the bank's own call (all samples decode together,
    # so it lasted as long as its longest sample): what a replayed call's latency is estimated at.
    step_s: float = 0.0
    # Live step searches on this problem, by ``search_key`` (not replayable from samples).
    searches: Mapping[str, Searched] = field(default_factory=dict, compare=False)

    @property
    def size(self) -> int:
        return len(self.labels)

    @property
    def pass1(self) -> float:
        return sum(label == self.correct_label for label in self.labels) / self.size


def pass1_bin(rate: float) -> Bin:
    """The paper's absolute bins of pass@1: easy >= 50 %, medium 10-50 %, hard < 10 %."""
    return "easy" if rate >= 0.5 else "medium" if rate >= 0.1 else "hard"


def banks_of(rows: Iterable[Row], cap: int) -> list[Bank]:
    """Banks from ``tts-eval run`` rows that kept their samples (``tts.samples``), each cut to
    its first ``cap`` samples; rows with fewer samples than ``cap`` are left out."""
    banks = []
    for row in rows:
        samples = row.tts.get("samples") or []
        if len(samples) < cap:
            continue
        samples = samples[:cap]
        answers = [str(s.get("answer") or "") for s in samples]
        groups = group_equivalent([*answers, row.reference])
        labels = tuple(g if a.strip() else NO_ANSWER for g, a in zip(groups, answers, strict=False))
        gold = groups[-1] if groups[-1] in labels else -2
        tokens = tuple(int(s.get("tokens") or 0) for s in samples)
        banks.append(
            Bank(
                id=row.id,
                level=row.level,
                labels=labels,
                correct_label=gold,
                scores=tuple(float(s.get("score") or 0.0) for s in samples),
                tokens=tokens,
                step_s=row.latency_s / max(1, *tokens),
            )
        )
    return banks


def orders_of(bank: Bank, count: int, seed: int) -> list[tuple[int, ...]]:
    """``count`` random orders of a bank's samples, the same for the same problem and seed."""
    digest = hashlib.sha256(f"{seed}:{bank.id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    base = list(range(bank.size))
    orders = []
    for _ in range(count):
        rng.shuffle(base)
        orders.append(tuple(base))
    return orders


# -- cells and their replay ---------------------------------------------------------------------
Method = Literal["pilots", "majority", "best_of_n", "beam_search", "dvts", "particle_filtering"]
BEAM_WIDTH = 4  # auto's step searches keep whole beams: fewer generations than this vote instead


@dataclass(frozen=True, slots=True)
class Cell:
    """What ``auto`` does in one bin: ``budget`` is the total, pilots included."""

    method: Method
    budget: int
    confidence: float = 0.95
    chunk: int = 4

    @property
    def label(self) -> str:
        if self.method == "pilots":
            return "pilots"
        if self.method in STEP_METHODS:
            return f"{self.method}@{self.budget} c={self.confidence:g}"
        return f"{self.method}@{self.budget} c={self.confidence:g} k={self.chunk}"


@dataclass(frozen=True, slots=True)
class Outcome:
    correct: bool
    tokens: int
    samples: int
    calls: int  # sequential policy round trips
    latency_s: float  # estimated: each call lasts as long as its longest sample takes to decode


def _tally(labels: Sequence[int]) -> tuple[int, int, int]:
    counts = sorted(Counter(label for label in labels if label != NO_ANSWER).values())
    leader, runner_up = [0, 0, *counts][-1], [0, 0, *counts][-2]
    return leader, runner_up, len(labels) - leader - runner_up


def _vote(bank: Bank, drawn: Sequence[int], weighted: bool) -> int:
    """The chosen label, as ``strategies.scoring.rank_answers`` ranks: weight (votes, or the sum
    of scores), then the best score (majority voting carries no scores), then the first seen."""
    first: dict[int, int] = {}
    weight: dict[int, float] = {}
    best: dict[int, float] = {}
    for position, index in enumerate(drawn):
        label = bank.labels[index]
        if label == NO_ANSWER:
            continue
        score = bank.scores[index] if weighted else 0.0
        first.setdefault(label, position)
        weight[label] = weight.get(label, 0.0) + (score if weighted else 1.0)
        best[label] = max(best.get(label, score), score)
    if not first:
        return NO_ANSWER
    return min(first, key=lambda label: (-weight[label], -best[label], first[label]))


def _outcome(bank: Bank, drawn: Sequence[int], weighted: bool, calls: Sequence[int]) -> Outcome:
    """``calls``: how many samples each sequential call drew, in order."""
    chosen = _vote(bank, drawn, weighted)
    steps, start = 0, 0
    for size in calls:
        steps += max((bank.tokens[i] for i in drawn[start : start + size]), default=0)
        start += size
    return Outcome(
        correct=chosen != NO_ANSWER and chosen == bank.correct_label,
        tokens=sum(bank.tokens[i] for i in drawn),
        samples=len(drawn),
        calls=len(calls),
        latency_s=steps * bank.step_s,
    )


def replay(
    bank: Bank, order: Sequence[int], pilots: int, cells: Mapping[Bin, Cell], cap: int
) -> tuple[Bin, Outcome]:
    """``auto`` with these cells at a request cap of ``cap`` samples, drawing in ``order``: the
    bin its pilots put the problem in, and what it answered and spent."""
    drawn = list(order[: min(pilots, cap)])
    leader, runner_up, rest = _tally([bank.labels[i] for i in drawn])
    difficulty: Bin = difficulty_of(leader, len(drawn))
    cell = cells[difficulty]
    limit = min(cell.budget, cap)
    horizon = max(limit - len(drawn), 0) or limit
    confidence = keeps_lead(leader, runner_up, rest, horizon) if leader else 0.0
    if cell.method == "pilots" or confidence >= cell.confidence or len(drawn) >= limit:
        return difficulty, _outcome(bank, drawn, weighted=False, calls=[len(drawn)])
    remaining, calls = limit - len(drawn), [len(drawn)]
    if search_generations(cell.method, cell.budget, len(drawn), cap) is not None:
        return difficulty, _searched(bank, drawn, cell.method, remaining)
    while remaining > 0:
        size = draws_to_settle(leader, runner_up, rest, remaining, cell.confidence, cell.chunk)
        drawn += order[len(drawn) : len(drawn) + size]
        remaining -= size
        calls.append(size)
        leader, runner_up, rest = _tally([bank.labels[i] for i in drawn])
        confidence = keeps_lead(leader, runner_up, rest, remaining) if leader else 0.0
        if confidence >= cell.confidence:
            break
    # a step cell left fewer generations than one beam votes by score, as auto does
    return difficulty, _outcome(bank, drawn, weighted=cell.method != "majority", calls=calls)


def _searched(bank: Bank, pilots: Sequence[int], method: str, generations: int) -> Outcome:
    key = search_key(method, generations)
    searched = bank.searches.get(key)
    if searched is None:
        raise MissingSearchError(f"problem {bank.id} has no live {key} search")
    return Outcome(
        correct=_pooled(bank, pilots, searched),
        tokens=sum(bank.tokens[i] for i in pilots) + searched.tokens,
        samples=len(pilots) + generations,
        calls=1 + searched.calls,
        latency_s=max((bank.tokens[i] for i in pilots), default=0) * bank.step_s
        + searched.latency_s,
    )


def _pooled(bank: Bank, pilots: Sequence[int], searched: Searched) -> bool:
    """``auto``'s final vote after a step search: the pilots' scores and the search's answers'
    weights pooled per answer; the heaviest wins (the first seen on a tie, pilots first)."""
    if searched.votes is None:
        return searched.correct
    weight: dict[int, float] = {}
    for i in pilots:
        if bank.labels[i] != NO_ANSWER:
            weight[bank.labels[i]] = weight.get(bank.labels[i], 0.0) + bank.scores[i]
    for label, w in searched.votes:
        weight[label] = weight.get(label, 0.0) + w
    return bool(weight) and max(weight, key=lambda k: weight[k]) == bank.correct_label


def search_generations(method: str, budget: int, pilots: int, cap: int) -> int | None:
    """The generations a step cell (``method`` to ``budget``, pilots included) leaves its search
    after ``pilots`` at a request cap of ``cap``; None for a voting cell, or a step cell that
    leaves less than one beam (``auto`` votes instead)."""
    generations = min(budget, cap) - pilots
    return generations if method in STEP_METHODS and generations >= BEAM_WIDTH else None


def searches_needed(pilots: int, cells: Mapping[Bin, Cell], cap: int) -> set[str]:
    """The live searches (``search_key``) a problem's bank must hold to replay these cells."""
    needed = set()
    for cell in cells.values():
        generations = search_generations(cell.method, cell.budget, pilots, cap)
        if generations is not None:
            needed.add(search_key(cell.method, generations))
    return needed


def fixed(bank: Bank, order: Sequence[int], method: Method, n: int) -> Outcome:
    """A fixed method over the first ``n`` samples of ``order``: one call, no stopping rule."""
    return _outcome(bank, order[:n], weighted=method == "best_of_n", calls=[n])


class Expected(NamedTuple):
    """One problem's expected figures under a policy, over the replayed orders."""

    accuracy: float
    tokens: float
    latency_s: float


def evaluate(
    banks: Sequence[Bank],
    policies: Mapping[str, tuple[int, Mapping[Bin, Cell]] | tuple[Method, int]],
    cap: int,
    orders: int = 200,
    seed: int = 1,
) -> dict[str, list[Expected]]:
    """Each policy's per-problem figures, averaged over orders: an ``auto`` given as
    (pilots, cells) or a fixed method given as (method, n). Paired: the same orders for all."""
    result: dict[str, list[Expected]] = {name: [] for name in policies}
    for bank in banks:
        problem_orders = orders_of(bank, orders, seed)
        for name, spec in policies.items():
            if isinstance(spec[1], Mapping):
                outs = [replay(bank, o, int(spec[0]), spec[1], cap)[1] for o in problem_orders]
            else:
                method, n = spec
                outs = [fixed(bank, o, method, int(n)) for o in problem_orders]
            result[name].append(
                Expected(
                    accuracy=statistics.fmean(o.correct for o in outs),
                    tokens=statistics.fmean(o.tokens for o in outs),
                    latency_s=statistics.fmean(o.latency_s for o in outs),
                )
            )
    return result
