"""``tts-eval report``: the table (stdout, ``report.md``, ``summary.csv``), the plots, and an
optional self-contained ``report.html``; from run folders or from the experiment store."""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
from collections.abc import Sequence
from pathlib import Path

from tts_eval.plots import plot_all
from tts_eval.rows import Row
from tts_eval.stats import Group, summarise

__all__ = ["COLUMNS", "format_cells", "html_page", "markdown_table", "write_report"]

COLUMNS = (
    "model",
    "strategy",
    "budget",
    "n",
    "accuracy % (95% CI)",
    "tokens/problem",
    "hidden/problem",
    "$/problem",
    "p50 s",
    "p95 s",
)


def _money(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6f}"


def format_cells(group: Group) -> list[str]:
    return [
        group.model,
        group.strategy,
        str(group.budget),
        str(group.n),
        f"{group.accuracy * 100:.1f} ({group.ci_low * 100:.1f}-{group.ci_high * 100:.1f})",
        f"{group.tokens_per_problem:.0f}",
        f"{group.hidden_per_problem:.0f}",
        _money(group.cost_per_problem),
        f"{group.latency_p50_s:.2f}",
        f"{group.latency_p95_s:.2f}",
    ]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
    return "\n".join(lines) + "\n"


def _html_block(text: str) -> str:
    """A markdown table as a table; headings and list items as plain paragraphs."""
    lines = [line for line in text.strip().splitlines() if line.startswith("|")]
    prose = [line for line in text.strip().splitlines() if line.strip() and line not in lines]
    paragraphs = "".join(
        f"<p>{html.escape(line.lstrip('#- ').replace('**', ''))}</p>" for line in prose
    )
    return paragraphs + (_html_table(lines) if lines else "")


def _html_table(lines: list[str]) -> str:
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    body = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body
    )
    return f"<table><tr>{cells}</tr>{rows}</table>"


def html_page(tables: list[str], plots: list[Path], title: str) -> str:
    images = "".join(
        f'<figure><img alt="{p.stem}" src="data:image/png;base64,'
        f'{base64.b64encode(p.read_bytes()).decode()}"><figcaption>{p.stem}</figcaption></figure>'
        for p in plots
    )
    style = "body{font-family:sans-serif}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{style}</style></head><body><h1>{html.escape(title)}</h1>"
        f"{''.join(_html_block(t) for t in tables if t.strip())}{images}"
        "</body></html>"
    )


def write_report(
    rows: list[Row],
    out: Path,
    *,
    enable_html: bool = False,
    title: str = "tts-eval report",
    extra_table: str = "",
    extra_plots: Sequence[Path] = (),
) -> tuple[list[Group], str, list[Path]]:
    """Summarise ``rows`` into ``out``: returns the groups, the markdown table and the files."""
    out.mkdir(parents=True, exist_ok=True)
    groups = summarise(rows)
    table = markdown_table(COLUMNS, [format_cells(g) for g in groups]) if groups else ""
    (out / "report.md").write_text(f"# {title}\n\n{table}\n{extra_table}", "utf-8")
    with (out / "summary.csv").open("w", newline="", encoding="utf-8") as f:
        names = [field.name for field in dataclasses.fields(Group)]
        writer = csv.writer(f)
        writer.writerow([*names, "accuracy"])
        for group in groups:
            writer.writerow([*(getattr(group, n) for n in names), group.accuracy])
    files = [out / "report.md", out / "summary.csv"]
    plots = [*extra_plots, *plot_all(groups, rows, out)]
    files += plots
    if enable_html:
        (out / "report.html").write_text(html_page([extra_table, table], plots, title), "utf-8")
        files.append(out / "report.html")
    return groups, table, files
