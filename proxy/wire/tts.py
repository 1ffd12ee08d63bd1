"""Our extension of the OpenAI wire format, typed: ``TtsOptions`` (the ``tts`` request object;
the ``X-TTS-*`` headers and model aliases are validated through it too) and ``TtsReport`` (the
``tts`` object on every answer). Both appear in ``/openapi.json`` so clients can generate types.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)

from proxy.settings import ScorerKind, StrategyChoice
from proxy.wire.json_types import JSONObject, JSONValue
from proxy.wire.text import valid_text
from strategies import (
    BudgetUnit,
    NodeStatus,
    SamplingMode,
    ScoringMode,
    StrategyName,
    VotingMode,
)

__all__ = [
    "BudgetUnit",
    "ScorerClass",
    "SizeClass",
    "TtsAnswer",
    "TtsAuto",
    "TtsCandidate",
    "TtsCompare",
    "TtsDeepConf",
    "TtsLatency",
    "TtsOptions",
    "TtsProfile",
    "TtsReport",
    "TtsTraceNode",
]

# The rules file's rows: the policy's size class, and the scorer's class (a strong or weak
# verifier, or none).
SizeClass = Literal["small", "mid", "large"]
ScorerClass = Literal["strong", "weak", "none"]
_CHOICES = ("strategy", "scoring", "voting", "scorer", "deepconf_mode", "auto_mode")


class TtsOptions(BaseModel):
    """Per-request search control: body ``"tts": {...}``, the same fields as ``X-TTS-*``
    headers (headers win, then this object, then a model alias, then the server default)."""

    model_config = ConfigDict(extra="forbid")

    strategy: StrategyChoice | None = None
    budget: int | None = Field(default=None, ge=1, description="N; see TtsReport.budget_unit")
    beam_width: int | None = Field(default=None, ge=1, description="M: beams kept per expansion")
    scoring: ScoringMode | None = None
    voting: VotingMode | None = None
    scorer: ScorerKind | None = None
    max_steps: int | None = Field(default=None, ge=1)
    timeout_ms: int | None = Field(
        default=None, ge=1, le=86_400_000, description="deadline: the best answer so far"
    )
    trace: bool | None = None
    max_total_tokens: int | None = Field(
        default=None,
        ge=1,
        description="a cost cap: the search's generated tokens, all calls "
        "together, never pass it; the best answer so far is returned (tts.is_token_capped)",
    )
    max_generations: int | None = Field(
        default=None,
        ge=1,
        description="a cap on generations: a step search's samples over all its depths "
        "(beam_search, dvts, particle_filtering) never pass it; the best answer so far is "
        "returned (tts.max_generations)",
    )
    keep_percent: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="deepconf: the share of traces kept by "
        "confidence (90: the paper's conservative variant, the default; 10: its aggressive one)",
    )
    deepconf_mode: Literal["online", "offline"] | None = Field(
        default=None,
        description="deepconf: online (streamed, low-confidence traces stopped; "
        "the default) or offline (all traces, then filtered)",
    )
    warmup: int | None = Field(
        default=None,
        ge=1,
        description="deepconf online: warm-up traces (default a quarter of the budget, at least 2)",
    )
    confidence_window: int | None = Field(
        default=None,
        ge=1,
        le=2048,
        description="deepconf: tokens per confidence group "
        "(default: a quarter of the median trace length, 8..2048)",
    )
    particle_iterations: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="particle_filtering: sweeps; > 1 is particle "
        "Gibbs, the budget split over them, each sweep conditioned on the last one's pick",
    )
    max_thinking_tokens: int | None = Field(
        default=None,
        ge=1,
        description="a reasoning model's thinking, capped per sample: at the cap the proxy "
        "closes the thinking section and lets the model answer (budget forcing); whole-sample "
        "methods (cot, majority, best_of_n, deepconf offline)",
    )
    auto_mode: SamplingMode | None = Field(
        default=None,
        description="auto: draw the votes in chunks judged between them (sequential), or "
        "stream them at once and stop the rest when the vote settles (concurrent: one round, "
        "fewer tokens saved); default: the rules file's",
    )
    compare: str | None = Field(default=None, description="shadow with this baseline model")
    reference: str | None = Field(default=None, description="the known correct answer")

    @field_validator(*_CHOICES, mode="before")
    @classmethod
    def _lower(cls, value: JSONValue) -> JSONValue:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("compare", "reference", mode="before")
    @classmethod
    def _text(cls, value: JSONValue) -> JSONValue:
        if value is None:
            return None
        text = valid_text(str(value).strip())
        return text or None


class TtsCandidate(BaseModel):
    """One finished or cut candidate, best first: its answer, score and shape."""

    answer: str | None
    score: float | None
    is_finished: bool
    is_truncated: bool
    steps: int


class TtsAnswer(BaseModel):
    """One distinct final answer with its votes and their total weight."""

    answer: str | None
    votes: int
    weight: float


class TtsLatency(BaseModel):
    """Where the request's milliseconds went: the policy, the scorer, rendering, the proxy."""

    total: float
    policy: float
    prm: float
    render: float
    proxy: float


