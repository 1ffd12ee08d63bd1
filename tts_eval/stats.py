"""Per-group figures of a set of rows: accuracy with a Wilson 95 % interval, tokens and dollars per
problem, latency percentiles. Pure functions.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tts_eval.rows import Row

__all__ = ["Group", "GroupKey", "difficulty_bins", "sign_test", "summarise", "wilson"]

GroupKey = tuple[str, str, str, int]  # model, provider, strategy, budget
_Z95 = 1.959963984540054


def wilson(successes: int, trials: int, z: float = _Z95) -> tuple[float, float]:
    """The Wilson score interval (sound at small n and at 0 % / 100 %)."""
    if trials == 0:
        return 0.0, 0.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    # at 0 % and 100 % one end is p itself; rounding must not put it on the wrong side of p
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True, slots=True)
class Group:
    model: str
    provider: str
    strategy: str
    budget: int
    n: int
    correct: int
    ci_low: float
    ci_high: float
    tokens_per_problem: float
    hidden_per_problem: float
    cost_per_problem: float | None  # None when any row's price is unknown
    latency_p50_s: float
    latency_p95_s: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def is_baseline(self) -> bool:
        """A single plain call (a large API, or the policy without search)."""
        return self.strategy == "none"

    @property
    def label(self) -> str:
        return self.model if self.is_baseline else f"{self.model} {self.strategy}"


def _group(key: GroupKey, rows: list[Row]) -> Group:
    correct = sum(r.correct for r in rows)
    costs = [r.cost_usd for r in rows]
    latencies = [r.latency_s for r in rows]
    low, high = wilson(correct, len(rows))
    return Group(
        *key,
        n=len(rows),
        correct=correct,
        ci_low=low,
        ci_high=high,
        tokens_per_problem=statistics.fmean(r.tokens for r in rows),
        hidden_per_problem=statistics.fmean(r.hidden_tokens for r in rows),
        cost_per_problem=None
        if any(c is None for c in costs)
        else statistics.fmean(c for c in costs if c is not None),
        latency_p50_s=_percentile(latencies, 0.5),
        latency_p95_s=_percentile(latencies, 0.95),
    )


def summarise(rows: Iterable[Row]) -> list[Group]:
    """One ``Group`` per (model, provider, strategy, budget), sorted for reading."""
    groups: dict[GroupKey, list[Row]] = defaultdict(list)
    for row in rows:
        groups[(row.model, row.provider, row.strategy, row.budget)].append(row)
    return [_group(key, members) for key, members in sorted(groups.items())]


def difficulty_bins(rows: Iterable[Row]) -> dict[str, str]:
    """Problem id -> the paper's bin from the pass@1 of single-sample rows (cot/none) when some
    problem has several samples: easy (> 50 %), medium (10-50 %), hard (< 10 %); else MATH
    levels ("level 1".."level 5"); problems with neither are left out."""
    rows = list(rows)
    single = [r for r in rows if r.strategy in ("cot", "none")]
    by_problem: dict[str, list[bool]] = defaultdict(list)
    for row in single:
        by_problem[row.id].append(row.correct)
    if any(len(v) > 1 for v in by_problem.values()):
        bins = {}
        for problem, outcomes in by_problem.items():
            rate = sum(outcomes) / len(outcomes)
            bins[problem] = "easy" if rate > 0.5 else "medium" if rate >= 0.1 else "hard"
        return bins
    return {r.id: f"level {r.level}" for r in rows if r.level is not None}


def sign_test(won: int, lost: int) -> float:
    """Two-sided exact sign test (McNemar's exact test on the discordant pairs): the chance of a
    split at least this uneven if either side were as likely to win each pair."""
    n = won + lost
    if n == 0:
        return 1.0
    tail: float = sum(math.comb(n, k) for k in range(min(won, lost) + 1)) / 2**n
    return min(1.0, 2 * tail)
