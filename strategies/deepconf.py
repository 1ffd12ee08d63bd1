"""``deepconf``: traces filtered, weighted and (online) stopped by their own token confidence.

Token confidence (Fu et al. 2025, "Deep Think with Confidence"): ``C_i = -mean(top-k log-probs)``
at token ``i`` — high when the model's next-token distribution is peaked. A trace's confidence is
its **lowest group confidence**: the lowest mean ``C`` over any ``window`` consecutive tokens.
The paper's window is 2048 tokens, which short answers never fill, so the window scales with the
answers: a quarter of the median trace length, between 8 and 2048 tokens, unless the request sets
``confidence_window``.

- **offline**: N traces in one call; the top ``keep_percent`` % by confidence vote, each weighted
  by its confidence.
- **online** (default): ``warmup`` traces (a quarter of N, at least 2, below N) set the
  threshold — the ``100 - keep_percent`` percentile of their confidences — and the window; the
  rest are streamed ``deepconf_chunk`` at a time, each **closed the moment its running group
  confidence falls below the threshold** (the server aborts it; its tokens so far are counted).
  Stopped traces do not vote. Between chunks the weighted vote is checked with ``auto``'s
  predictive rule (``keeps_lead`` on the kept traces' votes); sampling ends once it is settled.

``keep_percent`` defaults to 90 (the paper's conservative variant): at the 8–16 traces a request
can afford, keeping 10 % would leave one or two traces and no vote. Must not import I/O libraries.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

from strategies.answers import extract_answer
from strategies.engine import SearchRun
from strategies.results import AutoDecision, Candidate, DeepConfReport, SearchResult
from strategies.steps import split_generation
from strategies.stopping import keeps_lead
from strategies.types import Finish, Generation, Sampling

__all__ = [
    "Warm",
    "confidence_sampling",
    "group_confidences",
    "lowest_group_confidence",
    "run_deepconf",
    "tail_confidence",
    "token_confidence",
    "window_for",
]

_SETTLED = 0.95  # the stopping rule's confidence, as auto's default


def token_confidence(top_logprobs: Sequence[float]) -> float:
    """``-mean`` of one token's top-k log-probabilities."""
    return -math.fsum(top_logprobs) / len(top_logprobs) if top_logprobs else 0.0


def group_confidences(confidences: Sequence[float], window: int) -> list[float]:
    """Mean confidence of every run of ``window`` consecutive tokens (one group if shorter)."""
    size = max(1, min(window, len(confidences)))
    if not confidences:
        return []
    running = math.fsum(confidences[:size])
    out = [running / size]
    for i in range(size, len(confidences)):
        running += confidences[i] - confidences[i - size]
        out.append(running / size)
    return out


def lowest_group_confidence(confidences: Sequence[float], window: int) -> float:
    """DeepConf's trace confidence: the lowest mean over sliding groups of ``window`` tokens
    (0 for an empty trace)."""
    groups = group_confidences(confidences, window)
    return min(groups) if groups else 0.0


def tail_confidence(confidences: Sequence[float], tail: int) -> float:
    """Mean confidence of the last ``tail`` tokens (the paper's alternative measure)."""
    last = confidences[-tail:] if tail > 0 else confidences
    return math.fsum(last) / len(last) if last else 0.0


