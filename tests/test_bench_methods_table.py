"""``bench.methods_table``: the groups side by side on the problems every configuration answered,
generated tokens against majority@16's."""

from __future__ import annotations

from pathlib import Path

from bench.methods_table import report
from tts_eval.rows import Row, RowWriter


def row(problem: str, strategy: str, budget: int, correct: bool, generated: int) -> Row:
    return Row(
        id=problem,
        model="m",
        provider="openai",
        strategy=strategy,
        budget=budget,
        sample=0,
        answer="",
        reference="",
        correct=correct,
        prompt_tokens=10,
        completion_tokens=generated,
        hidden_tokens=0,
        latency_s=1.0,
        cost_usd=None,
    )


def write(folder: Path, rows: list[Row]) -> None:
    writer = RowWriter(folder)
    writer.write(rows)
    writer.close()


def test_only_problems_every_configuration_answered_count(tmp_path: Path) -> None:
    write(
        tmp_path / "confidence",
        [
            row("p1", "majority", 16, False, 1000),
            row("p2", "majority", 16, True, 3000),
            row("p3", "majority", 16, True, 9999),  # no other configuration has p3: left out
            row("p1", "deepconf", 16, True, 500),
            row("p2", "deepconf", 16, True, 1000),
        ],
    )
    write(
        tmp_path / "verifier",
        [row("p1", "beam_search", 8, True, 800), row("p2", "beam_search", 8, False, 1200)],
    )
    write(
        tmp_path / "offline",
        [row("p1", "deepconf", 8, False, 700), row("p2", "deepconf", 8, False, 700)],
    )
    write(
        tmp_path / "confidence",
        [
            row("p1", "particle_filtering", 8, False, 600),
            row("p2", "particle_filtering", 8, True, 800),
        ],
    )
    # a paired group on one problem only: paired with its baseline, not in the main table
    write(tmp_path / "gibbs", [row("p1", "particle_filtering", 8, True, 400)])
    text, pairs = report(tmp_path).split("\n\n")
    assert pairs == (
        "particle Gibbs, 2 sweeps of 4 @8 against particle_filtering (confidence) @8, 1 "
        "problems: 100.0 % against 0.0 % (won 1, lost 0); generated tokens 400 against 600"
    )
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines()[2:]}
    assert set(lines) == {
        "majority @16",
        "deepconf online @16",
        "beam_search (verifier) @8",
        "deepconf offline @8",
        "particle_filtering (confidence) @8",
    }
    assert (
        "| 2 | 50.0 (" in lines["majority @16"]
        and "| 2000 ± 1414 | 100% |" in (lines["majority @16"])
    )
    assert (
        "| 2 | 100.0 (" in lines["deepconf online @16"]
        and "| 38% |" in (lines["deepconf online @16"])
    )
    assert (tmp_path / "accuracy_vs_generated_tokens.png").stat().st_size > 0
