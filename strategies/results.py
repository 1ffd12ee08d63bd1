"""What a search produces: candidates, ranked answers, usage and the optional trace.

Must not import anything outside the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast, get_args

from strategies.types import CallKind, SamplingMode, ScoringMode, Step, StrategyName, VotingMode

__all__ = [
    "AnswerChoice",
    "AutoDecision",
    "Candidate",
    "DeepConfReport",
    "ScoredCandidate",
    "ScorerKind",
    "SearchResult",
    "SearchUsage",
    "TraceCall",
    "TraceNode",
    "scorer_kind",
]

# stopped: deepconf closed the sample's stream early (its confidence fell below the threshold)
NodeStatus = Literal["kept", "pruned", "finished", "duplicate", "stopped"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A (possibly partial) answer: its steps and one score per non-empty step."""

    steps: tuple[Step, ...] = ()
    step_scores: tuple[float, ...] = ()
    is_finished: bool = False
    is_truncated: bool = False
    node_id: int = -1

    @property
    def text(self) -> str:
        """The candidate's whole text: its steps joined."""
        return "".join(step.text for step in self.steps)

    @property
    def scored_steps(self) -> tuple[Step, ...]:
        """The steps a scorer sees: those with any text."""
        return tuple(step for step in self.steps if not step.is_empty)

    @property
    def last_score(self) -> float:
        """PRM-Last of the whole prefix: the selection key during search (0.0 when unscored)."""
        return self.step_scores[-1] if self.step_scores else 0.0

    @property
    def completion_tokens(self) -> int:
        """Tokens generated for this candidate, all steps together."""
        return sum(step.tokens for step in self.steps)


@dataclass(frozen=True, slots=True)
class ScoredCandidate:
    """A final candidate with its extracted answer and aggregated score."""

    index: int
    candidate: Candidate
    answer: str
    score: float | None


@dataclass(frozen=True, slots=True)
class AnswerChoice:
    """One distinct answer, ranked by the voting rule."""

    answer: str
    text: str
    weight: float
    votes: int
    score: float | None
    candidate_index: int


@dataclass(frozen=True, slots=True)
class SearchUsage:
    """What the search spent."""

    policy_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    scorer_calls: int = 0
    scored_tokens: int = 0
    scorer_prompt_tokens: int = 0  # a chat-model scorer's (verifier's) own tokens
    scorer_completion_tokens: int = 0
    generations_per_depth: tuple[int, ...] = ()

    @property
    def generations(self) -> int:
        """Continuations sampled in all, every depth together."""
        return sum(self.generations_per_depth)


@dataclass(frozen=True, slots=True)
class TraceNode:
    """One node of the search tree (a sampled step, or a whole sample for BoN-style methods)."""

    node_id: int
    parent_id: int | None
    depth: int
    text: str
    score: float | None
    status: NodeStatus
    call_id: int = -1  # the policy call (``TraceCall.call_id``) that generated it
    answer: str | None = None  # a final candidate's extracted answer
    choice: int | None = None  # ... and the rank of its answer among the choices (0: chosen)
    tokens: int | None = None  # generated tokens of this node's own text (None: not known)


@dataclass(frozen=True, slots=True)
class TraceCall:
    """One upstream call of a search, for the timeline: what it asked and when it ran."""

    call_id: int
    kind: CallKind
    round: int  # the search's policy rounds: a step search's depth, deepconf's waves
    started_s: float  # since the search started (event-loop clock)
    ended_s: float
    samples: int  # policy: continuations asked for; scorer: candidates scored
    completion_tokens: int  # policy: generated; scorer: tokens scored
    is_completed: bool = True  # False: the deadline or a cap cut it off


@dataclass(frozen=True, slots=True)
class AutoDecision:
    """What ``auto`` estimated, chose and why."""

    pilots: int
    agreement: float  # share of pilots giving the leading answer: the online pass@1 estimate
    difficulty: Literal["easy", "medium", "hard"]
    method: StrategyName | None  # None: answered from the pilots (early stop)
    reason: str
    stopped_early: bool  # budget was left unspent because the vote was settled
    # Predictive probability that the leading answer stays ahead of the runner-up over the samples
    # still allowed; when the pilots used the whole budget, over as many samples again.
    confidence: float
    rules: str = ""  # the rules file the choice came from (its name)
    cell: str = ""  # which cell of it, e.g. "small.none.medium" or "fitted.confidence.hard"
    budget: int | None = None  # the cell's total budget (pilots included), within the cap
    evidence: str = ""  # a fitted cell's evidence: problems, accuracy with its interval, tokens
    mode: SamplingMode = "sequential"  # how the votes were drawn
    streams_stopped: int = 0  # concurrent: samples cut off (and aborted) once the vote settled


@dataclass(frozen=True, slots=True)
class DeepConfReport:
    """What ``deepconf`` measured and decided."""

    mode: Literal["online", "offline"]
    keep_percent: float
    window: int  # tokens per confidence group
    traces: int  # sampled (warm-up included)
    kept: int  # in the vote
    stopped: int  # online: closed early for low confidence
    threshold: float | None  # online: the warm-up's confidence percentile
    warmup: int | None  # online
    settled: bool  # online: sampling ended because the vote was settled


# What scored the steps: a PRM, a verifier (a chat model's P(yes), or its GenPRM-style
# analysis), the policy's token confidence, another scorer, or none.
ScorerKind = Literal["prm", "verifier", "verifier-genprm", "confidence", "other", "none"]
_KINDS: frozenset[str] = frozenset(get_args(ScorerKind))


def scorer_kind(label: str | None) -> ScorerKind:
    """A scorer's label (``StepScorer.name``: ``"prm:Qwen2.5-Math-PRM-7B"``, ``"confidence"``)
    as its kind; the one place the label is parsed."""
    if label is None:
        return "none"
    kind = label.split(":", 1)[0]
    return cast(ScorerKind, kind) if kind in _KINDS else "other"


@dataclass(frozen=True, slots=True)
class SearchResult:
    """The frozen outcome of one search."""

    strategy: StrategyName
    choices: tuple[AnswerChoice, ...]
    candidates: tuple[ScoredCandidate, ...]
    usage: SearchUsage
    scoring: ScoringMode | None
    voting: VotingMode
    scorer: str | None
    is_partial: bool = False
    is_token_capped: bool = False  # max_total_tokens bound: samples cut short or calls refused
    trace: tuple[TraceNode, ...] | None = None  # always kept; in the response on request
    calls: tuple[TraceCall, ...] = ()
    decision: AutoDecision | None = None
    deepconf: DeepConfReport | None = None

    @property
    def scorer_kind(self) -> ScorerKind:
        """What scored the steps, typed: ``scorer``'s label before its ``:`` (the model)."""
        return scorer_kind(self.scorer)

    @property
    def answer(self) -> str:
        """The extracted final answer of the winning choice."""
        return self.choices[0].answer

    @property
    def text(self) -> str:
        """The full text of the winning candidate."""
        return self.choices[0].text
