"""Test-time-scaling search methods as a pure library (no HTTP, no model runtime).

Quick use::

    from strategies import SearchConfig, search
    result = await search("beam_search", problem, policy, scorer, SearchConfig(budget=16))
    print(result.answer, result.usage)
"""

from strategies.answers import (
    extract_answer,
    group_by_text,
    group_equivalent,
    group_inline,
    split_thinking,
)
from strategies.auto import difficulty_of, draws_to_settle, keeps_lead
from strategies.confidence import ConfidenceScorer
from strategies.deepconf import token_confidence
from strategies.errors import ConfigError, NoCandidatesError, SearchError
from strategies.registry import STRATEGIES, BudgetUnit, StrategySpec, check, search
from strategies.results import (
    AnswerChoice,
    AutoDecision,
    Candidate,
    DeepConfReport,
    NodeStatus,
    ScoredCandidate,
    ScorerKind,
    SearchResult,
    SearchUsage,
    TraceCall,
    TraceNode,
    scorer_kind,
)
from strategies.scoring import aggregate, rank_answers, select_top
from strategies.types import (
    AnswerGrouper,
    AutoCell,
    AutoConfig,
    CallKind,
    CellMethod,
    Difficulty,
    Finish,
    Generation,
    MethodName,
    Policy,
    PolicyBatch,
    Sampling,
    SamplingMode,
    ScoreBatch,
    ScoreRequest,
    ScoringMode,
    SearchConfig,
    SearchObserver,
    Step,
    StepScorer,
    StrategyName,
    Streamed,
    StreamingPolicy,
    VotingMode,
)

__all__ = [
    "STRATEGIES",
    "AnswerChoice",
    "AnswerGrouper",
    "AutoCell",
    "AutoConfig",
    "AutoDecision",
    "BudgetUnit",
    "CallKind",
    "Candidate",
    "CellMethod",
    "ConfidenceScorer",
    "ConfigError",
    "DeepConfReport",
    "Difficulty",
    "Finish",
    "Generation",
    "MethodName",
    "NoCandidatesError",
    "NodeStatus",
    "Policy",
    "PolicyBatch",
    "Sampling",
    "SamplingMode",
    "ScoreBatch",
    "ScoreRequest",
    "ScoredCandidate",
    "ScorerKind",
    "ScoringMode",
    "SearchConfig",
    "SearchError",
    "SearchObserver",
    "SearchResult",
    "SearchUsage",
    "Step",
    "StepScorer",
    "StrategyName",
    "StrategySpec",
    "Streamed",
    "StreamingPolicy",
    "TraceCall",
    "TraceNode",
    "VotingMode",
    "aggregate",
    "check",
    "difficulty_of",
    "draws_to_settle",
    "extract_answer",
    "group_by_text",
    "group_equivalent",
    "group_inline",
    "keeps_lead",
    "rank_answers",
    "scorer_kind",
    "search",
    "select_top",
    "split_thinking",
    "token_confidence",
]