class TtsProfile(BaseModel):
    """What ``auto`` took the setup to be: the rules file's row."""

    size: SizeClass = Field(description="the policy's size class, from its parameters")
    params_b: float | None = Field(description="the policy's parameters in billions, if known")
    family: str | None = Field(description="the rules file's family the policy belongs to")
    scorer: ScorerClass = Field(description="the scorer's class: a strong or weak verifier, none")


class TtsCompare(BaseModel):
    """The shadow comparison with a baseline model: recording, or skipped (full)."""

    model: str
    status: Literal["recording", "skipped"]


class TtsAuto(BaseModel):
    """What ``auto`` estimated from its pilots, chose and why."""

    pilots: int = Field(description="samples drawn first to judge the problem's difficulty")
    agreement: float = Field(
        description="share of pilots giving the leading answer: the online pass@1 estimate"
    )
    difficulty: Literal["easy", "medium", "hard"]
    method: StrategyName | None = Field(description="null: answered from the pilots")
    reason: str
    stopped_early: bool = Field(description="budget left unspent because the vote was settled")
    confidence: float = Field(
        description="predictive probability that the leading answer stays ahead over the "
        "samples still allowed"
    )
    rules: str = Field(description="the rules file the choice came from (its name)")
    cell: str = Field(description="its cell, e.g. small.none.medium or fitted.confidence.hard")
    budget: int | None = Field(description="the cell's total budget, pilots included")
    evidence: str = Field(description="a fitted cell's evidence: problems, accuracy, tokens")
    mode: SamplingMode = Field(
        description="how the votes were drawn: in chunks judged between them, or all streamed "
        "at once and stopped when the vote settled"
    )
    streams_stopped: int = Field(
        description="concurrent: samples cut off (their streams aborted) once the vote settled; "
        "their tokens are in usage"
    )


class TtsDeepConf(BaseModel):
    """What ``deepconf`` measured and decided."""

    mode: Literal["online", "offline"]
    keep_percent: float = Field(description="share of traces kept in the vote, by confidence")
    window: int = Field(description="tokens per confidence group")
    traces: int = Field(description="traces sampled, warm-up included")
    kept: int = Field(description="traces in the vote")
    stopped: int = Field(description="online: traces closed early for low confidence")
    threshold: float | None = Field(description="online: the warm-up's confidence percentile")
    warmup: int | None = Field(description="online: warm-up traces")
    settled: bool = Field(description="online: sampling ended because the vote was settled")


