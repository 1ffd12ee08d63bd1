"""The rules file of ``auto`` (``proxy/auto_rules.toml``, and what ``tts-eval calibrate`` writes),
as pydantic models: every section and cell typed, unknown fields refused, and each error turned
into one line that names the place (``fitted.confidence.hard.budget: ...``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from proxy.settings import ScorerKind
from proxy.wire.json_types import JSONObject
from proxy.wire.tts import ScorerClass, SizeClass
from strategies import CellMethod, Difficulty, MethodName, SamplingMode

__all__ = ["CellSpec", "FittedScorer", "RulesFile", "first_error"]

FittedScorerName = ScorerKind  # a fitted section is named by the request's scorer


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutoSection(_Strict):
    pilots: int = Field(default=4, ge=1)  # pilot samples; the first samples of the vote
    confidence: float = Field(default=0.95, gt=0.5, le=1.0)  # the stopping rule's threshold
    chunk: int = Field(default=4, ge=1)  # further samples drawn this many at a time
    # sequential: pilots, then chunks judged between them; concurrent: the samples streamed at
    # once, the rest stopped when the vote settles (X-TTS-Auto-Mode overrides it per request)
    mode: SamplingMode = "sequential"
    # concurrent: at most this many streams at once, a new one started as one ends (unset: all
    # at once); fewer cut-off streams when the vote settles, at some wall time
    window: int | None = Field(default=None, ge=1)


class SizesSection(_Strict):
    small_below_b: float = Field(default=7, gt=0)
    large_from_b: float = Field(default=72, gt=0)


class FamilySpec(_Strict):
    match: list[str] | None = None  # substrings of the served model's name (default: the key)
    system_prompt: str = ""
    user_suffix: str = ""
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    methods: list[MethodName] | None = None


class ScorersSection(_Strict):
    strong: list[str] = Field(default_factory=list)
    weak: list[str] = Field(default_factory=list)


class CellSpec(_Strict):
    """One fitted cell: the method and budget for a difficulty bin, its stopping rule, and
    the evidence it was chosen on."""

    method: CellMethod
    budget: int | None = Field(default=None, ge=1)  # the total, pilots included
    confidence: float | None = Field(default=None, gt=0.5, le=1.0)
    chunk: int | None = Field(default=None, ge=1)
    mode: SamplingMode = "sequential"  # concurrent: this cell's samples streamed at once
    evidence: JSONObject = Field(default_factory=dict)


class FittedScorer(_Strict):
    pilots: int | None = Field(default=None, ge=1)  # else [auto]'s
    easy: CellSpec | None = None
    medium: CellSpec | None = None
    hard: CellSpec | None = None

    def cells(self) -> dict[Difficulty, CellSpec]:
        bins: dict[Difficulty, CellSpec | None] = {
            "easy": self.easy,
            "medium": self.medium,
            "hard": self.hard,
        }
        return {name: cell for name, cell in bins.items() if cell is not None}


class RulesFile(_Strict):
    """A whole rules file; a user's file holds only the sections it replaces."""

    auto: AutoSection | None = None
    sizes: SizesSection | None = None
    families: dict[str, FamilySpec] | None = None
    scorers: ScorersSection | None = None
    rules: dict[SizeClass, dict[ScorerClass, dict[Difficulty, MethodName]]] | None = None
    fitted: dict[FittedScorerName, FittedScorer] | None = None
    provenance: JSONObject | None = None


def first_error(exc: ValidationError) -> str:
    """The first validation error as ``place: what is wrong``: an unknown field named on its
    table, a key that is no known name (a scorer, a bin) named as such."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    if loc and loc[-1] == "[key]":
        return f"{'.'.join(loc[:-1])}: not a known name ({error['msg']})"
    where = ".".join(loc)
    if error["type"] == "extra_forbidden":
        table, _, field = where.rpartition(".")
        return f"{table or 'the file'}: unknown field {field!r}"
    return f"{where}: {error['msg']}"
