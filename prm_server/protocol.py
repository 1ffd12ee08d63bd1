"""Wire models of ``POST /v1/score`` (the proxy's client mirrors them; a golden JSON file in
``tests/golden/`` pins both sides)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ScoreRequest", "ScoreResponse", "ScoreUsage"]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    problem: str
    candidates: list[list[str]] = Field(min_length=1)


class ScoreUsage(BaseModel):
    prompt_tokens: int


class ScoreResponse(BaseModel):
    model: str
    scores: list[list[float]]
    usage: ScoreUsage
