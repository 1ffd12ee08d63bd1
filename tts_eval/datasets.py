"""Benchmark problems: the bundled MATH-500 and AIME24 (see ``data/README.md`` for provenance) or
any JSONL file whose rows have ``problem`` and ``answer``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

__all__ = ["BUNDLED", "DatasetError", "Fold", "Problem", "in_fold", "load_problems", "parse_fold"]

BUNDLED = {"math500": "math500.jsonl", "aime24": "aime24.jsonl"}


class DatasetError(ValueError):
    """A dataset that cannot be read; the message names the file and line."""


@dataclass(frozen=True, slots=True)
class Problem:
    id: str
    problem: str
    answer: str
    level: int | None = None  # MATH difficulty 1-5, when the dataset has it
    subject: str | None = None


def load_problems(source: str, limit: int | None = None) -> list[Problem]:
    """``source`` is a bundled name (``math500``, ``aime24``) or a JSONL path."""
    if source in BUNDLED:
        text = resources.files("tts_eval").joinpath("data", BUNDLED[source]).read_text("utf-8")
        name = source
    else:
        path = Path(source)
        if not path.is_file():
            raise DatasetError(f"{source}: no such dataset (bundled: {', '.join(BUNDLED)})")
        text, name = path.read_text("utf-8"), str(path)
    problems = _parse(text, name)
    return problems[:limit] if limit is not None else problems


def _parse(text: str, name: str) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        problem = _row(line, f"{name}:{number}", number)
        if problem.id in seen:
            raise DatasetError(f"{name}:{number}: duplicate id {problem.id!r}")
        seen.add(problem.id)
        problems.append(problem)
    if not problems:
        raise DatasetError(f"{name}: no problems")
    return problems


def _row(line: str, where: str, number: int) -> Problem:
    try:
        row = json.loads(line)
    except ValueError as exc:
        raise DatasetError(f"{where}: not valid JSON ({exc})") from exc
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: a row must be a JSON object")
    for key in ("problem", "answer"):
        if not isinstance(row.get(key), str | int | float) or str(row[key]).strip() == "":
            raise DatasetError(f"{where}: missing or empty {key!r}")
    level = row.get("level")
    if isinstance(level, str) and level.startswith("Level "):
        level = level.removeprefix("Level ")
    try:
        level_value = int(level) if level is not None else None
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{where}: 'level' must be an integer, got {level!r}") from exc
    return Problem(
        id=str(row.get("id", row.get("unique_id", number))),
        problem=str(row["problem"]),
        answer=str(row["answer"]),
        level=level_value,
        subject=row.get("subject") if isinstance(row.get("subject"), str) else None,
    )


@dataclass(frozen=True, slots=True)
class Fold:
    """Problem ``index`` of ``count`` disjoint folds, by a hash of each problem's id: the same
    problem always lands in the same fold, whatever the file's order or which other problems it
    holds. ``0/2`` and ``1/2`` are the two halves: calibrate on one, evaluate on the other."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_fold(text: str) -> Fold:
    index, sep, count = text.partition("/")
    try:
        fold = Fold(int(index), int(count))
    except ValueError:
        fold = None
    if not sep or fold is None or fold.count < 2 or not 0 <= fold.index < fold.count:
        raise ValueError(f"a fold is K/M with 0 <= K < M and M >= 2, e.g. 0/2: {text!r}")
    return fold


def in_fold(problem: Problem, fold: Fold) -> bool:
    digest = hashlib.sha256(problem.id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % fold.count == fold.index
