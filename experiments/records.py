"""One comparison record: the same request answered by our side (policy + search) and by a
baseline (usually a large API), and how to tell whether the two agree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from strategies import extract_answer, group_equivalent

__all__ = ["Comparison", "Side", "SideStatus", "answers_agree"]

SideStatus = Literal["ok", "error", "timeout"]


@dataclass(frozen=True, slots=True)
class Side:
    """What one side answered and what it cost."""

    model: str
    status: SideStatus = "ok"
    answer: str | None = None  # the extracted final answer
    text: str | None = None  # the full answer text, only when text storage is on
    prompt_tokens: int = 0
    completion_tokens: int = 0
    hidden_tokens: int = 0  # generated but not returned (search samples, reasoning)
    cost_usd: float | None = None
    latency_s: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Comparison:
    """One request, both sides. ``agree`` is None when either side has no answer."""

    request_id: str
    created_at: datetime
    strategy: str
    budget: int | None
    primary: Side
    baseline: Side
    agree: bool | None
    match: Literal["math", "text"] | None = None
    reference: str | None = None  # a known correct answer, when the client sent one
    prompt: str | None = None  # the conversation, only when text storage is on
    tts: dict[str, Any] = field(default_factory=dict)  # the search's decisions (auto etc.)

    def to_row(self) -> dict[str, Any]:
        """Flat column values for the store."""
        row: dict[str, Any] = {
            name: getattr(self, name)
            for name in (
                "request_id",
                "created_at",
                "strategy",
                "budget",
                "agree",
                "match",
                "reference",
                "prompt",
                "tts",
            )
        }
        for prefix, side in (("primary", self.primary), ("baseline", self.baseline)):
            for key, value in dataclasses.asdict(side).items():
                row[f"{prefix}_{key}"] = value
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Comparison:
        names = [f.name for f in dataclasses.fields(Side)]
        primary = Side(**{n: row[f"primary_{n}"] for n in names})
        baseline = Side(**{n: row[f"baseline_{n}"] for n in names})
        own = {f.name for f in dataclasses.fields(cls)} - {"primary", "baseline"}
        values: dict[str, Any] = {n: row[n] for n in own}
        return cls(primary=primary, baseline=baseline, **values)


def answers_agree(
    left: str, right: str, markers: tuple[str, ...] = ("\\boxed{",)
) -> tuple[bool | None, Literal["math", "text"] | None]:
    """Whether two answer texts say the same thing, and how that was decided.

    Both with a marked final answer (``\\boxed{}``): mathematical equivalence of the two answers.
    Otherwise the texts are compared after case and whitespace normalisation. Empty: None.
    """
    if not left.strip() or not right.strip():
        return None, None
    if any(m in left for m in markers) and any(m in right for m in markers):
        a, b = extract_answer(left, markers), extract_answer(right, markers)
        if a and b:
            groups = group_equivalent([a, b])
            return groups[0] == groups[1], "math"
    return _normalised(left) == _normalised(right), "text"


def _normalised(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(".")