class TtsTraceNode(BaseModel):
    """One node of the search tree (a sampled step, or a whole sample for Best-of-N-style
    methods), as ``X-TTS-Trace: true`` returns it."""

    node_id: int
    parent_id: int | None
    depth: int
    text: str
    score: float | None
    status: NodeStatus
    call_id: int = Field(description="the policy call that generated it (-1: not known)")
    answer: str | None = Field(description="a final candidate's extracted answer")
    choice: int | None = Field(description="its answer's rank among the choices (0: chosen)")
    tokens: int | None = Field(description="generated tokens of this node's own text")


# Sections that are absent (not null) when they do not apply.
_SECTIONS = (
    "auto",
    "trace",
    "profile",
    "compare",
    "temperature_note",
    "seed",
    "max_total_tokens",
    "is_token_capped",
    "verifier_calls",
    "verifier_tokens",
    "deepconf",
    "particle_iterations",
)


class TtsReport(BaseModel):
    """What was searched, what it cost and what it saw. A pass-through answer carries only
    ``strategy: "none"``, ``requested_strategy``, ``reason`` and ``ignored_params``."""

    strategy: StrategyChoice = Field(description="the method that ran (auto's choice for auto)")
    requested_strategy: StrategyChoice | None = None
    reason: str
    budget: int | None = Field(default=None, description="N as asked (see budget_unit)")
    budget_unit: BudgetUnit | None = Field(
        default=None,
        description="what budget counts: 'samples' (majority, best_of_n: N answers), "
        "'samples_per_depth' (beam_search, dvts: N continuations at each step), 'particles' "
        "(particle_filtering: N particles, one step each per round), 'samples_cap' "
        "(auto: at most N generations in all), 'unused' (cot: one answer)",
    )
    max_generations: int | None = Field(
        default=None,
        description="the most generations this budget allows (N x max_steps for step searches)",
    )
    budget_spent: int | None = Field(
        default=None, description="generations made: every sampled continuation, each step"
    )
    beam_width: int | None = None
    particle_iterations: int | None = Field(
        default=None, description="particle Gibbs: the sweeps (absent for one, plain filtering)"
    )
    scoring: ScoringMode | None = None
    voting: VotingMode | None = None
    scorer: str | None = Field(
        default=None, description="the scorer that ran, by name (e.g. prm:<model>, confidence)"
    )
    scorer_note: str | None = Field(
        default=None, description="what the scorer is and what it costs (confidence, verifier)"
    )
    is_partial: bool | None = None
    generations_per_depth: list[int] | None = None
    policy_calls: int | None = None
    prm_calls: int | None = None
    prm_tokens: int | None = None
    verifier_calls: int | None = Field(
        default=None, description="scorer rounds: one batched call each (two with genprm)"
    )
    verifier_tokens: int | None = Field(
        default=None, description="the verifier's prompt + generated tokens (also in usage)"
    )
    candidates: list[TtsCandidate] | None = None
    answers: list[TtsAnswer] | None = None
    latency_ms: TtsLatency | None = None
    replica: str | None = None
    reasoning_prompt: str | None = None
    ignored_params: list[str] = Field(default_factory=list)
    temperature_note: str | None = None
    seed: int | None = Field(
        default=None,
        description="particle_filtering: the resampling RNG's seed (the request's "
        "seed, else one derived from the request id); send it as seed to replay the resampling",
    )
    deepconf: TtsDeepConf | None = None
    max_total_tokens: int | None = Field(default=None, description="the request's token cap")
    is_token_capped: bool | None = Field(
        default=None,
        description="the cap bound: samples were cut short to fit it, or the "
        "search stopped early; the answer is the best so far",
    )
    auto: TtsAuto | None = None
    trace: list[TtsTraceNode] | None = None
    profile: TtsProfile | None = None
    compare: TtsCompare | None = None

    @model_serializer(mode="wrap")
    def _drop_absent_sections(self, handler: SerializerFunctionWrapHandler) -> JSONObject:
        data: JSONObject = handler(self)
        is_passthrough = self.strategy == "none"
        return {
            key: value
            for key, value in data.items()
            if value is not None or (key not in _SECTIONS and not is_passthrough)
        }
