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

Step searches (beam search, DVTS, particle filtering) cannot be replayed from whole samples: a
step cell's search is run live once per problem, in the shape ``auto`` gives it for the
generations the cell leaves after its pilots (``strategies.search_shape``), and attached to the
problem's bank (``Bank.searches``). The replay draws the pilots from the bank as for every cell;
where they do not settle the problem, the outcome is the live search's (its answer and tokens,
plus the pilots'), its answers pooled with the pilots' in the final vote as ``auto`` pools them.
A step cell is judged only on the problems that have its search.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, get_args

from strategies import difficulty_of, draws_to_settle, group_equivalent, keeps_lead
from tts_eval.rows import Row
from tts_eval.stats import wilson

__all__ = [
    "BEAM_WIDTH",
    "BINS",
    "OBJECTIVES",
    "STEP_METHODS",
    "Bank",
    "Bin",
    "Candidate",
    "Cell",
    "CellFit",
    "Expected",
    "Fit",
    "MissingSearchError",
    "Objective",
    "Outcome",
    "Searched",
    "StepMethod",
    "banks_of",
    "candidates",
    "evaluate",
    "fit",
    "fixed",
    "orders_of",
    "pass1_bin",
    "replay",
    "search_key",
    "searches_needed",
]

Bin = Literal["easy", "medium", "hard"]
BINS: tuple[Bin, ...] = ("easy", "medium", "hard")
Objective = Literal["tokens-within-interval", "accuracy", "utility"]
OBJECTIVES: tuple[Objective, ...] = ("tokens-within-interval", "accuracy", "utility")
_Z95 = 1.959963984540054
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
    if cell.method in STEP_METHODS and remaining >= BEAM_WIDTH:
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


def searches_needed(pilots: int, cells: Mapping[Bin, Cell], cap: int) -> set[str]:
    """The live searches (``search_key``) a problem's bank must hold to replay these cells."""
    needed = set()
    for cell in cells.values():
        generations = min(cell.budget, cap) - pilots
        if cell.method in STEP_METHODS and generations >= BEAM_WIDTH:
            needed.add(search_key(cell.method, generations))
    return needed


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
    # The bin's most accurate cell's accuracy plus ``gap``: a step cell's accuracy over the whole
    # bin, estimated from the problems that have its search (the accuracy itself otherwise).
    estimate: float = 0.0


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
    steps: Sequence[tuple[StepMethod, int]] = (),
) -> list[Cell]:
    """The cells tried in every bin: answering from the pilots, each voting method at each
    budget (never above the cap, never below the pilots) with each stopping rule, and each step
    search of ``steps`` ((method, budget)) that leaves at least one beam after the pilots, with
    each confidence at which the pilots answer instead."""
    cells = [Cell("pilots", pilots)]
    for step, total in steps:
        if min(total, cap) - pilots >= BEAM_WIDTH:
            cells += [Cell(step, min(total, cap), c) for c in confidences]
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
        return max(tried, key=lambda c: (c.estimate, -c.tokens))
    if objective == "utility":
        return max(tried, key=lambda c: (c.estimate - token_weight * c.tokens / 1000, -c.tokens))
    # the fewest tokens among the cells not significantly less accurate than the best (paired)
    kept = [c for c in tried if c.gap + _Z95 * c.gap_se >= -1e-12]
    return min(kept, key=lambda c: (c.tokens, -c.estimate))


def _paired_gap(
    ours: Sequence[tuple[int, Outcome]], theirs: Sequence[tuple[int, Outcome]]
) -> tuple[float, float]:
    """Mean accuracy difference over problems (each the mean over its orders) and its standard
    error; the two are the same (problem, order) pairs under two cells."""
    per_problem: dict[int, list[float]] = {}
    for (problem, a), (_, b) in zip(ours, theirs, strict=True):
        per_problem.setdefault(problem, []).append(float(a.correct) - b.correct)
    diffs = [statistics.fmean(v) for v in per_problem.values()]
    if not diffs:
        return 0.0, 0.0
    se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
    return statistics.fmean(diffs), se


def _figures(
    cell: Cell,
    pairs: Sequence[tuple[int, Outcome]],
    orders: int,
    gap: tuple[float, float] = (0.0, 0.0),
    estimate: float | None = None,
) -> Candidate:
    """Figures of ``pairs`` ((problem index, outcome) for each order in the bin), with its
    paired ``gap`` (and standard error) to the bin's best cell. Each problem counts its share of
    orders in the bin, so ``problems`` is what the interval is computed on."""
    accuracy = sum(o.correct for _, o in pairs) / len(pairs)
    problems = sum(Counter(p for p, _ in pairs).values()) / orders
    trials = max(1, round(problems))
    low, high = wilson(round(accuracy * trials), trials)
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
        gap=gap[0],
        gap_se=gap[1],
        estimate=accuracy if estimate is None else estimate,
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


_Replays = dict[Cell, list[list[Outcome] | None]]  # per cell, per problem: each order's outcome


