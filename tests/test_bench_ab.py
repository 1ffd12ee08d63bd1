"""``bench.ab``: the small model's replayed policies against the larger model's greedy rows,
paired on the problems both have, priced at each model's measured throughput, with a verdict."""

from __future__ import annotations

import json
from pathlib import Path

from bench.ab import versus_larger
from tts_eval.calibration import Bank, Expected
from tts_eval.rows import Row, RowWriter


def _throughput(folder: Path, rate: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    line = {"workload": "n=16, 4 in flight", "tokens_per_s": rate}
    (folder / "throughput.jsonl").write_text(json.dumps(line) + "\n")


def _greedy(folder: Path, right: dict[str, bool]) -> None:
    writer = RowWriter(folder / "pass1")
    writer.write(
        Row(
            id=p,
            model="big",
            provider="litellm",
            strategy="none",
            budget=1,
            sample=0,
            answer="",
            reference="",
            correct=ok,
            prompt_tokens=5,
            completion_tokens=100,
            hidden_tokens=0,
            latency_s=2.0,
            cost_usd=None,
        )
        for p, ok in right.items()
    )
    writer.close()


def _bank(problem: str) -> Bank:
    return Bank(problem, None, (0,), 0, (1.0,), (10,))


def test_the_larger_model_wins_when_it_is_right_more_often_for_less(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    _throughput(small, 100.0)
    _throughput(large, 50.0)
    ids = [f"p{i}" for i in range(30)]
    _greedy(large, {p: i % 10 != 0 for i, p in enumerate(ids)} | {"unpaired": True})
    banks = [_bank(p) for p in ids]
    # the small model: right on every tenth problem only, 400 tokens each (2x the larger's $)
    figures = {"auto": [Expected(1.0 if i % 10 == 0 else 0.0, 400, 9.0) for i in range(30)]}
    text = versus_larger(small, large, banks, figures, usd_per_hour=3.6)
    assert "(30 held-out problems both have)" in text  # "unpaired" is no held-out problem
    assert "large, greedy: 90.0 %" in text and "$0.002000 per problem" in text
    row = next(line for line in text.splitlines() if line.startswith("| auto |"))
    assert "| 0.004000 | 200% |" in row and "| 27-3 (p" in row
    assert row.endswith("large wins: more accurate and cheaper |")


def test_no_verdict_without_the_larger_model_s_rows(tmp_path: Path) -> None:
    small, large = tmp_path / "small", tmp_path / "large"
    _throughput(small, 100.0)
    _throughput(large, 50.0)
    figures = {"auto": [Expected(1.0, 400, 9.0)]}
    assert versus_larger(small, large, [_bank("p0")], figures, usd_per_hour=3.6) == ""
