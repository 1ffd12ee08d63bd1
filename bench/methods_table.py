"""The table (and plot) of ``bench.methods``: every configuration of every scorer group on the
problems all of them have answered, accuracy against **generated** tokens.

``tts-eval report`` makes one table per group and counts prompt + generated tokens; the issue's
targets are about generated tokens across groups (deepconf online at N = 16 against majority at
N = 16; a verifier-scored search against majority at N = 8), so this table puts the groups side by
side on the same problems and gives both counts, with each configuration's spread.

Run: ``.venv/bin/python -m bench.methods_table [bench/results/methods-cpu]`` (prints the table,
writes ``accuracy_vs_generated_tokens.png`` there).
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tts_eval.report import markdown_table
from tts_eval.rows import Row, read_rows
from tts_eval.stats import wilson

GROUPS = ("confidence", "verifier", "offline", "aggressive")
# Groups measured against one configuration only, on the problems both answered (kept out of
# the main table, which would otherwise shrink to their problems).
PAIRED = {"gibbs": ("particle Gibbs, 2 sweeps of 4", "confidence", "particle_filtering")}
_SCORED = {"best_of_n", "beam_search", "particle_filtering"}


@dataclass(frozen=True, slots=True)
class Config:
    group: str
    strategy: str
    budget: int

    @property
    def label(self) -> str:
        if self.strategy == "deepconf":
            mode = {"offline": "offline", "aggressive": "online, top 10 %"}.get(
                self.group, "online"
            )
            return f"deepconf {mode} @{self.budget}"
        scorer = f" ({self.group})" if self.strategy in _SCORED else ""
        return f"{self.strategy}{scorer} @{self.budget}"


@dataclass(frozen=True, slots=True)
class Line:
    config: Config
    problems: int
    correct: int
    generated: list[int]
    prompt: list[int]

    @property
    def accuracy(self) -> float:
        return self.correct / self.problems


def balanced(folder: Path) -> tuple[dict[Config, dict[str, Row]], list[str]]:
    """Rows per configuration and problem, and the problems every configuration answered."""
    by_config: dict[Config, dict[str, Row]] = defaultdict(dict)
    for group in GROUPS:
        for row in read_rows([folder / group]):
            by_config[Config(group, row.strategy, row.budget)][row.id] = row
    shared = set.intersection(*(set(rows) for rows in by_config.values())) if by_config else set()
    return dict(by_config), sorted(shared)


def lines(folder: Path) -> tuple[list[Line], list[str]]:
    by_config, problems = balanced(folder)
    out = []
    for config, rows in by_config.items():
        chosen = [rows[p] for p in problems]
        out.append(
            Line(
                config,
                len(chosen),
                sum(r.correct for r in chosen),
                [r.completion_tokens for r in chosen],
                [r.prompt_tokens for r in chosen],
            )
        )
    return sorted(out, key=lambda line: statistics.fmean(line.generated or [0])), problems


def _mean_sd(values: list[int]) -> str:
    if len(values) < 2:
        return f"{statistics.fmean(values):.0f}" if values else "-"
    return f"{statistics.fmean(values):.0f} ± {statistics.stdev(values):.0f}"


def table(found: list[Line], reference: Line | None) -> str:
    headers = (
        "configuration",
        "problems",
        "accuracy % (95% CI)",
        "generated tokens/problem",
        "vs majority@16",
        "prompt tokens/problem",
    )
    rows = []
    for line in found:
        low, high = wilson(line.correct, line.problems)
        ratio = (
            f"{sum(line.generated) / sum(reference.generated):.0%}"
            if reference and sum(reference.generated)
            else "-"
        )
        rows.append(
            [
                line.config.label,
                str(line.problems),
                f"{100 * line.accuracy:.1f} ({100 * low:.1f}-{100 * high:.1f})",
                _mean_sd(line.generated),
                ratio,
                _mean_sd(line.prompt),
            ]
        )
    return markdown_table(headers, rows)


def plot(found: list[Line], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5))
    markers = "osD^vP*Xhp<>"
    for k, line in enumerate(found):  # a legend, not labels: configurations crowd at N = 8
        low, high = wilson(line.correct, line.problems)
        x = statistics.fmean(line.generated)
        spread = [[100 * max(0.0, line.accuracy - low)], [100 * max(0.0, high - line.accuracy)]]
        ax.errorbar(
            [x],
            [100 * line.accuracy],
            yerr=spread,
            fmt=markers[k % len(markers)],
            capsize=3,
            label=line.config.label,
            color=f"C{k % 10}",
            alpha=0.85,
        )
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.set_xlabel("generated tokens per problem (mean)")
    ax.set_ylabel("accuracy % (95% Wilson interval)")
    ax.set_title(f"bench.methods on the CPU stack ({found[0].problems} problems)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def paired(folder: Path) -> str:
    """Each ``PAIRED`` group against its baseline at the same budget: accuracy, problems won and
    lost, generated tokens (mean ± sd)."""
    out = []
    for group, (label, base_group, strategy) in PAIRED.items():
        rows = {(r.strategy, r.budget, r.id): r for r in read_rows([folder / group])}
        if not rows:
            continue
        base = {(r.strategy, r.budget, r.id): r for r in read_rows([folder / base_group])}
        shared = sorted(k for k in rows if k[0] == strategy and k in base)
        if not shared:
            continue
        ours, theirs = [rows[k] for k in shared], [base[k] for k in shared]
        won = sum(a.correct and not b.correct for a, b in zip(ours, theirs, strict=True))
        lost = sum(b.correct and not a.correct for a, b in zip(ours, theirs, strict=True))
        budget = shared[0][1]
        out.append(
            f"{label} @{budget} against {strategy} ({base_group}) @{budget}, {len(shared)} "
            f"problems: {100 * sum(r.correct for r in ours) / len(shared):.1f} % against "
            f"{100 * sum(r.correct for r in theirs) / len(shared):.1f} % (won {won}, lost "
            f"{lost}); generated tokens {_mean_sd([r.completion_tokens for r in ours])} against "
            f"{_mean_sd([r.completion_tokens for r in theirs])}"
        )
    return "\n".join(out)


def report(folder: Path) -> str:
    """Print the table, write the plot next to the rows; the table's text."""
    found, problems = lines(folder)
    if not found or not problems:
        raise SystemExit(f"no problem is answered by every configuration under {folder}")
    reference = next((x for x in found if x.config == Config("confidence", "majority", 16)), None)
    text = table(found, reference)
    plot(found, folder / "accuracy_vs_generated_tokens.png")
    print(text)
    print(f"\n{len(problems)} problems; plot: {folder / 'accuracy_vs_generated_tokens.png'}")
    pairs = paired(folder)
    if pairs:
        print(f"\n{pairs}")
    return f"{text.rstrip()}\n\n{pairs}" if pairs else text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path, nargs="?", default=Path("bench/results/methods-cpu"))
    report(parser.parse_args().folder)


if __name__ == "__main__":
    main()
