"""The report's PNGs (matplotlib, Agg backend: no display needed): accuracy against budget,
tokens and dollars, with large-API rows as horizontal bands, and accuracy by difficulty."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # a file renderer; must precede pyplot's import
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tts_eval.rows import Row
from tts_eval.stats import Group, difficulty_bins, wilson

__all__ = ["plot_all", "save_figure"]

XAxis = Callable[[Group], float | None]
_ACCURACY = "accuracy (%) ± 95 % CI"


def _lines(ax: Axes, groups: list[Group], x_of: XAxis) -> None:
    series: dict[str, list[Group]] = defaultdict(list)
    for group in groups:
        if not group.is_baseline:
            series[group.label].append(group)
    for label, members in sorted(series.items()):
        points = sorted((x, g) for g in members if (x := x_of(g)) is not None)
        if not points:
            continue
        xs = [x for x, _ in points]
        ys = [g.accuracy * 100 for _, g in points]
        errors = [
            [(g.accuracy - g.ci_low) * 100 for _, g in points],
            [(g.ci_high - g.accuracy) * 100 for _, g in points],
        ]
        ax.errorbar(xs, ys, yerr=errors, marker="o", capsize=3, label=label)


def _bands(ax: Axes, groups: list[Group], x_of: XAxis | None) -> None:
    palette = matplotlib.colormaps["Dark2"]
    for i, group in enumerate(g for g in groups if g.is_baseline):
        colour = palette(i % palette.N)
        ax.axhspan(group.ci_low * 100, group.ci_high * 100, color=colour, alpha=0.15)
        ax.axhline(
            group.accuracy * 100, color=colour, linestyle="--", label=f"{group.label} (single call)"
        )
        x = x_of(group) if x_of else None
        if x is not None:
            ax.plot([x], [group.accuracy * 100], marker="*", markersize=12, color=colour)


def save_figure(
    fig: Figure,
    ax: Axes,
    path: Path,
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    log_base: int | None = None,
) -> None:
    """Label, lay out, write and close one figure."""
    if log_base is not None:
        ax.set_xscale("log", base=log_base)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _figure(
    groups: list[Group],
    x_of: XAxis,
    xlabel: str,
    title: str,
    path: Path,
    log2: bool = False,
    band_x: bool = True,
) -> bool:
    if not any(x_of(g) is not None for g in groups if not g.is_baseline):
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    _lines(ax, groups, x_of)
    _bands(ax, groups, x_of if band_x else None)
    save_figure(
        fig, ax, path, xlabel=xlabel, ylabel=_ACCURACY, title=title, log_base=2 if log2 else 10
    )
    return True


def _by_difficulty(rows: list[Row], path: Path) -> bool:
    bins = difficulty_bins(rows)
    if not bins:
        return False
    names = sorted(
        set(bins.values()),
        key=lambda b: (
            ("easy", "medium", "hard").index(b)
            if b in ("easy", "medium", "hard")
            else 3 + int(b.split()[-1])
        ),
    )
    outcomes: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row.id in bins:
            label = (
                row.model if row.strategy == "none" else f"{row.model} {row.strategy}@{row.budget}"
            )
            outcomes[label][bins[row.id]].append(row.correct)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(outcomes), 1)
    for i, (label, per_bin) in enumerate(sorted(outcomes.items())):
        xs = [k + i * width for k in range(len(names))]
        ys, low, high = [], [], []
        for name in names:
            results = per_bin.get(name, [])
            accuracy = sum(results) / len(results) if results else 0.0
            lo, hi = wilson(sum(results), len(results))
            ys.append(accuracy * 100)
            low.append((accuracy - lo) * 100)
            high.append((hi - accuracy) * 100)
        ax.bar(xs, ys, width, yerr=[low, high], capsize=2, label=label)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(names))], names)
    save_figure(
        fig, ax, path, xlabel="difficulty", ylabel=_ACCURACY, title="Accuracy by difficulty"
    )
    return True


def plot_all(groups: list[Group], rows: list[Row], out: Path) -> list[Path]:
    """Write every plot the data allows; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    figures = [
        (
            "accuracy_vs_budget.png",
            lambda g: float(g.budget),
            "budget N (samples, log2)",
            "Accuracy vs budget",
            True,
            False,
        ),
        (
            "accuracy_vs_tokens.png",
            lambda g: g.tokens_per_problem or None,
            "tokens per problem (prompt + completion, log)",
            "Accuracy vs tokens",
            False,
            True,
        ),
        (
            "accuracy_vs_cost.png",
            lambda g: g.cost_per_problem or None,
            "$ per problem (log)",
            "Accuracy vs cost",
            False,
            True,
        ),
    ]
    for name, x_of, xlabel, title, log2, band_x in figures:
        if _figure(groups, x_of, xlabel, title, out / name, log2=log2, band_x=band_x):
            written.append(out / name)
    if _by_difficulty(rows, out / "accuracy_by_difficulty.png"):
        written.append(out / "accuracy_by_difficulty.png")
    return written
