"""Wire models of ``POST /v1/score`` (the proxy's client mirrors them; a golden JSON file in
``tests/golden/`` pins both sides)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = ["ScoreRequest", "ScoreResponse", "ScoreUsage"]


def _unicode(text: str) -> str:
    """Text a tokenizer can take: no lone UTF-16 surrogate (JSON can carry one, UTF-8 cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("holds a lone UTF-16 surrogate: not valid Unicode text") from exc
    return text


Text = Annotated[str, AfterValidator(_unicode)]


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    problem: Text
    candidates: list[list[Text]] = Field(min_length=1)


class ScoreUsage(BaseModel):
    prompt_tokens: int


class ScoreResponse(BaseModel):
    model: str
    scores: list[list[float]]
    usage: ScoreUsage
