"""Verdicts: the answer to "is my small model with search worth it?" in words, for each searched
configuration against each single-call one (a large API, or a model without search), paired on
the problems both answered: who is more accurate, by how much and how surely (the exact sign test
on the problems one got right and the other wrong), and at what price and latency."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tts_eval.rows import Row
from tts_eval.stats import sign_test

__all__ = ["Verdict", "verdicts", "verdicts_markdown"]

_SINGLE = ("none", "cot")
_ALPHA = 0.05


@dataclass(frozen=True, slots=True)
class Verdict:
    searched: str
    single: str
    problems: int
    searched_accuracy: float
    single_accuracy: float
    won: int  # problems the searched side got right and the single call wrong
    lost: int
    p_value: float
    cost_ratio: float | None  # searched $ per problem / single $ per problem
    latency_ratio: float | None  # p50 latency, searched / single

    @property
    def gap(self) -> float:
        return self.searched_accuracy - self.single_accuracy

    @property
    def is_significant(self) -> bool:
        return self.p_value < _ALPHA

    def sentence(self) -> str:
        if self.gap > 0:
            head = f"**{self.searched}** beats **{self.single}**"
        elif self.gap < 0:
            head = f"**{self.single}** beats **{self.searched}**"
        else:
            head = f"**{self.searched}** ties **{self.single}**"
        sure = "significant" if self.is_significant else "not significant"
        figures = (
            f"{self.searched_accuracy:.1%} vs {self.single_accuracy:.1%} "
            f"({self.gap * 100:+.1f} pts; {self.won} won, {self.lost} lost of {self.problems} "
            f"paired problems, sign test p = {self.p_value:.3f}, {sure})"
        )
        return f"- {head}: {figures}{self._price()}"

    def _price(self) -> str:
        if self.cost_ratio is None:
            return "; no price for one side, so no call at equal $."
        ratio = self.cost_ratio
        latency = f", {self.latency_ratio:.2g}× its p50 latency" if self.latency_ratio else ""
        text = f"; the search costs {ratio:.2g}× the single call's $ per problem{latency}"
        if self.gap > 0 and ratio <= 1:
            return text + ": better and no dearer, so the search wins at equal $."
        if self.gap <= 0 and ratio >= 1:
            return text + ": no better and no cheaper, so the single call wins at equal $."
        if self.gap > 0:
            return text + f": {self.gap * 100:.1f} pts bought at {ratio:.2g}× the $."
        return text + f": {-self.gap * 100:.1f} pts given up for {1 / ratio:.2g}× less $."


def _label(row: Row) -> str:
    if row.strategy in _SINGLE:
        return f"{row.model} (single call)"
    return f"{row.model} {row.strategy}@{row.budget}"


def verdicts(rows: Iterable[Row]) -> list[Verdict]:
    """One verdict per (searched configuration, single-call configuration) pair with problems in
    common, on their first sample per problem."""
    groups: dict[str, dict[str, Row]] = defaultdict(dict)
    for row in rows:
        groups[_label(row)].setdefault(row.id, row)
    single = sorted(k for k in groups if k.endswith("(single call)"))
    searched = sorted(k for k in groups if k not in single)
    out = []
    for ours in searched:
        for theirs in single:
            common = sorted(groups[ours].keys() & groups[theirs].keys())
            if common:
                out.append(_verdict(ours, theirs, common, groups[ours], groups[theirs]))
    return out


def _verdict(
    ours: str, theirs: str, ids: Sequence[str], a: dict[str, Row], b: dict[str, Row]
) -> Verdict:
    won = sum(a[i].correct and not b[i].correct for i in ids)
    lost = sum(b[i].correct and not a[i].correct for i in ids)
    costs_a = [a[i].cost_usd for i in ids]
    costs_b = [b[i].cost_usd for i in ids]
    cost_ratio = None
    if all(c is not None for c in costs_a + costs_b):
        mean_b = statistics.fmean(c for c in costs_b if c is not None)
        if mean_b > 0:
            cost_ratio = statistics.fmean(c for c in costs_a if c is not None) / mean_b
    p50_b = statistics.median(b[i].latency_s for i in ids)
    latency = statistics.median(a[i].latency_s for i in ids) / p50_b if p50_b > 0 else None
    return Verdict(
        searched=ours,
        single=theirs,
        problems=len(ids),
        searched_accuracy=sum(a[i].correct for i in ids) / len(ids),
        single_accuracy=sum(b[i].correct for i in ids) / len(ids),
        won=won,
        lost=lost,
        p_value=sign_test(won, lost),
        cost_ratio=cost_ratio,
        latency_ratio=latency,
    )


def verdicts_markdown(rows: Iterable[Row]) -> str:
    found = verdicts(rows)
    if not found:
        return ""
    return (
        "## Verdicts (paired on the problems both answered)\n\n"
        + "\n".join(v.sentence() for v in found)
        + "\n"
    )