def _replay_everywhere(
    banks: Sequence[Bank],
    all_orders: Sequence[Sequence[tuple[int, ...]]],
    cells: Sequence[Cell],
    pilots: int,
    cap: int,
) -> tuple[_Replays, dict[str, list[tuple[int, int]]]]:
    """Each cell in every bin, on every problem (a step cell on the problems that have its live
    search, None elsewhere); and the (problem, order) pairs in each bin, which depend on the
    pilots alone."""
    bins: dict[str, list[tuple[int, int]]] = {b: [] for b in BINS}
    for p, (bank, orders) in enumerate(zip(banks, all_orders, strict=True)):
        for o, order in enumerate(orders):
            bins[replay(bank, order, pilots, {b: cells[0] for b in BINS}, cap)[0]].append((p, o))
    outcomes: _Replays = {}
    for cell in cells:
        everywhere = {b: cell for b in BINS}
        needed = searches_needed(pilots, everywhere, cap)
        outcomes[cell] = [
            [replay(bank, order, pilots, everywhere, cap)[1] for order in orders]
            if needed <= bank.searches.keys()
            else None
            for bank, orders in zip(banks, all_orders, strict=True)
        ]
    return outcomes, bins


def _fit_bin(
    bin_name: Bin,
    keys: Sequence[tuple[int, int]],
    outcomes: _Replays,
    orders: int,
    objective: Objective,
    token_weight: float,
) -> CellFit:
    """The bin's cell. Each cell's accuracy over the whole bin is estimated (``estimate``): for
    a cell replayed on all its problems, its accuracy; for a step cell, the most accurate of
    those plus its gap to it, paired on the problems it ran, and its tokens, samples, calls and
    latency likewise (that cell's over the whole bin plus the paired difference). Every cell's
    gap to the best estimate is then paired on the problems both cover."""

    def pairs_of(cell: Cell, within: Sequence[tuple[int, int]]) -> list[tuple[int, Outcome]]:
        return [(p, row[o]) for p, o in within if (row := outcomes[cell][p]) is not None]

    def both(cell: Cell, other: Cell) -> list[tuple[int, int]]:
        return [k for k in covering[cell] if outcomes[other][k[0]] is not None]

    covering = {
        cell: [k for k in keys if rows[k[0]] is not None] for cell, rows in outcomes.items()
    }
    cells = [cell for cell in outcomes if covering[cell]]
    whole = [cell for cell in cells if len(covering[cell]) == len(keys)]
    raw = [_figures(cell, pairs_of(cell, keys), orders) for cell in whole]
    top_figures = max(raw, key=lambda c: (c.accuracy, -c.tokens))
    top, top_accuracy = top_figures.cell, top_figures.accuracy
    estimates = {
        cell: top_accuracy
        + _paired_gap(pairs_of(cell, both(cell, top)), pairs_of(top, both(cell, top)))[0]
        for cell in cells
    }
    # the bin's best: the most accurate replayed cell, unless a step cell is estimated above it
    partial = [cell for cell in cells if cell not in whole and estimates[cell] > top_accuracy]
    best = max(partial, key=lambda c: estimates[c]) if partial else top
    tried = []
    for cell in cells:
        figures = _figures(
            cell,
            pairs_of(cell, covering[cell]),
            orders,
            _paired_gap(pairs_of(cell, both(cell, best)), pairs_of(best, both(cell, best))),
            estimates[cell],
        )
        if cell not in whole:  # its spend over the whole bin, as its accuracy is estimated
            shift = _figures(top, pairs_of(top, both(cell, top)), orders)
            figures = dataclasses.replace(
                figures,
                tokens=top_figures.tokens + figures.tokens - shift.tokens,
                samples=top_figures.samples + figures.samples - shift.samples,
                calls=top_figures.calls + figures.calls - shift.calls,
                latency_s=top_figures.latency_s + figures.latency_s - shift.latency_s,
            )
        tried.append(figures)
    return CellFit(bin_name, _choose(tried, objective, token_weight), tuple(tried))


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
    outcomes, bins = _replay_everywhere(banks, all_orders, tried_cells, pilots, cap)
    count = len(all_orders[0])
    fitted: dict[str, CellFit] = {
        b: _fit_bin(b, bins[b], outcomes, count, objective, token_weight) for b in BINS if bins[b]
    }
    chosen = {b: fitted[b].chosen.cell if b in fitted else tried_cells[0] for b in BINS}
    # replayed where every cell's needs are met: the problems with the live searches, if any
    needed = searches_needed(pilots, chosen, cap)
    total = [
        replay(bank, order, pilots, chosen, cap)[1]
        for bank, orders in zip(banks, all_orders, strict=True)
        if needed <= bank.searches.keys()
        for order in orders
    ]
    confusion: dict[str, dict[str, float]] = {b: dict.fromkeys(BINS, 0.0) for b in BINS}
    for bin_name in BINS:
        for p, n in Counter(p for p, _ in bins[bin_name]).items():
            confusion[pass1_bin(banks[p].pass1)][bin_name] += n / len(all_orders[p])
    return Fit(
        pilots=pilots,
        cap=cap,
        objective=objective,
        cells=fitted,
        accuracy=sum(o.correct for o in total) / len(total),
        tokens=statistics.fmean(o.tokens for o in total),
        confusion=confusion,
        problems=len(total) // count,
        orders=count,
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
