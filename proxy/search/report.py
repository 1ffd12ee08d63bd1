"""Search result -> exact OpenAI ``chat.completion`` / ``chat.completion.chunk`` objects, with
honest usage and the ``tts`` extension object. Pure functions, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from proxy.search.plan import Plan
from proxy.upstream.policy import CallStats
from proxy.wire.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    CompletionTokensDetails,
    Delta,
    FinishReason,
    PromptTokensDetails,
    ResponseMessage,
    Usage,
)
from proxy.wire.tts import (
    TtsAnswer,
    TtsAuto,
    TtsCandidate,
    TtsCompare,
    TtsDeepConf,
    TtsLatency,
    TtsProfile,
    TtsReport,
    TtsTraceNode,
)
from strategies import STRATEGIES, ScoredCandidate, ScorerKind, SearchResult, split_thinking

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "SearchOutcome",
    "build_completion",
    "completion_chunks",
    "cut_at_stop",
    "tts_extension",
    "usage_of",
]


@dataclasses.dataclass(frozen=True, slots=True)
class _Returned:
    """One returned choice: its text (cut at the request's stop strings) and its token count."""

    text: str
    tokens: int
    finish_reason: FinishReason
    reasoning: str | None = None  # a reasoning model's thinking, never in ``text``


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """A finished search and what it cost upstream (the report's input)."""

    result: SearchResult
    stats: CallStats
    replica: str
    upstream_s: float
    reasoning_prompt: str | None = None


def cut_at_stop(text: str, stop: str | Sequence[str] | None) -> str | None:
    """``text`` up to the first of the ``stop`` strings (excluded), as vLLM cuts; None if none."""
    stops = [stop] if isinstance(stop, str) else list(stop or ())
    found = [pos for pos in (text.find(s) for s in stops if s) if pos >= 0]
    return text[: min(found)] if found else None


def _returned(
    result: SearchResult, n: int, stop: str | Sequence[str] | None = None
) -> list[_Returned]:
    """The top-``n`` distinct answers (fewer when fewer exist), each cut at a stop string, a
    reasoning model's thinking apart from its answer.

    The answer's token count is its share of the candidate's tokens by characters: the thinking
    and the tokens after a stop were generated (and are counted as reasoning) but not returned
    as content.
    """
    out = []
    for choice in result.choices[:n]:
        candidate = result.candidates[choice.candidate_index].candidate
        finish: FinishReason = "length" if candidate.is_truncated else "stop"
        thinking, text = split_thinking(choice.text)
        cut = cut_at_stop(text, stop)
        if cut is not None:
            text, finish = cut, "stop"
        share = len(text) / max(len(choice.text), 1)
        tokens = (
            candidate.completion_tokens
            if share >= 1
            else round(candidate.completion_tokens * share)
        )
        out.append(_Returned(text, tokens, finish, thinking))
    return out


def usage_of(
    result: SearchResult,
    n: int,
    stop: str | Sequence[str] | None = None,
    cached_tokens: int | None = None,
) -> Usage:
    """Tokens summed over every policy call; reasoning = generated tokens not returned."""
    returned = sum(r.tokens for r in _returned(result, n, stop))
    # A verifier is a chat model too: what it read and wrote is part of the request's cost.
    completion = result.usage.completion_tokens + result.usage.scorer_completion_tokens
    prompt = result.usage.prompt_tokens + result.usage.scorer_prompt_tokens
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        prompt_tokens_details=(
            PromptTokensDetails(cached_tokens=cached_tokens) if cached_tokens is not None else None
        ),
        completion_tokens_details=CompletionTokensDetails(
            reasoning_tokens=max(completion - returned, 0)
        ),
    )


