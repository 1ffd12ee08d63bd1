"""The trace store: every search's tree, answers and upstream calls, kept in memory within a count,
an age and a byte budget, served as JSON at ``/v1/tts/traces/{request_id}`` and drawn by the page
at ``/ui/traces/{request_id}``.

Step and question texts are kept only with ``PROXY_STORE_TEXT``; without it a trace still shows
the tree's shape, scores, statuses, extracted answers, votes and timings.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, Field

from strategies import CallKind, NodeStatus, SearchResult, TraceCall, TraceNode

__all__ = [
    "SearchTrace",
    "TraceAnswer",
    "TraceCallOut",
    "TraceList",
    "TraceNodeOut",
    "TraceStore",
    "TraceSummary",
    "trace_of",
]

_NODE_BYTES = 160  # a node's fields without its text, roughly, for the byte budget


class TraceNodeOut(BaseModel):
    """One node of the search tree: a sampled step (or a whole sample for voting methods)."""

    node_id: int
    parent_id: int | None
    depth: int
    text: str | None = Field(description="the step's text (only with PROXY_STORE_TEXT)")
    score: float | None = Field(description="the scorer's score of the prefix ending here")
    status: NodeStatus
    call_id: int | None = Field(description="the policy call that generated it (calls[i])")
    answer: str | None = Field(description="a final candidate's extracted answer")
    choice: int | None = Field(description="rank of that answer among `answers` (0: chosen)")
    tokens: int | None = Field(
        default=None, description="tokens generated for this node's own text (null: not known)"
    )


class TraceCallOut(BaseModel):
    """One upstream call: policy (generation) or scorer, with its place on the timeline."""

    call_id: int
    kind: CallKind
    round: int = Field(description="policy round: a step search's depth, deepconf's wave")
    started_ms: float = Field(description="since the search's first call")
    ended_ms: float
    samples: int = Field(description="policy: continuations asked for; scorer: candidates")
    completion_tokens: int = Field(description="policy: generated; scorer: tokens scored")
    is_completed: bool = Field(description="false: the deadline or a cap cut it off")


class TraceAnswer(BaseModel):
    answer: str
    votes: int
    weight: float


class SearchTrace(BaseModel):
    """Why the proxy chose its answer: the whole search of one request."""

    object: Literal["tts.trace"] = "tts.trace"
    request_id: str
    created: int
    model: str
    strategy: str = Field(description="the method that ran (auto's choice for auto)")
    requested_strategy: str
    scorer: str | None
    voting: str
    budget: int
    question: str | None = Field(description="the last user message (only with PROXY_STORE_TEXT)")
    has_text: bool
    answer: str
    answers: list[TraceAnswer]
    nodes: list[TraceNodeOut]
    is_truncated: bool = Field(description="nodes past PROXY_TRACES__MAX_NODES were left out")
    calls: list[TraceCallOut]
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


class TraceSummary(BaseModel):
    request_id: str
    created: int
    model: str
    strategy: str
    answer: str
    nodes: int
    latency_ms: float


class TraceList(BaseModel):
    object: Literal["list"] = "list"
    data: list[TraceSummary]


def trace_of(
    result: SearchResult,
    *,
    request_id: str,
    model: str,
    requested: str,
    budget: int,
    question: str,
    latency_s: float,
    has_text: bool,
    max_nodes: int,
) -> SearchTrace:
    """The stored form of ``result``'s search."""
    nodes = result.trace or ()
    usage = result.usage
    return SearchTrace(
        request_id=request_id,
        created=int(time.time()),
        model=model,
        strategy=result.strategy,
        requested_strategy=requested,
        scorer=result.scorer,
        voting=result.voting,
        budget=budget,
        question=question if has_text else None,
        has_text=has_text,
        answer=result.answer,
        answers=[
            TraceAnswer(answer=c.answer, votes=c.votes, weight=c.weight) for c in result.choices
        ],
        nodes=[_node(n, has_text) for n in nodes[:max_nodes]],
        is_truncated=len(nodes) > max_nodes,
        calls=[_call(c) for c in result.calls],
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        latency_ms=round(latency_s * 1000, 3),
    )


def _node(node: TraceNode, has_text: bool) -> TraceNodeOut:
    return TraceNodeOut(
        node_id=node.node_id,
        parent_id=node.parent_id,
        depth=node.depth,
        text=node.text if has_text else None,
        score=node.score,
        status=node.status,
        call_id=node.call_id if node.call_id >= 0 else None,
        answer=node.answer,
        choice=node.choice,
        tokens=node.tokens,
    )


def _call(call: TraceCall) -> TraceCallOut:
    return TraceCallOut(
        call_id=call.call_id,
        kind=call.kind,
        round=call.round,
        started_ms=round(call.started_s * 1000, 3),
        ended_ms=round(call.ended_s * 1000, 3),
        samples=call.samples,
        completion_tokens=call.completion_tokens,
        is_completed=call.is_completed,
    )


def _size(trace: SearchTrace) -> int:
    texts = sum(len(n.text or "") + len(n.answer or "") for n in trace.nodes)
    return 1024 + texts + _NODE_BYTES * (len(trace.nodes) + len(trace.calls))


class TraceStore:
    """The most recent traces, oldest evicted first once a count, age or byte limit is hit."""

    def __init__(
        self,
        max_count: int,
        max_age_s: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_count = max_count
        self._max_age_s = max_age_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, int, SearchTrace]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        """The estimated size of what is kept."""
        return self._bytes

    def put(self, trace: SearchTrace) -> None:
        if self._max_count == 0:
            return
        size = _size(trace)
        if size > self._max_bytes:
            return  # larger than the whole budget: not kept
        self._drop(trace.request_id)
        self._items[trace.request_id] = (self._clock(), size, trace)
        self._bytes += size
        self._evict()

    def get(self, request_id: str) -> SearchTrace | None:
        self._evict()
        item = self._items.get(request_id)
        return item[2] if item is not None else None

    def recent(self, limit: int) -> list[SearchTrace]:
        """Newest first."""
        self._evict()
        return [item[2] for item in reversed(self._items.values())][:limit]

    def _drop(self, request_id: str) -> None:
        item = self._items.pop(request_id, None)
        if item is not None:
            self._bytes -= item[1]

    def _evict(self) -> None:
        oldest = self._clock() - self._max_age_s
        while self._items:
            key, (stored, _, _) = next(iter(self._items.items()))
            over = len(self._items) > self._max_count or self._bytes > self._max_bytes
            if not over and stored >= oldest:
                return
            self._drop(key)
