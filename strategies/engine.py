"""The bookkeeping every strategy shares: calls with a deadline, usage, incremental scoring,
the trace, and the final vote.

Must not import I/O libraries; ``asyncio`` is used only for the deadline and the trace's clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

from strategies.answers import extract_answer, group_inline
from strategies.errors import NoCandidatesError, SearchError
from strategies.results import (
    AnswerChoice,
    AutoDecision,
    Candidate,
    DeepConfReport,
    NodeStatus,
    ScoredCandidate,
    SearchResult,
    SearchUsage,
    TraceCall,
    TraceNode,
)
from strategies.scoring import aggregate, rank_answers
from strategies.streams import settle_streams
from strategies.types import (
    AnswerGrouper,
    CallKind,
    Generation,
    Policy,
    PolicyBatch,
    Sampling,
    ScoreRequest,
    SearchConfig,
    SearchObserver,
    StepScorer,
    StrategyName,
    Streamed,
    StreamingPolicy,
)

__all__ = ["SearchRun"]

_T = TypeVar("_T")


@dataclasses.dataclass(slots=True)
class _Books:
    """Accounting shared by a run and its forks: usage, the trace (nodes and calls), node ids,
    the deadline flag."""

    usage: SearchUsage = dataclasses.field(default_factory=SearchUsage)
    trace: dict[int, TraceNode] = dataclasses.field(default_factory=dict)
    calls: list[TraceCall] = dataclasses.field(default_factory=list)
    rounds: int = 0  # policy rounds started
    next_call_id: int = 0
    origin: float | None = None  # loop time of the first call
    observer: SearchObserver | None = None
    next_id: int = 0
    is_partial: bool = False  # the deadline expired
    is_capped: bool = False  # a call was refused by max_generations or max_total_tokens
    is_token_capped: bool = False  # ... by max_total_tokens
    # Calls in flight at once (DVTS's subtrees): what they may still generate, held against caps.
    reserved: int = 0  # generations
    reserved_tokens: int = 0  # tokens, with max_total_tokens


class SearchRun:
    """State of one search: the only mutable object a strategy holds."""

    def __init__(
        self,
        strategy: StrategyName,
        problem: str,
        policy: Policy,
        scorer: StepScorer | None,
        config: SearchConfig,
        deadline: float | None,
        books: _Books | None = None,
        *,
        observer: SearchObserver | None = None,
        grouper: AnswerGrouper = group_inline,
    ) -> None:
        self.strategy = strategy
        self.grouper = grouper
        self.problem = problem
        self.policy = policy
        self.scorer = scorer
        self.config = config
        self.deadline = deadline
        self._books = books if books is not None else _Books(observer=observer)

    def fork(
        self, strategy: StrategyName, config: SearchConfig, *, with_scorer: bool = True
    ) -> SearchRun:
        """A sub-search (another method or budget) whose spending counts in this run's books."""
        scorer = self.scorer if with_scorer else None
        return SearchRun(
            strategy,
            self.problem,
            self.policy,
            scorer,
            config,
            self.deadline,
            self._books,
            grouper=self.grouper,
        )

    async def group(self, answers: Sequence[str]) -> tuple[int, ...]:
        """A group id per answer (equal: equivalent), by the run's ``grouper``."""
        return await self.grouper(answers, self.config.equivalence_timeout_s)

    @property
    def is_partial(self) -> bool:
        """True once a deadline or the token cap cut the search short."""
        return self._books.is_partial

    @property
    def is_stopped(self) -> bool:
        """The search was cut short (deadline or generation cap): partial answers may do."""
        return self._books.is_partial or self._books.is_capped

    @property
    def usage(self) -> SearchUsage:
        """Calls and tokens so far, the policy's and the scorer's."""
        return self._books.usage

    # -- sampling ---------------------------------------------------------------------------
    def sampling(self, *, is_step: bool, temperature: float | None = None) -> Sampling:
        """The sampling parameters of one policy call: one step, or a whole answer."""
        cfg = self.config
        return Sampling(
            temperature=cfg.temperature if temperature is None else temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_step_tokens if is_step else cfg.max_answer_tokens,
            stop=(cfg.step_delimiter,) if is_step else (),
            want_logprobs=self.scorer is not None and self.scorer.needs_logprobs,
        )

    async def generate(
        self, prefixes: Sequence[str], n: int, sampling: Sampling, *, depth: int | None = None
    ) -> PolicyBatch | None:
        """One policy call; ``None`` when the deadline expired or the call would pass a cap.

        With ``max_total_tokens`` each sample may use at most an equal share of what is left,
        so the search's generated tokens can never pass the cap. ``depth``: the search's round
        this call belongs to, for searches whose calls at one depth run at once (DVTS); by
        default each policy call is a round of its own.
        """
        books, count = self._books, len(prefixes) * n
        cap = self.config.max_generations
        if cap is not None and books.usage.generations + books.reserved + count > cap:
            books.is_capped = True
            return None
        capped = self._within_token_cap(sampling, count)
        if capped is None:
            return None
        sampling = capped
        tokens = count * sampling.max_tokens if self.config.max_total_tokens is not None else 0
        books.reserved, books.reserved_tokens = (
            books.reserved + count,
            books.reserved_tokens + tokens,
        )
        try:
            with self._call("policy", count, depth) as call:
                batch = await self._before_deadline(self.policy.generate(prefixes, n, sampling))
                if batch is None:
                    return None
                if len(batch.generations) != len(prefixes) or any(
                    len(group) != n for group in batch.generations
                ):
                    raise SearchError(
                        "policy returned a different number of samples than asked for"
                    )
                call.completion_tokens, call.is_completed = batch.completion_tokens, True
        finally:
            books.reserved, books.reserved_tokens = (
                books.reserved - count,
                books.reserved_tokens - tokens,
            )
        batch = dataclasses.replace(
            batch,
            generations=tuple(
                tuple(dataclasses.replace(g, call_id=call.call_id) for g in group)
                for group in batch.generations
            ),
        )
        usage = self._books.usage
        self._books.usage = dataclasses.replace(
            usage,
            policy_calls=usage.policy_calls + 1,
            prompt_tokens=usage.prompt_tokens + batch.prompt_tokens,
            completion_tokens=usage.completion_tokens + batch.completion_tokens,
            generations_per_depth=_added(usage.generations_per_depth, depth, count),
        )
        return batch

    # -- scoring ----------------------------------------------------------------------------
    async def score(
        self, candidates: Sequence[Candidate], *, depth: int | None = None
    ) -> list[Candidate] | None:
        """Scores for every not-yet-scored non-empty step, in one scorer call.

        Steps scored earlier keep their scores; only the new ones are requested. ``None`` when the
        deadline expired first.
        """
        if self.scorer is None:
            return list(candidates)
        pending = [
            (i, ScoreRequest(steps=c.scored_steps, first_new=len(c.step_scores)))
            for i, c in enumerate(candidates)
            if len(c.step_scores) < len(c.scored_steps)
        ]
        if not pending:
            return list(candidates)
        requests = [request for _, request in pending]
        with self._call("scorer", len(requests), depth) as call:
            batch = await self._before_deadline(self.scorer.score(self.problem, requests))
            if batch is None:
                return None
            call.completion_tokens, call.is_completed = batch.scored_tokens, True
        _check_scores(requests, batch.scores)
        usage = self._books.usage
        self._books.usage = dataclasses.replace(
            usage,
            scorer_calls=usage.scorer_calls + 1,
            scored_tokens=usage.scored_tokens + batch.scored_tokens,
            scorer_prompt_tokens=usage.scorer_prompt_tokens + batch.chat_prompt_tokens,
            scorer_completion_tokens=usage.scorer_completion_tokens + batch.chat_completion_tokens,
        )
        updated = list(candidates)
        for (index, _), scores in zip(pending, batch.scores, strict=True):
            old = updated[index]
            updated[index] = dataclasses.replace(old, step_scores=(*old.step_scores, *scores))
            self._set_score(old.node_id, updated[index].last_score)
        return updated

    @contextlib.contextmanager
    def _call(self, kind: CallKind, samples: int, depth: int | None = None) -> Iterator[_OpenCall]:
        """Time one upstream call for the trace (a policy call starts a new round, unless it
        names its ``depth``) and let the observer wrap it. The caller marks it completed; a
        deadline, a cap or an error leaves it recorded as cut off."""
        books = self._books
        loop = asyncio.get_running_loop()
        if books.origin is None:
            books.origin = loop.time()
        if depth is not None:
            books.rounds = max(books.rounds, depth + 1)
        elif kind == "policy":
            books.rounds += 1
        round_index = depth if depth is not None else max(books.rounds - 1, 0)
        call = _OpenCall(books.next_call_id, loop.time() - books.origin)
        books.next_call_id += 1
        observed = books.observer.call(kind, round_index) if books.observer else None
        try:
            with observed if observed is not None else contextlib.nullcontext():
                yield call
        finally:
            books.calls.append(
                TraceCall(
                    call.call_id,
                    kind,
                    round_index,
                    call.started_s,
                    loop.time() - books.origin,
                    samples,
                    call.completion_tokens,
                    call.is_completed,
                )
            )

    async def _before_deadline(self, call: Awaitable[_T]) -> _T | None:
        if self.deadline is None:
            return await call
        try:
            async with asyncio.timeout_at(self.deadline):
                return await call
        except TimeoutError:
            self._books.is_partial = True
            return None

    # -- trace ------------------------------------------------------------------------------
    def new_node(
        self,
        parent: int | None,
        depth: int,
        text: str,
        call_id: int = -1,
        tokens: int | None = None,
    ) -> int:
        """A new trace node (pruned until marked otherwise); its id."""
        node_id = self._books.next_id
        self._books.next_id += 1
        self._books.trace[node_id] = TraceNode(
            node_id, parent, depth, text, None, "pruned", call_id=call_id, tokens=tokens
        )
        return node_id

    def mark(self, node_ids: Sequence[int], status: NodeStatus) -> None:
        """Set the trace status of these nodes (kept, pruned, chosen, ...)."""
        for node_id in node_ids:
            if node_id in self._books.trace:
                self._books.trace[node_id] = dataclasses.replace(
                    self._books.trace[node_id], status=status
                )

    def _set_score(self, node_id: int, score: float) -> None:
        if node_id in self._books.trace:
            self._books.trace[node_id] = dataclasses.replace(
                self._books.trace[node_id], score=score
            )

    def _note_answers(
        self,
        scored: Sequence[ScoredCandidate],
        groups: Sequence[int],
        choices: Sequence[AnswerChoice],
    ) -> None:
        """Each final candidate's node gets its answer and the rank of that answer's choice."""
        rank = {groups[c.candidate_index]: r for r, c in enumerate(choices)}
        trace = self._books.trace
        for item, group in zip(scored, groups, strict=True):
            node = trace.get(item.candidate.node_id)
            if node is not None:
                trace[node.node_id] = dataclasses.replace(
                    node, answer=item.answer, choice=rank.get(group)
                )

    # -- result -----------------------------------------------------------------------------
    async def stream_many(
        self, count: int, sampling: Sampling, keep_going: Callable[[Sequence[float]], bool]
    ) -> list[Generation] | None:
        """``count`` samples streamed at once (the policy must stream), each stopped as soon as
        ``keep_going`` says so; ``None`` when the deadline or a cap came first."""
        policy, capped = self._streaming(count, sampling)
        if capped is None:
            return None
        calls = [policy.stream("", capped, keep_going) for _ in range(count)]
        return await self._streamed(count, asyncio.gather(*calls))

    async def stream_settling(
        self,
        count: int,
        sampling: Sampling,
        judge: Callable[[Generation], Awaitable[int]],
        window: int | None = None,
    ) -> list[Generation] | None:
        """``count`` samples streamed, ``window`` at a time (``None``: all at once; the policy
        must stream). Each that finishes goes to ``judge``, which answers how many finished
        samples are wanted in all; the streams beyond that are stopped at their next chunk (the
        server aborts them) and no more are started. Returned in the order they finished, the
        stopped ones last (finish ``STOPPED``); every token generated is counted. ``None`` when
        the deadline or a cap came first."""
        policy, capped = self._streaming(count, sampling)
        if capped is None:
            return None
        return await self._streamed(count, settle_streams(policy, count, capped, judge, window))

    def _streaming(self, count: int, sampling: Sampling) -> tuple[StreamingPolicy, Sampling | None]:
        """The streaming policy and the samples' sampling within the caps (``None``: capped)."""
        policy = self.policy
        if not isinstance(policy, StreamingPolicy):
            raise SearchError("this method needs a policy that streams")
        cap = self.config.max_generations
        if cap is not None and self._books.usage.generations + count > cap:
            self._books.is_capped = True
            return policy, None
        return policy, self._within_token_cap(sampling, count)

    async def _streamed(
        self, count: int, streams: Awaitable[list[Streamed]]
    ) -> list[Generation] | None:
        """Await ``count`` streams as one round, counting what they generated."""
        with self._call("policy", count) as call:
            streamed = await self._before_deadline(streams)
            if streamed is None:
                return None
            call.completion_tokens = sum(s.generation.completion_tokens for s in streamed)
            call.is_completed = True
        usage = self._books.usage
        self._books.usage = dataclasses.replace(
            usage,
            policy_calls=usage.policy_calls + len(streamed),  # those started
            prompt_tokens=usage.prompt_tokens + sum(s.prompt_tokens for s in streamed),
            completion_tokens=usage.completion_tokens
            + sum(s.generation.completion_tokens for s in streamed),
            generations_per_depth=(*usage.generations_per_depth, count),
        )
        return [dataclasses.replace(s.generation, call_id=call.call_id) for s in streamed]

    def _within_token_cap(self, sampling: Sampling, samples: int) -> Sampling | None:
        """``sampling`` with ``max_tokens`` cut to each sample's share of what the token cap
        leaves; ``None`` (and the run capped) when that share is below one token."""
        token_cap = self.config.max_total_tokens
        if token_cap is None:
            return sampling
        left = token_cap - self._books.usage.completion_tokens - self._books.reserved_tokens
        share = left // samples
        if share < 1:
            self._books.is_capped = self._books.is_token_capped = True
            return None
        if share < sampling.max_tokens:  # the cap binds: samples may be cut short
            self._books.is_token_capped = True
            return dataclasses.replace(sampling, max_tokens=share)
        return sampling

    async def finish(
        self,
        candidates: Sequence[Candidate],
        decision: AutoDecision | None = None,
        *,
        weights: Sequence[float] | None = None,
        deepconf: DeepConfReport | None = None,
    ) -> SearchResult:
        """Vote over the candidates and freeze the result. ``weights`` (one per candidate, e.g.
        trace confidences) replace the scorer's scores in the vote."""
        if not candidates:
            raise NoCandidatesError(
                "the search produced no candidate before its deadline"
                if self.is_partial
                else "the search produced no candidate"
            )
        cfg = self.config
        has_scorer = self.scorer is not None

        def score_of(i: int, c: Candidate) -> float | None:
            if weights is not None:
                return weights[i]
            return aggregate(c.step_scores, cfg.scoring) if has_scorer else None

        scored = tuple(
            ScoredCandidate(
                index=i,
                candidate=c,
                answer=extract_answer(c.text, cfg.answer_markers),
                score=score_of(i, c),
            )
            for i, c in enumerate(candidates)
        )
        groups = await self.group([s.answer for s in scored])
        voting = cfg.voting_for(has_scorer or weights is not None)
        choices = rank_answers(scored, groups, voting)
        self._note_answers(scored, groups, choices)
        return SearchResult(
            strategy=self.strategy,
            choices=choices,
            candidates=scored,
            usage=self._books.usage,
            scoring=cfg.scoring if has_scorer and weights is None else None,
            voting=voting,
            scorer=self.scorer.name if self.scorer is not None else None,
            is_partial=self.is_partial,
            is_token_capped=self._books.is_token_capped,
            trace=tuple(self._books.trace.values()),
            calls=tuple(self._books.calls),
            decision=decision,
            deepconf=deepconf,
        )


@dataclasses.dataclass(slots=True)
class _OpenCall:
    call_id: int
    started_s: float
    completion_tokens: int = 0
    is_completed: bool = False


def _check_scores(requests: Sequence[ScoreRequest], scores: Sequence[Sequence[float]]) -> None:
    if len(scores) != len(requests):
        raise SearchError(f"scorer returned {len(scores)} score lists for {len(requests)} requests")
    for request, row in zip(requests, scores, strict=True):
        expected = len(request.steps) - request.first_new
        if len(row) != expected:
            raise SearchError(f"scorer returned {len(row)} step scores where {expected} were due")
        if any(not 0.0 <= value <= 1.0 for value in row):
            raise SearchError("scorer returned a step score outside [0, 1]")


def _added(per_depth: tuple[int, ...], depth: int | None, count: int) -> tuple[int, ...]:
    """``per_depth`` with ``count`` more generations at ``depth`` (``None``: a new depth)."""
    if depth is None:
        return (*per_depth, count)
    padded = (*per_depth, *(0,) * (depth + 1 - len(per_depth)))
    return (*padded[:depth], padded[depth] + count, *padded[depth + 1 :])