def tts_extension(
    plan: Plan, outcome: SearchOutcome, *, total_s: float, compare: TtsCompare | None = None
) -> TtsReport:
    """The ``tts`` object, built once: what was searched, what it cost, what it saw, the model's
    profile and the shadow comparison (``compare``) if one was asked for."""
    result, stats, usage = outcome.result, outcome.stats, outcome.result.usage
    profile = plan.profile
    proxy_s = max(total_s - outcome.upstream_s, 0.0)
    cfg = plan.config
    assert plan.strategy != "none", "a searched plan"
    spec = STRATEGIES[plan.strategy]  # what its budget counts
    is_prm = result.scorer_kind == "prm"
    is_verifier = result.scorer_kind in ("verifier", "verifier-genprm")
    return TtsReport(
        strategy=result.strategy,
        requested_strategy=plan.requested,
        reason=plan.reason,
        budget=cfg.budget,
        budget_unit=spec.budget_unit,
        max_generations=spec.max_generations(cfg),
        budget_spent=usage.generations,
        beam_width=cfg.beam_width if result.strategy in ("beam_search", "dvts", "auto") else None,
        particle_iterations=(
            cfg.particle_iterations
            if result.strategy == "particle_filtering" and cfg.particle_iterations > 1
            else None
        ),
        scoring=result.scoring,
        voting=result.voting,
        scorer=result.scorer,
        scorer_note=_scorer_note(result.scorer_kind),
        is_partial=result.is_partial,
        generations_per_depth=list(usage.generations_per_depth),
        policy_calls=usage.policy_calls,
        prm_calls=usage.scorer_calls if is_prm else 0,
        prm_tokens=usage.scored_tokens if is_prm else 0,
        verifier_calls=usage.scorer_calls if is_verifier else None,
        verifier_tokens=(
            usage.scorer_prompt_tokens + usage.scorer_completion_tokens if is_verifier else None
        ),
        candidates=[
            TtsCandidate(
                answer=c.answer,
                score=c.score,
                is_finished=c.candidate.is_finished,
                is_truncated=c.candidate.is_truncated,
                steps=len(c.candidate.steps),
            )
            for c in _top_candidates(result, cfg.top_candidates)
        ],
        answers=[
            TtsAnswer(answer=c.answer, votes=c.votes, weight=c.weight) for c in result.choices
        ][: cfg.top_candidates],
        latency_ms=TtsLatency(
            total=round(total_s * 1000, 3),
            policy=round(stats.policy_s * 1000, 3),
            prm=round(stats.prm_s * 1000, 3),
            render=round(stats.render_s * 1000, 3),
            proxy=round(proxy_s * 1000, 3),
        ),
        replica=outcome.replica,
        reasoning_prompt=outcome.reasoning_prompt,
        ignored_params=list(plan.ignored_params)
        + (["max_thinking_tokens"] if outcome.stats.thinking_cap_unused else []),
        temperature_note=plan.temperature_note,
        seed=cfg.seed if result.strategy == "particle_filtering" else None,
        deepconf=_typed(TtsDeepConf, result.deepconf) if result.deepconf else None,
        max_total_tokens=cfg.max_total_tokens,
        is_token_capped=result.is_token_capped if cfg.max_total_tokens else None,
        auto=_typed(TtsAuto, result.decision) if result.decision is not None else None,
        trace=[_typed(TtsTraceNode, n) for n in result.trace or ()] if cfg.enable_trace else None,
        profile=TtsProfile(
            size=profile.size,
            params_b=profile.params_b,
            family=profile.family.name if profile.family else None,
            scorer=profile.scorer,
        )
        if profile is not None
        else None,
        compare=compare,
    )


def _scorer_note(kind: ScorerKind) -> str | None:
    if kind == "confidence":
        return "no PRM: steps scored by the policy's own token confidence (weaker than a PRM)"
    if kind in ("verifier", "verifier-genprm"):
        return (
            "steps scored by a chat model's P(yes) to 'is this step correct?'; its tokens "
            "are in usage and verifier_tokens"
        )
    return None


def _top_candidates(result: SearchResult, k: int) -> list[ScoredCandidate]:
    def key(c: ScoredCandidate) -> tuple[float, int]:
        return (-(c.score if c.score is not None else 0.0), c.index)

    return sorted(result.candidates, key=key)[:k]


def build_completion(
    *,
    result: SearchResult,
    n: int,
    request_id: str,
    created: int,
    model: str,
    tts: TtsReport,
    stop: str | Sequence[str] | None = None,
    cached_tokens: int | None = None,
) -> ChatCompletion:
    choices = [
        Choice(
            index=i,
            message=ResponseMessage(
                content=r.text, reasoning=r.reasoning, reasoning_content=r.reasoning
            ),
            finish_reason=r.finish_reason,
        )
        for i, r in enumerate(_returned(result, n, stop))
    ]
    return ChatCompletion(
        id=request_id,
        created=created,
        model=model,
        choices=choices,
        usage=usage_of(result, n, stop, cached_tokens),
        tts=tts,
    )


def completion_chunks(completion: ChatCompletion, include_usage: bool) -> list[ChatCompletionChunk]:
    """The same answer as SSE chunks: role, content, finish per choice; then usage if asked.

    ``tts`` rides on the last chunk that carries choices.
    """

    def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=completion.id,
            created=completion.created,
            model=completion.model,
            choices=choices,
            usage=usage,
        )

    chunks: list[ChatCompletionChunk] = []
    for choice in completion.choices:
        i = choice.index
        chunks.append(chunk([ChunkChoice(index=i, delta=Delta(role="assistant", content=""))]))
        thinking = choice.message.reasoning
        if thinking is not None:
            delta = Delta(reasoning=thinking, reasoning_content=thinking)
            chunks.append(chunk([ChunkChoice(index=i, delta=delta)]))
        chunks.append(chunk([ChunkChoice(index=i, delta=Delta(content=choice.message.content))]))
        chunks.append(
            chunk([ChunkChoice(index=i, delta=Delta(), finish_reason=choice.finish_reason)])
        )
    if chunks:
        chunks[-1] = chunks[-1].model_copy(update={"tts": completion.tts})
    if include_usage:
        chunks.append(chunk([], completion.usage))
    return chunks


_Model = TypeVar("_Model", bound=BaseModel)


def _typed(model: type[_Model], report: DataclassInstance) -> _Model:
    """A report dataclass of the search library as its wire model (same fields, same order)."""
    return model.model_validate(dataclasses.asdict(report))
