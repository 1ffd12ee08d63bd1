"""Result rows: one JSON line per (problem, model, strategy, budget, sample) under the run's
folder. Each row is written with one ``write`` and flushed, so a kill leaves at most a torn last
line, which reading ignores (that row is simply run again).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ROWS_FILE", "Row", "RowKey", "RowWriter", "read_rows", "reprice"]

ROWS_FILE = "rows.jsonl"
RowKey = tuple[str, str, str, int, int]


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    model: str
    provider: str  # "openai" (our proxy or any compatible endpoint) or "litellm"
    strategy: str  # a search strategy, or "none" for a single plain call
    budget: int
    sample: int
    answer: str
    reference: str
    correct: bool
    prompt_tokens: int
    completion_tokens: int
    hidden_tokens: int  # generated but not returned: search samples, reasoning
    latency_s: float
    cost_usd: float | None
    level: int | None = None
    tts: dict[str, Any] = field(default_factory=dict)  # the proxy's decisions, when it sent any

    @property
    def key(self) -> RowKey:
        return (self.id, self.model, self.strategy, self.budget, self.sample)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Row:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def read_rows(folders: Iterable[Path]) -> list[Row]:
    """Every complete row under ``folders`` (a torn last line is skipped)."""
    rows: list[Row] = []
    for folder in folders:
        path = folder / ROWS_FILE if folder.is_dir() else folder
        if not path.exists():
            continue
        for line in path.read_text("utf-8").splitlines(keepends=True):
            if not line.endswith("\n"):
                break  # the run was killed mid-write; that row is redone on resume
            if line.strip():
                rows.append(Row.from_json(json.loads(line)))
    return rows


def reprice(folder: Path, keys: set[RowKey], usd_per_token: float) -> None:
    """Set ``cost_usd = tokens * usd_per_token`` on the rows with ``keys`` (atomic rewrite)."""
    path = folder / ROWS_FILE
    lines = []
    for row in read_rows([folder]):
        if row.key in keys:
            row = dataclasses.replace(row, cost_usd=row.tokens * usd_per_token)
        lines.append(json.dumps(dataclasses.asdict(row), ensure_ascii=False) + "\n")
    temporary = path.with_suffix(".tmp")
    temporary.write_text("".join(lines), "utf-8")
    os.replace(temporary, path)


class RowWriter:
    """Appends rows to ``folder/rows.jsonl``; knows which keys are done."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / ROWS_FILE
        self.done: set[RowKey] = {row.key for row in read_rows([folder])}
        self._truncate_torn_tail()
        self._file = self.path.open("a", encoding="utf-8")

    def _truncate_torn_tail(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            with self.path.open("r+b") as f:
                f.truncate(end)

    def write(self, rows: Iterable[Row]) -> list[Row]:
        """Append the rows not already done, in one write; returns those."""
        new = [row for row in rows if row.key not in self.done]
        if not new:
            return new
        text = "".join(json.dumps(dataclasses.asdict(r), ensure_ascii=False) + "\n" for r in new)
        self._file.write(text)
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.update(row.key for row in new)
        return new

    def close(self) -> None:
        self._file.close()
