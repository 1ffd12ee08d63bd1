"""``tts-eval calibrate``: draw a bank of samples through a running proxy, fit ``auto``'s cells to
it (``tts_eval.calibration``) and write ``auto_rules.toml`` for ``PROXY_AUTO_RULES_FILE``, with
a report: the pilot bins against the pass@1 bins, every cell tried per bin with the chosen one
marked (``calibration.md``), the accuracy-against-tokens frontier per bin
(``frontier-<scorer>.png``) and both in one ``calibration.html``; one bank and one fit per scorer.

The bank is ``best_of_n`` at the cap with the trace on, under ``--out/bank`` as ordinary
``tts-eval run`` rows, so it resumes after Ctrl-C or a kill like any run.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from tts_eval.calibration import BINS, Bank, Cell, banks_of, evaluate, searches_needed
from tts_eval.fit import Candidate, Fit
from tts_eval.report import html_page, markdown_table
from tts_eval.rows import Row, read_rows
from tts_eval.stats import wilson

__all__ = [
    "BankEstimate",
    "bank_dir",
    "bank_rows",
    "bank_throughput",
    "estimate_bank",
    "rules_toml",
    "scored_banks",
    "scorer_kind",
    "write_outputs",
]


@dataclass(frozen=True, slots=True)
class BankEstimate:
    problems: int  # still to draw
    tokens: float  # generated tokens they will take
    seconds: float | None  # at the throughput seen so far (None: nothing measured yet)
    basis: str  # where the per-problem figure comes from


def bank_rows(folder: Path, model: str, cap: int) -> dict[str, Row]:
    return {
        r.id: r
        for r in read_rows([folder])
        if (r.model, r.strategy, r.budget) == (model, "best_of_n", cap)
    }


def bank_throughput(folder: Path) -> float | None:
    """Generated tokens per second of the bank's earlier runs (``runs.jsonl``), if any."""
    path = folder / "runs.jsonl"
    if not path.exists():
        return None
    rates = [json.loads(line).get("tokens_per_s") for line in path.read_text().splitlines() if line]
    rates = [r for r in rates if r]
    return rates[-1] if rates else None


def bank_dir(out: Path, scorer: str | None) -> Path:
    return out / ("bank" if scorer is None else f"bank-{scorer}")


def scored_banks(rows: Sequence[Row], cap: int) -> tuple[str, list[Bank]]:
    """One scorer's bank rows as banks, with the scorer's name; a ValueError says what is
    wrong with them."""
    banks = banks_of(rows, cap)
    if not banks:
        raise ValueError("no bank rows with their samples: is the endpoint our proxy?")
    reported = {str(r.tts.get("scorer") or "confidence") for r in rows}
    if len(reported) > 1:
        raise ValueError(f"the bank mixes scorers {sorted(reported)}: one bank per scorer")
    return scorer_kind(reported.pop()), banks


def estimate_bank(
    done: Sequence[Row], todo: int, cap: int, max_tokens: int | None, tokens_per_s: float | None
) -> BankEstimate:
    """Generated tokens (and time) the rest of the bank will take: the mean of the problems
    already drawn, else half of ``max_tokens`` per sample (a prior, said as such)."""
    if done:
        per_problem = statistics.fmean(r.completion_tokens for r in done)
        basis = f"the {len(done)} problems drawn so far ({per_problem:,.0f} tokens each)"
    else:
        per_sample = (max_tokens or 1024) / 2
        per_problem = per_sample * cap
        basis = f"a prior of {per_sample:,.0f} tokens per sample (half of --max-tokens)"
    tokens = per_problem * todo
    seconds = tokens / tokens_per_s if tokens_per_s else None
    return BankEstimate(todo, tokens, seconds, basis)


def scorer_kind(reported: str) -> str:
    """The request scorer's name from ``tts.scorer`` ("prm:<model>", "verifier-genprm:…",
    "confidence"): the key of the fitted cells in the rules file."""
    head = reported.split(":", 1)[0]
    return "verifier" if head.startswith("verifier") else head or "confidence"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(round(value, 6))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # a TOML basic string


def _inline_table(values: dict[str, Any]) -> str:
    return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in values.items()) + " }"


def _evidence(candidate: Candidate) -> dict[str, Any]:
    return {
        "problems": candidate.problems,
        "accuracy": candidate.accuracy,
        "ci_low": candidate.ci_low,
        "ci_high": candidate.ci_high,
        "tokens": candidate.tokens,
        "samples": candidate.samples,
        "calls": candidate.calls,
        "latency_s": candidate.latency_s,
        "gap_to_best": candidate.gap,
    }


