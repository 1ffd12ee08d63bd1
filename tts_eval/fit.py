"""The fit: for each bin the pilots put a problem in (the only difficulty ``auto`` can see
online), the cell that is best under the stated objective over many replayed orders of each
problem's bank (``tts_eval.calibration``), and then the number of pilots that is best overall.
A step cell is judged on the problems that ran its live search: its accuracy and spend over the
whole bin are estimated from the paired difference to the bin's most accurate replayed cell.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tts_eval.calibration import (
    BINS,
    Bank,
    Bin,
    Cell,
    Method,
    Outcome,
    StepMethod,
    orders_of,
    pass1_bin,
    replay,
    search_generations,
    searches_needed,
)
from tts_eval.stats import wilson

__all__ = ["OBJECTIVES", "Candidate", "CellFit", "Fit", "Objective", "candidates", "fit"]

Objective = Literal["tokens-within-interval", "accuracy", "utility"]
OBJECTIVES: tuple[Objective, ...] = ("tokens-within-interval", "accuracy", "utility")
_Z95 = 1.959963984540054


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
        if search_generations(step, total, pilots, cap) is not None:
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
