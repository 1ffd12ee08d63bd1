"""Fitting ``auto`` to one policy and scorer from a bank of drawn samples (pure functions).

A bank holds, per labelled problem, ``cap`` whole samples drawn through the proxy (a voting
search with the trace on): each sample's answer, its score by the configured scorer and its
generated tokens. Voting methods and ``auto``'s stopping rule are **replayed** over many random
orders of each bank instead of being generated again (Aggarwal et al. 2023 compare
adaptive-consistency rules the same way): the first ``pilots`` samples of an order are the
pilots, the next ones what a chunk would draw.

``replay`` mirrors ``strategies.auto.run_auto`` step for step on precomputed answer labels (the
equivalence grouping is done once per problem, not once per replay); the tests hold the two equal
on the same drawn samples. The fit picks, for each bin the pilots put a problem in (the only
difficulty ``auto`` can see online), the cell that is best under the stated objective, and then
the number of pilots that is best overall.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from strategies import difficulty_of, draws_to_settle, group_equivalent, keeps_lead
from tts_eval.rows import Row
from tts_eval.stats import wilson

__all__ = [
    "BINS",
    "OBJECTIVES",
    "Bank",
    "Bin",
    "Candidate",
    "Cell",
    "CellFit",
    "Expected",
    "Fit",
    "Objective",
    "Outcome",
    "banks_of",
    "candidates",
    "evaluate",
    "fit",
    "fixed",
    "orders_of",
    "pass1_bin",
    "replay",
]

Bin = Literal["easy", "medium", "hard"]
BINS: tuple[Bin, ...] = ("easy", "medium", "hard")
Objective = Literal["tokens-within-interval", "accuracy", "utility"]
OBJECTIVES: tuple[Objective, ...] = ("tokens-within-interval", "accuracy", "utility")
_Z95 = 1.959963984540054
NO_ANSWER = -1


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
Method = Literal["pilots", "majority", "best_of_n"]


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
    while remaining > 0:
        size = draws_to_settle(leader, runner_up, rest, remaining, cell.confidence, cell.chunk)
        drawn += order[len(drawn) : len(drawn) + size]
        remaining -= size
        calls.append(size)
        leader, runner_up, rest = _tally([bank.labels[i] for i in drawn])
        confidence = keeps_lead(leader, runner_up, rest, remaining) if leader else 0.0
        if confidence >= cell.confidence:
            break
    return difficulty, _outcome(bank, drawn, weighted=cell.method == "best_of_n", calls=calls)


def fixed(bank: Bank, order: Sequence[int], method: Method, n: int) -> Outcome:
    """A fixed method over the first ``n`` samples of ``order``: one call, no stopping rule."""
    return _outcome(bank, order[:n], weighted=method == "best_of_n", calls=[n])


# -- the fit ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Candidate:
    """One cell's figures on the (problem, order) pairs whose pilots fell in a bin."""

    cell: Cell
    problems: float  # the pairs' weight in problems (each problem's share of orders in the bin)
    accuracy: float
    tokens: float  # generated tokens per problem, pilots included
    samples: float
    calls: float
    latency_s: float  # estimated from the bank's own decoding speed
    ci_low: float
    ci_high: float
    gap: float  # accuracy minus the bin's most accurate cell, paired over problems
    gap_se: float


@dataclass(frozen=True, slots=True)
class CellFit:
    bin: Bin
    chosen: Candidate
    tried: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class Fit:
    pilots: int
    cap: int
    objective: Objective
    cells: dict[str, CellFit]
    accuracy: float  # the fitted auto over every (problem, order)
    tokens: float
    confusion: dict[str, dict[str, float]]  # pass@1 bin -> pilot bin -> problems (order share)
    problems: int
    orders: int
    by_pilots: dict[int, tuple[float, float]]  # pilots tried -> (accuracy, tokens)


def candidates(
    pilots: int,
    cap: int,
    budgets: Sequence[int] = (8, 12, 16),
    confidences: Sequence[float] = (0.8, 0.9, 0.95, 0.99),
    chunks: Sequence[int] = (2, 4),
    methods: Sequence[Method] = ("majority", "best_of_n"),
) -> list[Cell]:
    """The cells tried in every bin: answering from the pilots, and each voting method at each
    budget (never above the cap, never below the pilots) with each stopping rule."""
    cells = [Cell("pilots", pilots)]
    for method in methods:
        for budget in sorted({min(b, cap) for b in budgets}):
            if budget <= pilots:
                continue
            for confidence in confidences:
                for chunk in chunks:
                    cells.append(Cell(method, budget, confidence, chunk))
    return cells


def _choose(tried: list[Candidate], objective: Objective, token_weight: float) -> Candidate:
    if objective == "accuracy":
        return max(tried, key=lambda c: (c.accuracy, -c.tokens))
    if objective == "utility":
        return max(tried, key=lambda c: (c.accuracy - token_weight * c.tokens / 1000, -c.tokens))
    # the fewest tokens among the cells not significantly less accurate than the best (paired)
    kept = [c for c in tried if c.gap + _Z95 * c.gap_se >= -1e-12]
    return min(kept, key=lambda c: (c.tokens, -c.accuracy))