def rules_toml(fits: Mapping[str, Fit], provenance: dict[str, Any]) -> str:
    """The rules file: provenance, then per scorer its pilots and one fitted cell per bin."""
    lines = [
        "# auto's cells fitted by `tts-eval calibrate` for one policy, per scorer; load it with",
        "# PROXY_AUTO_RULES_FILE. The proxy refuses it for another served model unless",
        "# PROXY_AUTO_RULES_ANY_MODEL=true. Cells it does not hold come from the shipped table.",
        "",
        "[provenance]",
        *(f"{key} = {_toml_value(value)}" for key, value in provenance.items()),
        "",
    ]
    for scorer, fitted in fits.items():
        lines += [f"[fitted.{scorer}]", f"pilots = {fitted.pilots}", ""]
        for difficulty in BINS:
            cell_fit = fitted.cells.get(difficulty)
            if cell_fit is None:
                lines += [f"# {difficulty}: no problem's pilots fell in this bin: the table's", ""]
                continue
            cell = cell_fit.chosen.cell
            lines += [
                f"[fitted.{scorer}.{difficulty}]",
                f"method = {_toml_value(cell.method)}",
                f"budget = {cell.budget}",
            ]
            if cell.method != "pilots":
                lines += [f"confidence = {cell.confidence!r}", f"chunk = {cell.chunk}"]
            lines += [
                'mode = "sequential"',
                f"evidence = {_inline_table(_evidence(cell_fit.chosen))}",
                "",
            ]
    return "\n".join(lines)


def _percent(value: float) -> str:
    return f"{value * 100:.1f}"


def _confusion_table(fit: Fit) -> str:
    rows = []
    for truth in BINS:
        counts = fit.confusion[truth]
        total = sum(counts.values())
        rows.append([truth, *(f"{counts[b]:.1f}" for b in BINS), f"{total:.0f}"])
    headers = ["pass@1 bin \\ pilot bin", *BINS, "problems"]
    return markdown_table(headers, rows)


def _cells_table(fit: Fit, top: int = 8) -> str:
    rows = []
    for difficulty in BINS:
        cell_fit = fit.cells.get(difficulty)
        if cell_fit is None:
            continue
        ranked = sorted(cell_fit.tried, key=lambda c: (-c.accuracy, c.tokens))[:top]
        if cell_fit.chosen not in ranked:
            ranked.append(cell_fit.chosen)
        for c in ranked:
            mark = "**chosen**" if c is cell_fit.chosen else ""
            rows.append(
                [
                    difficulty,
                    c.cell.label,
                    f"{c.problems:.1f}",
                    f"{_percent(c.accuracy)} ({_percent(c.ci_low)}-{_percent(c.ci_high)})",
                    f"{c.gap * 100:+.1f} ± {1.96 * c.gap_se * 100:.1f}",
                    f"{c.tokens:,.0f}",
                    f"{c.samples:.1f}",
                    f"{c.calls:.1f}",
                    f"{c.latency_s:.1f}",
                    mark,
                ]
            )
    headers = [
        "pilot bin",
        "cell",
        "problems",
        "accuracy % (95 % CI)",
        "vs best (paired, pts)",
        "tokens",
        "samples",
        "calls",
        "latency s (est.)",
        "",
    ]
    return markdown_table(headers, rows)


def baselines_table(banks: Sequence[Bank], fit: Fit, orders: int, seed: int) -> str:
    """The fitted ``auto`` against fixed majority and pass@1 on the same banks and orders."""
    cells = {
        b: (fit.cells[b].chosen.cell if b in fit.cells else Cell("pilots", fit.pilots))
        for b in BINS
    }
    # a fitted step cell is replayed only where its live search ran: the same problems for all
    needed = searches_needed(fit.pilots, cells, fit.cap)
    banks = [bank for bank in banks if needed <= bank.searches.keys()]
    policies: dict[str, Any] = {
        "auto (fitted)": (fit.pilots, cells),
        "pass@1": ("majority", 1),
        f"majority@{fit.pilots}": ("majority", fit.pilots),
        f"majority@{fit.cap}": ("majority", fit.cap),
        f"best_of_n@{fit.cap}": ("best_of_n", fit.cap),
    }
    figures = evaluate(banks, policies, fit.cap, orders=orders, seed=seed)
    reference = figures[f"majority@{fit.cap}"]
    rows = []
    for name, per_problem in figures.items():
        accuracy = statistics.fmean(e.accuracy for e in per_problem)
        tokens = statistics.fmean(e.tokens for e in per_problem)
        n = len(per_problem)
        low, high = wilson(round(accuracy * n), n)
        ratio = tokens / statistics.fmean(e.tokens for e in reference)
        rows.append(
            [
                name,
                str(n),
                f"{_percent(accuracy)} ({_percent(low)}-{_percent(high)})",
                f"{tokens:,.0f}",
                f"{ratio:.0%}",
                f"{statistics.fmean(e.latency_s for e in per_problem):.1f}",
            ]
        )
    headers = [
        "policy",
        "problems",
        "accuracy % (95 % CI)",
        "tokens",
        f"tokens vs majority@{fit.cap}",
        "latency s (est.)",
    ]
    return markdown_table(headers, rows)