def window_for(lengths: Sequence[int]) -> int:
    """A group window scaled to the traces: a quarter of the median length, in [8, 2048]."""
    if not lengths:
        return 8
    return int(min(2048, max(8, statistics.median(lengths) // 4)))


def confidence_sampling(run: SearchRun) -> Sampling:
    """Full answers with the top-k log-probs that token confidence needs."""
    return dataclasses.replace(run.sampling(is_step=False), top_logprobs=run.config.top_logprobs)


@dataclasses.dataclass(frozen=True, slots=True)
class Warm:
    """Traces sampled before the search (``auto``'s pilots, drawn with ``confidence_sampling``):
    the first of its N traces, already in the trace tree as ``nodes``."""

    traces: tuple[Generation, ...] = ()
    nodes: tuple[int, ...] = ()


async def run_deepconf(
    run: SearchRun, warm: Warm = Warm(), decision: AutoDecision | None = None
) -> SearchResult:
    """``deepconf``: sample traces and vote weighted by their confidence, keeping the most
    confident share; online (the default) stops a streamed trace as soon as its confidence
    falls below the warm-up's threshold, offline filters finished traces. ``warm`` carries
    traces already drawn (``auto``'s pilots), ``decision`` ``auto``'s report to extend."""
    sampling = confidence_sampling(run)
    if run.config.deepconf_mode == "offline":
        return await _offline(run, sampling, warm, decision)
    return await _online(run, sampling, warm, decision)


async def _offline(
    run: SearchRun, sampling: Sampling, warm: Warm, decision: AutoDecision | None
) -> SearchResult:
    cfg = run.config
    topped = await _top_up(run, sampling, warm, cfg.budget)
    if topped is None:
        return await run.finish([])
    traces, nodes = topped
    window = cfg.confidence_window or window_for([len(g.token_confidences) for g in traces])
    scores = [lowest_group_confidence(g.token_confidences, window) for g in traces]
    keep = max(1, math.ceil(len(traces) * cfg.keep_percent / 100))
    kept = sorted(sorted(range(len(traces)), key=lambda i: -scores[i])[:keep])
    report = DeepConfReport(
        mode="offline",
        keep_percent=cfg.keep_percent,
        window=window,
        traces=len(traces),
        kept=len(kept),
        stopped=0,
        threshold=None,
        warmup=None,
        settled=False,
    )
    chosen = [(traces[i], scores[i], nodes[i]) for i in kept]
    return await _vote(run, chosen, report, decision)


async def _online(
    run: SearchRun, sampling: Sampling, warm: Warm, decision: AutoDecision | None
) -> SearchResult:
    cfg = run.config
    n = cfg.budget
    warmup = max(min(cfg.warmup or max(2, n // 4), n), len(warm.traces))
    topped = await _top_up(run, sampling, warm, warmup)
    if topped is None:
        return await run.finish([])
    kept, nodes = topped
    window = cfg.confidence_window or window_for([len(g.token_confidences) for g in kept])
    scores = [lowest_group_confidence(g.token_confidences, window) for g in kept]
    threshold = _percentile(scores, 100 - cfg.keep_percent)
    traces, stopped, settled = len(kept), 0, False

    def keep_going(confidences: Sequence[float]) -> bool:
        if len(confidences) < window:
            return True
        return math.fsum(confidences[-window:]) / window >= threshold

    while traces < n:
        if await _is_settled(run, kept, scores, n - traces):
            settled = True
            break
        count = min(cfg.deepconf_chunk, n - traces)
        wave = await run.stream_many(count, sampling, keep_going)
        if wave is None:
            break
        traces += count
        for trace in wave:
            if trace.finish is Finish.STOPPED:  # in the trace, not in the vote
                stopped += 1
                node = run.new_node(None, 0, trace.text, trace.call_id, trace.completion_tokens)
                run.mark([node], "stopped")
                continue
            kept.append(trace)
            nodes.append(None)
            scores.append(lowest_group_confidence(trace.token_confidences, window))
    report = DeepConfReport(
        mode="online",
        keep_percent=cfg.keep_percent,
        window=window,
        traces=traces,
        kept=len(kept),
        stopped=stopped,
        threshold=threshold,
        warmup=warmup,
        settled=settled,
    )
    return await _vote(run, list(zip(kept, scores, nodes, strict=True)), report, decision)


async def _top_up(
    run: SearchRun, sampling: Sampling, warm: Warm, count: int
) -> tuple[list[Generation], list[int | None]] | None:
    """The warm traces plus fresh ones up to ``count`` in one call, with their nodes (``None``
    for the fresh); ``None`` if nothing could be sampled at all."""
    traces, nodes = list(warm.traces), list[int | None](warm.nodes)
    if count <= len(traces):
        return traces, nodes
    batch = await run.generate([""], count - len(traces), sampling)
    if batch is None:
        return (traces, nodes) if traces else None
    fresh = list(batch.generations[0])
    return [*traces, *fresh], [*nodes, *[None] * len(fresh)]


async def _vote(
    run: SearchRun,
    chosen: Sequence[tuple[Generation, float, int | None]],
    report: DeepConfReport,
    decision: AutoDecision | None,
) -> SearchResult:
    """The confidence-weighted vote of the chosen traces (trace, weight, its node if it has
    one already)."""
    cfg = run.config
    candidates = [
        Candidate(
            steps=split_generation(trace, cfg.step_delimiter),
            is_finished=True,
            is_truncated=trace.finish is Finish.LENGTH,
            node_id=node
            if node is not None
            else run.new_node(None, 0, trace.text, trace.call_id, trace.completion_tokens),
        )
        for trace, _, node in chosen
    ]
    run.mark([c.node_id for c in candidates], "finished")
    weights = [weight for _, weight, _ in chosen]
    return await run.finish(candidates, decision, weights=weights, deepconf=report)


def _percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) by linear interpolation; the value itself for one."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    at = (len(ordered) - 1) * q / 100
    low = math.floor(at)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (at - low)


async def _is_settled(
    run: SearchRun, traces: Sequence[Generation], weights: Sequence[float], remaining: int
) -> bool:
    """``auto``'s predictive rule on the kept traces' votes: the confidence-weighted leader,
    counted against the runner-up and the rest."""
    if not traces:
        return False
    answers = [extract_answer(t.text, run.config.answer_markers) for t in traces]
    groups = await run.group(answers)
    weight: dict[int, float] = {}
    votes: dict[int, int] = {}
    for group, answer, w in zip(groups, answers, weights, strict=True):
        if answer:
            weight[group] = weight.get(group, 0.0) + w
            votes[group] = votes.get(group, 0) + 1
    if not weight:
        return False
    ranked = sorted(weight, key=lambda g: -weight[g])
    leader = votes[ranked[0]]
    runner_up = votes[ranked[1]] if len(ranked) > 1 else 0
    rest = len(traces) - leader - runner_up
    return keeps_lead(leader, runner_up, rest, remaining) >= _SETTLED
