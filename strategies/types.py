"""Value types and collaborator Protocols of the search library.

Owns the vocabulary shared by every strategy: sampling requests, generations, steps, beams,
configs and results. Must not import anything outside the standard library.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, Protocol, runtime_checkable

from strategies.errors import ConfigError

__all__ = [
    "AnswerGrouper",
    "AutoCell",
    "AutoConfig",
    "CallKind",
    "CellMethod",
    "DeepConfMode",
    "Difficulty",
    "Finish",
    "Generation",
    "MethodName",
    "Policy",
    "PolicyBatch",
    "Sampling",
    "ScoreBatch",
    "ScoreRequest",
    "ScoringMode",
    "SearchConfig",
    "SearchObserver",
    "Step",
    "StepScorer",
    "StrategyName",
    "Streamed",
    "StreamingPolicy",
    "VotingMode",
]

MethodName = Literal[
    "cot", "majority", "best_of_n", "beam_search", "dvts", "particle_filtering", "deepconf"
]
StrategyName = Literal[
    "cot",
    "majority",
    "best_of_n",
    "beam_search",
    "dvts",
    "particle_filtering",
    "deepconf",
    "auto",
]
# What an ``auto`` cell may run once the pilots are in: a method, or "pilots" (answer from them).
CellMethod = Literal["pilots", MethodName]
# How auto draws its votes: in chunks, judged between them (sequential), or all streamed at once,
# the rest stopped the moment the vote is settled (concurrent).
SamplingMode = Literal["sequential", "concurrent"]
DeepConfMode = Literal["online", "offline"]
Difficulty = Literal["easy", "medium", "hard"]
ScoringMode = Literal["last", "min", "avg", "prod"]
VotingMode = Literal["majority", "prm_max", "prm_vote"]


class Finish(StrEnum):
    """Why one generation stopped."""

    STEP = "step"  # hit the step delimiter: more steps may follow
    EOS = "eos"  # the model ended its answer
    LENGTH = "length"  # ran into max_tokens: truncated
    STOPPED = "stopped"  # the search closed the stream (low confidence, or the vote was settled)


@dataclass(frozen=True, slots=True)
class Sampling:
    """What a strategy asks the policy for in one call."""

    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...] = ()
    want_logprobs: bool = False
    top_logprobs: int = 0  # > 0: the policy fills Generation.token_confidences from the top k


@dataclass(frozen=True, slots=True)
class Generation:
    """One sampled continuation of one prefix.

    ``token_logprobs``/``token_ends`` are empty unless logprobs were asked for; ``token_ends[i]`` is
    the character offset in ``text`` where token ``i`` ends.
    """

    text: str
    finish: Finish
    completion_tokens: int
    token_logprobs: tuple[float, ...] = ()
    token_ends: tuple[int, ...] = ()
    # DeepConf's token confidence per token: -mean of its top-k log-probs (Sampling.top_logprobs)
    token_confidences: tuple[float, ...] = ()
    call_id: int = -1  # set by the search: which of its upstream calls produced this sample


@dataclass(frozen=True, slots=True)
class PolicyBatch:
    """What one policy call returned: ``generations[i]`` holds the samples of ``prefixes[i]``."""

    generations: tuple[tuple[Generation, ...], ...]
    prompt_tokens: int
    completion_tokens: int


class Policy(Protocol):
    """Extends partial assistant answers with sampled continuations, in one upstream call."""

    async def generate(self, prefixes: Sequence[str], n: int, sampling: Sampling) -> PolicyBatch:
        """Sample ``n`` continuations for every prefix (``""`` = start of the answer)."""
        ...


@dataclass(frozen=True, slots=True)
class Streamed:
    """One streamed sample and what it cost (tokens generated before any stop)."""

    generation: Generation
    prompt_tokens: int


@runtime_checkable
class StreamingPolicy(Policy, Protocol):
    """A policy that can also stream one sample and stop it early."""

    async def stream(
        self, prefix: str, sampling: Sampling, keep_going: Callable[[Sequence[float]], bool]
    ) -> Streamed:
        """Sample one continuation of ``prefix``, streamed. After each chunk ``keep_going`` gets
        the token confidences so far; when it says False the stream is closed (the server
        aborts the request) and the sample is returned as it stands, finish ``STOPPED``."""
        ...


@dataclass(frozen=True, slots=True)
class Step:
    """One reasoning step, delimiter included, with the policy's token log-probabilities."""

    text: str
    tokens: int = 0
    token_logprobs: tuple[float, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True for a step of whitespace only (not scored)."""
        return not self.text.strip()


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """A candidate to score: its non-empty steps, of which ``steps[first_new:]`` need scores."""

    steps: tuple[Step, ...]
    first_new: int = 0


@dataclass(frozen=True, slots=True)
class ScoreBatch:
    """``scores[i]`` holds one score in [0, 1] for each of ``requests[i].steps[first_new:]``."""

    scores: tuple[tuple[float, ...], ...]
    scored_tokens: int = 0
    # A chat model used as the scorer (a verifier): its tokens belong in the request's usage.
    chat_prompt_tokens: int = 0
    chat_completion_tokens: int = 0


CallKind = Literal["policy", "scorer"]


class AnswerGrouper(Protocol):
    """Groups final answers by mathematical equivalence (equal ids: equivalent). A server runs it
    off its event loop with a real timeout (sympy can run long on untrusted answers)."""

    async def __call__(self, answers: Sequence[str], timeout_s: int) -> tuple[int, ...]:
        """One group id per answer, within ``timeout_s`` (past it: grouped as text)."""
        ...


class SearchObserver(Protocol):
    """Told of every upstream call a search makes, around the call: the proxy opens a trace span
    per round there, so the call's own HTTP spans nest under it. Must not block."""

    def call(self, kind: CallKind, round_index: int) -> AbstractContextManager[None]:
        """Entered just before the call is made, exited when it returned or failed."""
        ...


class StepScorer(Protocol):
    """Scores reasoning steps (a PRM, or a cheaper stand-in) for many candidates in one call."""

    @property
    def name(self) -> str:
        """Short label, e.g. ``"prm:Qwen2.5-Math-PRM-7B"`` or ``"confidence"``."""
        ...

    @property
    def needs_logprobs(self) -> bool:
        """Whether the policy must return token log-probabilities for this scorer."""
        ...

    @property
    def is_remote(self) -> bool:
        """Whether each ``score`` is a call to a server (a PRM, a verifier): worth overlapping
        with the generation of other samples."""
        ...

    async def score(self, problem: str, requests: Sequence[ScoreRequest]) -> ScoreBatch:
        """Score the new steps of every request; steps are scored with their whole prefix."""
        ...


@dataclass(frozen=True, slots=True)
class AutoCell:
    """A fitted cell: what ``auto`` does for one difficulty bin once the pilots are in.

    ``budget`` is the total, pilots included, never above the request's cap (``None``: the cap);
    ``confidence``/``chunk`` override the stopping rule's (``None``: the rules' defaults);
    ``name`` and ``evidence`` are reported in ``tts.auto``."""

    method: CellMethod
    budget: int | None = None
    confidence: float | None = None
    chunk: int | None = None
    mode: SamplingMode = "sequential"
    name: str = ""
    evidence: str = ""

    def __post_init__(self) -> None:
        if self.budget is not None and self.budget < 1:
            raise ConfigError("a cell's budget must be >= 1", "auto")
        if self.chunk is not None and self.chunk < 1:
            raise ConfigError("a cell's chunk must be >= 1", "auto")
        if self.confidence is not None and not 0.5 < self.confidence <= 1.0:
            raise ConfigError("a cell's confidence must be in (0.5, 1]", "auto")


@dataclass(frozen=True, slots=True)
class AutoConfig:
    """The resolved rules and the stopping rule's knobs; ``cells`` (fitted) override a bin's
    method, budget and stopping rule; ``rules`` names the file they came from."""

    methods: Mapping[Difficulty, MethodName]
    pilots: int = 4
    confidence: float = 0.95
    chunk: int = 4
    reason: str = ""
    cells: Mapping[Difficulty, AutoCell] = field(default_factory=dict)
    rules: str = ""
    mode: SamplingMode = "sequential"  # concurrent: the pilots are the first of the cap to finish
    # concurrent: at most this many streams at once (a new one starts as one ends); None: all
    window: int | None = None

    def __post_init__(self) -> None:
        if self.pilots < 1 or self.chunk < 1:
            raise ConfigError("pilots and chunk must be >= 1", "auto")
        if self.window is not None and self.window < 1:
            raise ConfigError("window must be >= 1 (or unset: all at once)", "auto")
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError("confidence must be in (0.5, 1)", "auto")
        if set(self.methods) != {"easy", "medium", "hard"}:
            raise ConfigError("methods must map easy, medium and hard", "auto")
        if not set(self.cells) <= {"easy", "medium", "hard"}:
            raise ConfigError("cells are keyed by easy, medium and hard", "auto")


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Every knob of one search. Validated on construction; no I/O."""

    budget: int = 8
    beam_width: int = 4
    max_steps: int = 40
    scoring: ScoringMode = "last"
    voting: VotingMode | None = None  # None: prm_vote with a scorer, majority without
    step_delimiter: str = "\n\n"
    answer_markers: tuple[str, ...] = ("\\boxed{",)
    temperature: float = 0.7
    top_p: float = 1.0
    max_step_tokens: int = 2048
    max_answer_tokens: int = 8192
    equivalence_timeout_s: int = 2
    enable_trace: bool = False
    top_candidates: int = field(default=8)
    auto: AutoConfig | None = None  # the rules, for strategy "auto"
    max_generations: int | None = None  # a hard cap on samples across all depths
    seed: int | None = None  # seeds the search's own randomness (particle resampling)
    max_total_tokens: int | None = None  # generated tokens, all calls together, never pass it
    particle_temperature: float = 1.0  # particle_filtering: softmax temperature of the weights
    particle_iterations: int = 1  # particle_filtering: > 1 is particle Gibbs (budget / sweeps)
    deepconf_mode: DeepConfMode = "online"
    keep_percent: float = 90.0  # deepconf: the share of traces kept by confidence (eta)
    warmup: int | None = None  # deepconf online: warm-up traces (None: a quarter of N, >= 2)
    confidence_window: int | None = None  # deepconf: group window in tokens (None: from lengths)
    top_logprobs: int = 5  # deepconf: k of the token confidence
    deepconf_chunk: int = 4  # deepconf online: traces streamed at once between vote checks

    def __post_init__(self) -> None:
        _require(self.budget >= 1, "budget", "budget must be >= 1")
        _require(self.beam_width >= 1, "beam_width", "beam_width must be >= 1")
        _require(self.max_steps >= 1, "max_steps", "max_steps must be >= 1")
        _require(self.step_delimiter != "", "step_delimiter", "step_delimiter must not be empty")
        _require(self.temperature >= 0.0, "temperature", "temperature must be >= 0")
        _require(0.0 < self.top_p <= 1.0, "top_p", "top_p must be in (0, 1]")
        _require(self.max_step_tokens >= 1, "max_step_tokens", "max_step_tokens must be >= 1")
        _require(self.max_answer_tokens >= 1, "max_answer_tokens", "max_answer_tokens must be >= 1")
        _require(self.top_candidates >= 1, "top_candidates", "top_candidates must be >= 1")
        _require(
            self.max_total_tokens is None or self.max_total_tokens >= 1,
            "max_total_tokens",
            "max_total_tokens must be >= 1",
        )
        _require(0 < self.keep_percent <= 100, "keep_percent", "keep_percent must be in (0, 100]")
        _require(self.warmup is None or self.warmup >= 1, "warmup", "warmup must be >= 1")
        _require(
            self.confidence_window is None or self.confidence_window >= 1,
            "confidence_window",
            "confidence_window must be >= 1",
        )
        _require(1 <= self.top_logprobs <= 20, "top_logprobs", "top_logprobs must be in 1..20")
        _require(self.deepconf_chunk >= 1, "deepconf_chunk", "deepconf_chunk must be >= 1")
        _require(
            self.particle_temperature > 0,
            "particle_temperature",
            "particle_temperature must be > 0",
        )
        _require(
            self.particle_iterations >= 1, "particle_iterations", "particle_iterations must be >= 1"
        )

    def voting_for(self, has_scorer: bool) -> VotingMode:
        """The voting mode in effect: the explicit one, else the paper's default."""
        if self.voting is not None:
            return self.voting
        return "prm_vote" if has_scorer else "majority"


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ConfigError(message, name)