def plot_frontier(fit: Fit, path: Path) -> None:
    """Accuracy against generated tokens of every cell tried, one panel per pilot bin; the
    chosen cell is a star and the frontier (no cell both cheaper and more accurate) a line."""
    bins = [b for b in BINS if b in fit.cells]
    fig, axes = plt.subplots(
        1, max(1, len(bins)), figsize=(5 * max(1, len(bins)), 4), squeeze=False
    )
    markers = {
        "pilots": "s",
        "majority": "o",
        "best_of_n": "^",
        "beam_search": "D",
        "dvts": "P",
        "particle_filtering": "X",
    }
    for ax, difficulty in zip(axes[0], bins, strict=False):
        cell_fit = fit.cells[difficulty]
        for method, marker in markers.items():
            points = [c for c in cell_fit.tried if c.cell.method == method]
            if not points:
                continue
            ax.scatter(
                [c.tokens for c in points],
                [c.accuracy * 100 for c in points],
                marker=marker,
                alpha=0.5,
                label=method,
            )
        frontier, best = [], -math.inf
        for c in sorted(cell_fit.tried, key=lambda c: (c.tokens, -c.accuracy)):
            if c.accuracy > best:
                frontier.append(c)
                best = c.accuracy
        ax.plot([c.tokens for c in frontier], [c.accuracy * 100 for c in frontier], color="grey")
        chosen = cell_fit.chosen
        ax.scatter(
            [chosen.tokens],
            [chosen.accuracy * 100],
            marker="*",
            s=250,
            color="red",
            label=f"chosen: {chosen.cell.label}",
            zorder=5,
        )
        ax.set_title(f"pilots say {difficulty} ({chosen.problems:.1f} problems)")
        ax.set_xlabel("generated tokens per problem")
        ax.set_ylabel("accuracy (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(
    out: Path,
    fits: Mapping[str, tuple[Fit, Sequence[Bank]]],
    provenance: dict[str, Any],
    orders: int,
    seed: int,
) -> tuple[str, list[Path]]:
    """``auto_rules.toml``, ``calibration.md``, ``frontier-<scorer>.png`` and
    ``calibration.html``."""
    out.mkdir(parents=True, exist_ok=True)
    rules = out / "auto_rules.toml"
    rules.write_text(rules_toml({k: f for k, (f, _) in fits.items()}, provenance), "utf-8")
    objective = provenance.get("objective", "")
    tables, plots = [], []
    for scorer, (fitted, banks) in fits.items():
        tables += [
            f"## {scorer}: the pilots' bin ({fitted.pilots} pilots) against the pass@1 bin "
            f"({fitted.cap} samples)\n\n" + _confusion_table(fitted),
            f"## {scorer}: cells tried per pilot bin (objective: {objective})\n\n"
            + _cells_table(fitted),
            f"## {scorer}: the fitted auto against fixed methods (replayed on the same "
            "problems)\n\n" + baselines_table(banks, fitted, orders, seed + 1),
        ]
        plot = out / f"frontier-{scorer}.png"
        plot_frontier(fitted, plot)
        plots.append(plot)
    title = f"auto calibrated for {provenance.get('model')}"
    text = f"# {title}\n\n" + "\n\n".join(tables) + "\n"
    (out / "calibration.md").write_text(text, "utf-8")
    (out / "calibration.html").write_text(html_page(tables, plots, title), "utf-8")
    return text, [rules, out / "calibration.md", *plots, out / "calibration.html"]


def provenance_of(
    *,
    model: str,
    scorers: Sequence[str],
    dataset: str,
    fold: str | None,
    levels: Sequence[int] | None,
    problems: int,
    cap: int,
    objective: str,
    token_weight: float,
    orders: int,
    seed: int,
    pilots_tried: Sequence[int],
) -> dict[str, Any]:
    values: dict[str, Any] = {
        "fitted_by": "tts-eval calibrate",
        "model": model,
        "scorers": list(scorers),
        "dataset": dataset,
        "fold": fold or "all",
        "levels": list(levels) if levels else "all",
        "problems": problems,
        "cap": cap,
        "pilots_tried": list(pilots_tried),
        "objective": objective,
        "orders": orders,
        "seed": seed,
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "proxy_version": metadata.version("tts-proxy"),
    }
    if objective == "utility":
        values["token_weight"] = token_weight
    return values