def _figures(
    cell: Cell,
    pairs: Sequence[tuple[int, Outcome]],
    best: Sequence[tuple[int, Outcome]] | None,
    orders: int,
) -> Candidate:
    """Figures of ``pairs`` ((problem index, outcome) for each order in the bin); ``best``: the
    same pairs under the bin's most accurate cell, for the paired gap. Each problem counts its
    share of orders in the bin, so ``problems`` is what the interval is computed on."""
    accuracy = sum(o.correct for _, o in pairs) / len(pairs)
    problems = sum(Counter(p for p, _ in pairs).values()) / orders
    trials = max(1, round(problems))
    low, high = wilson(round(accuracy * trials), trials)
    gap = se = 0.0
    if best is not None:
        per_problem: dict[int, list[float]] = {}
        for (problem, ours), (_, theirs) in zip(pairs, best, strict=True):
            per_problem.setdefault(problem, []).append(float(ours.correct) - theirs.correct)
        diffs = [statistics.fmean(v) for v in per_problem.values()]
        gap = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return Candidate(
        cell=cell,
        problems=problems,
        accuracy=accuracy,
        tokens=statistics.fmean(o.tokens for _, o in pairs),
        samples=statistics.fmean(o.samples for _, o in pairs),
        calls=statistics.fmean(o.calls for _, o in pairs),
        latency_s=statistics.fmean(o.latency_s for _, o in pairs),
        ci_low=low,
        ci_high=high,
        gap=gap,
        gap_se=se,
    )


def fit(
    banks: Sequence[Bank],
    cap: int,
    *,
    pilots: Sequence[int] = (4,),
    objective: Objective = "tokens-within-interval",
    token_weight: float = 0.01,
    orders: int = 200,
    seed: int = 0,
    grid: Mapping[str, Any] | None = None,
) -> Fit:
    """The cells (and the number of pilots) that are best under ``objective`` on ``banks``."""
    if not banks:
        raise ValueError("no problems with a complete bank to fit on")
    if cap > min(b.size for b in banks):
        raise ValueError(f"the cap ({cap}) is above the bank's samples per problem")
    all_orders = [orders_of(bank, orders, seed) for bank in banks]
    fits: dict[int, Fit] = {}
    for count in pilots:
        fits[count] = _fit_pilots(
            banks, all_orders, cap, count, objective, token_weight, dict(grid or {})
        )
    by_pilots = {count: (f.accuracy, f.tokens) for count, f in fits.items()}
    best = _best_pilots(fits, objective, token_weight)
    return dataclasses.replace(fits[best], by_pilots=by_pilots)


def _best_pilots(fits: Mapping[int, Fit], objective: Objective, token_weight: float) -> int:
    if objective == "accuracy":
        return max(fits, key=lambda p: (fits[p].accuracy, -fits[p].tokens))
    if objective == "utility":
        return max(fits, key=lambda p: fits[p].accuracy - token_weight * fits[p].tokens / 1000)
    top = max(f.accuracy for f in fits.values())
    problems = next(iter(fits.values())).problems
    low = wilson(round(top * problems), problems)[0]
    return min((p for p in fits if fits[p].accuracy >= low), key=lambda p: fits[p].tokens)


def _fit_pilots(
    banks: Sequence[Bank],
    all_orders: Sequence[Sequence[tuple[int, ...]]],
    cap: int,
    pilots: int,
    objective: Objective,
    token_weight: float,
    grid: dict[str, Any],
) -> Fit:
    tried_cells = candidates(pilots, cap, **grid)
    # The bin of each (problem, order) depends on the pilots alone: replay each cell everywhere.
    bins: dict[str, list[tuple[int, int]]] = {b: [] for b in BINS}
    outcomes: dict[Cell, list[list[Outcome]]] = {}
    for cell in tried_cells:
        everywhere = {b: cell for b in BINS}
        rows = []
        for p, (bank, orders) in enumerate(zip(banks, all_orders, strict=True)):
            row = []
            for o, order in enumerate(orders):
                difficulty, outcome = replay(bank, order, pilots, everywhere, cap)
                if cell is tried_cells[0]:
                    bins[difficulty].append((p, o))
                row.append(outcome)
            rows.append(row)
        outcomes[cell] = rows
    fitted: dict[str, CellFit] = {}
    for bin_name in BINS:
        keys = bins[bin_name]
        if not keys:
            continue
        pairs = {cell: [(p, outcomes[cell][p][o]) for p, o in keys] for cell in tried_cells}
        count = len(all_orders[0])
        raw = [_figures(cell, pairs[cell], None, count) for cell in tried_cells]
        top = max(raw, key=lambda c: (c.accuracy, -c.tokens)).cell
        tried = [_figures(cell, pairs[cell], pairs[top], count) for cell in tried_cells]
        fitted[bin_name] = CellFit(bin_name, _choose(tried, objective, token_weight), tuple(tried))
    chosen = {b: fitted[b].chosen.cell if b in fitted else tried_cells[0] for b in BINS}
    total = [
        replay(bank, order, pilots, chosen, cap)[1]
        for bank, orders in zip(banks, all_orders, strict=True)
        for order in orders
    ]
    confusion: dict[str, dict[str, float]] = {b: dict.fromkeys(BINS, 0.0) for b in BINS}
    for bin_name in BINS:
        for p, count in Counter(p for p, _ in bins[bin_name]).items():
            confusion[pass1_bin(banks[p].pass1)][bin_name] += count / len(all_orders[p])
    return Fit(
        pilots=pilots,
        cap=cap,
        objective=objective,
        cells=fitted,
        accuracy=sum(o.correct for o in total) / len(total),
        tokens=statistics.fmean(o.tokens for o in total),
        confusion=confusion,
        problems=len(banks),
        orders=len(all_orders[0]),
        by_pilots={},
    )


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
