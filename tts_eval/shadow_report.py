"""The report of the proxy's shadow comparisons: agreement with the baseline, accuracy where a
reference answer was sent, and the cost and latency ratios, per strategy and budget."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from experiments import Comparison
from tts_eval.grading import equivalent
from tts_eval.plots import save_figure
from tts_eval.report import markdown_table
from tts_eval.rows import Row
from tts_eval.stats import wilson

__all__ = ["SHADOW_COLUMNS", "labelled_rows", "shadow_table", "write_agreement_plot"]

SHADOW_COLUMNS = (
    "strategy",
    "budget",
    "baseline",
    "n",
    "agree % (95% CI)",
    "baseline failed",
    "ours correct %",
    "baseline correct %",
    "tokens ours/base",
    "$ ratio",
    "p50 latency ratio",
)
ShadowKey = tuple[str, int, str]


def _groups(records: list[Comparison]) -> dict[ShadowKey, list[Comparison]]:
    groups: dict[ShadowKey, list[Comparison]] = defaultdict(list)
    for c in records:
        groups[(c.strategy, c.budget or 0, c.baseline.model)].append(c)
    return dict(sorted(groups.items()))


def _ratio(ours: list[float | None], theirs: list[float | None]) -> str:
    a = [v for v in ours if v is not None]
    b = [v for v in theirs if v is not None]
    if not a or not b or len(a) != len(ours) or not sum(b):
        return "n/a"
    return f"{sum(a) / sum(b):.2f}"


def _correct(records: list[Comparison], side: str) -> str:
    labelled = [c for c in records if c.reference is not None]
    if not labelled:
        return "n/a"
    hits = sum(bool(_is_correct(c, side)) for c in labelled)
    return f"{hits / len(labelled) * 100:.1f} (n={len(labelled)})"


def _is_correct(c: Comparison, side: str) -> bool:
    s = c.primary if side == "primary" else c.baseline
    if c.reference is None or s.status != "ok":
        return False
    return equivalent(s.answer or "", c.reference)


def _cells(key: ShadowKey, records: list[Comparison]) -> list[str]:
    strategy, budget, baseline = key
    judged = [c for c in records if c.agree is not None]
    agree = sum(bool(c.agree) for c in judged)
    low, high = wilson(agree, len(judged))
    failed = sum(c.baseline.status != "ok" for c in records)
    ok = [c for c in records if c.baseline.status == "ok"]
    tokens = _ratio(
        [float(c.primary.prompt_tokens + c.primary.completion_tokens) for c in ok],
        [float(c.baseline.prompt_tokens + c.baseline.completion_tokens) for c in ok],
    )
    p50 = (
        [
            statistics.median([c.primary.latency_s or 0.0 for c in ok]),
            statistics.median([c.baseline.latency_s or 0.0 for c in ok]),
        ]
        if ok
        else [0.0, 0.0]
    )
    return [
        strategy,
        str(budget),
        baseline,
        str(len(records)),
        f"{agree / len(judged) * 100:.1f} ({low * 100:.1f}-{high * 100:.1f})" if judged else "n/a",
        str(failed),
        _correct(records, "primary"),
        _correct(records, "baseline"),
        tokens,
        _ratio([c.primary.cost_usd for c in ok], [c.baseline.cost_usd for c in ok]),
        f"{p50[0] / p50[1]:.2f}" if p50[1] else "n/a",
    ]


def shadow_table(records: list[Comparison]) -> str:
    rows = [_cells(key, members) for key, members in _groups(records).items()]
    return markdown_table(SHADOW_COLUMNS, rows)


def labelled_rows(records: list[Comparison]) -> list[Row]:
    """Both sides of every comparison with a reference answer, as eval rows (for the table and
    plots of ``tts-eval report``)."""
    rows = []
    for c in records:
        if c.reference is None:
            continue
        for side, strategy, budget, provider in (
            (c.primary, c.strategy, c.budget or 1, "openai"),
            (c.baseline, "none", 1, "litellm"),
        ):
            if side.status != "ok":
                continue
            rows.append(
                Row(
                    id=c.request_id,
                    model=side.model,
                    provider=provider,
                    strategy=strategy,
                    budget=budget,
                    sample=0,
                    answer=side.answer or "",
                    reference=c.reference,
                    correct=_is_correct(c, "primary" if side is c.primary else "baseline"),
                    prompt_tokens=side.prompt_tokens,
                    completion_tokens=side.completion_tokens,
                    hidden_tokens=side.hidden_tokens,
                    latency_s=side.latency_s or 0.0,
                    cost_usd=side.cost_usd,
                    tts=c.tts,
                )
            )
    return rows


def write_agreement_plot(records: list[Comparison], path: Path) -> bool:
    series: dict[str, list[tuple[int, float, float, float]]] = defaultdict(list)
    for (strategy, budget, baseline), members in _groups(records).items():
        judged = [c for c in members if c.agree is not None]
        if not judged:
            continue
        agree = sum(bool(c.agree) for c in judged)
        low, high = wilson(agree, len(judged))
        series[f"{strategy} vs {baseline}"].append(
            (max(budget, 1), agree / len(judged) * 100, low * 100, high * 100)
        )
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, points in sorted(series.items()):
        points.sort()
        ax.errorbar(
            [p[0] for p in points],
            [p[1] for p in points],
            yerr=[[p[1] - p[2] for p in points], [p[3] - p[1] for p in points]],
            marker="o",
            capsize=3,
            label=label,
        )
    save_figure(
        fig,
        ax,
        path,
        xlabel="budget N (log2)",
        log_base=2,
        ylabel="agreement with the baseline (%) ± 95 % CI",
        title="Shadow comparisons: agreement vs budget",
    )
    return True
