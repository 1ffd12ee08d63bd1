"""``auto``: choose the method and spend the budget per request, online.

Liu et al. 2025 pick the best method per (policy size, PRM, difficulty) offline, with oracle
difficulty. Here difficulty is estimated from a few pilot samples, which also count as the first
samples of the vote:

1. Draw ``pilots`` full answers (one policy call). Their agreement (share of the leading
   mathematically-equivalent answer) estimates pass@1 and is binned with the paper's absolute
   thresholds: easy >= 50 %, hard < 10 % (no answer repeats), medium otherwise.
2. Stop as soon as the answer is settled: the predictive probability (Dirichlet-multinomial,
   uniform prior) that spending the rest of the budget would leave the leading answer ahead of
   the runner-up reaches ``confidence`` (``keeps_lead``). A Beta test on the leader alone
   (adaptive consistency) ignores how much budget is left and spent far more for the same
   accuracy on real samples (``bench/stopping.py``).
3. Otherwise run the method the rules give for the difficulty bin with the remaining budget:
   ``majority`` / ``best_of_n`` keep sampling in chunks and re-check the stopping rule after each;
   a chunk is never smaller than the fewest samples that could settle it (``draws_to_settle``);
   ``beam_search`` / ``dvts`` get the largest multiple of the beam width that fits.
4. The final vote covers the pilots and everything sampled after them; the budget is a hard cap.

In ``concurrent`` mode (``AutoConfig.mode``, or a cell's) the samples are streamed at once
instead of in chunks: the first ``pilots`` to finish set the bin, and the moment the vote is
settled the streams still running are stopped (the server aborts them) and their tokens counted.
One round instead of several, paid for with the tokens the stopped streams had already generated.
The whole cap is streamed at once only when every bin's method votes (the pilots, majority,
best-of-N); otherwise the pilots come first and a voting cell streams its remainder at once.

The rules (difficulty -> method) come in resolved for the policy and scorer at hand; the proxy
reads them from a data file. Must not import I/O libraries.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import Counter
from collections.abc import Sequence
from typing import cast

from strategies.answers import extract_answer
from strategies.beam_search import run_beam_search
from strategies.deepconf import Warm, confidence_sampling, run_deepconf
from strategies.dvts import run_dvts
from strategies.engine import SearchRun
from strategies.errors import ConfigError
from strategies.full import as_candidates, sample_answers, sample_traces
from strategies.particle_filtering import run_particle_filtering
from strategies.results import AutoDecision, Candidate, SearchResult
from strategies.stopping import draws_to_settle, keeps_lead
from strategies.types import (
    AutoConfig,
    CellMethod,
    Difficulty,
    Finish,
    Generation,
    Sampling,
    SamplingMode,
    StrategyName,
    StreamingPolicy,
)

__all__ = [
    "SearchShape",
    "difficulty_of",
    "draws_to_settle",
    "keeps_lead",
    "run_auto",
    "search_shape",
]

_EASY_AT = 0.5  # pass@1 bins of Liu et al. 2025: easy 50-100 %, medium 10-50 %, hard 0-10 %
_HARD_BELOW = 0.1


async def _tally(run: SearchRun, candidates: Sequence[Candidate]) -> tuple[int, int, int]:
    """Votes for the leading answer, for the runner-up, and for anything else (other answers
    and samples without one)."""
    return await _tally_texts(run, [c.text for c in candidates])


async def _tally_texts(run: SearchRun, texts: Sequence[str]) -> tuple[int, int, int]:
    answers = [extract_answer(text, run.config.answer_markers) for text in texts]
    groups = await run.group(answers)
    counts = sorted(Counter(g for g, a in zip(groups, answers, strict=True) if a).values())
    leader, runner_up = [0, 0, *counts][-1], [0, 0, *counts][-2]
    return leader, runner_up, len(texts) - leader - runner_up


def difficulty_of(leader: int, drawn: int) -> Difficulty:
    """The paper's bin from the pilots: the leading answer's share of ``drawn`` samples (its
    votes: ``leader``) estimates pass@1; a leader without a repeat is "hard" whatever its share."""
    agreement = leader / drawn if drawn else 0.0
    if agreement >= _EASY_AT:
        return "easy"
    if agreement < _HARD_BELOW or leader <= 1:
        return "hard"
    return "medium"


@dataclasses.dataclass(frozen=True, slots=True)
class _Cell:
    """The bin's cell resolved against the request: method, total budget within the cap, and the
    stopping rule's confidence and chunk."""

    method: CellMethod
    limit: int
    confidence: float
    chunk: int
    mode: SamplingMode = "sequential"


def _resolve(auto: AutoConfig, difficulty: Difficulty, budget: int) -> _Cell:
    cell = auto.cells.get(difficulty)
    if cell is None:
        return _Cell(auto.methods[difficulty], budget, auto.confidence, auto.chunk, auto.mode)
    return _Cell(
        method=cell.method,
        limit=min(cell.budget, budget) if cell.budget else budget,
        confidence=cell.confidence if cell.confidence is not None else auto.confidence,
        chunk=cell.chunk or auto.chunk,
        mode="concurrent" if "concurrent" in (auto.mode, cell.mode) else "sequential",
    )


_VOTING: frozenset[CellMethod] = frozenset({"pilots", "majority", "best_of_n"})


def _at_once(run: SearchRun, auto: AutoConfig, budget: int) -> bool:
    """Whether the whole cap is streamed at once: concurrent mode, a streaming policy, budget
    beyond the pilots, and a voting method in every bin (a search needs the budget it leaves)."""
    methods = {_resolve(auto, d, budget).method for d in ("easy", "medium", "hard")}
    return (
        auto.mode == "concurrent"
        and isinstance(run.policy, StreamingPolicy)
        and budget > auto.pilots
        and methods <= _VOTING
    )


class _Judge:
    """Tallies finished samples as they arrive and says how many are wanted in all: the cell's
    limit until the vote is settled, then those already in. With no cell yet, the first
    ``pilots`` to finish choose it."""

    def __init__(self, run: SearchRun, auto: AutoConfig, budget: int, cell: _Cell | None) -> None:
        self.run, self.auto, self.budget, self.cell = run, auto, budget, cell
        self.texts: list[str] = []
        self.pilot_leader = 0
        self.confidence = 0.0

    def seed(self, texts: Sequence[str]) -> None:
        """Samples already in the vote (the pilots, drawn first)."""
        self.texts.extend(texts)

    async def __call__(self, generation: Generation) -> int:
        self.texts.append(generation.text)
        drawn = len(self.texts)
        if self.cell is None and drawn < self.auto.pilots:
            return self.budget
        leader, runner_up, rest = await _tally_texts(self.run, self.texts)
        if self.cell is None:
            self.pilot_leader = leader
            self.cell = _resolve(self.auto, difficulty_of(leader, drawn), self.budget)
            if self.cell.method == "pilots":
                return drawn
        horizon = (self.cell.limit - drawn) or self.cell.limit
        self.confidence = keeps_lead(leader, runner_up, rest, horizon) if leader else 0.0
        settled = drawn >= self.cell.limit or self.confidence >= self.cell.confidence
        return drawn if settled else self.cell.limit


def _stopped(run: SearchRun, traces: Sequence[Generation]) -> tuple[list[Generation], int]:
    """The finished traces; the stopped ones go in the trace tree only (their tokens are
    counted), and how many there were."""
    cut = [t for t in traces if t.finish is Finish.STOPPED]
    for trace in cut:
        node = run.new_node(None, 0, trace.text, trace.call_id, trace.completion_tokens)
        run.mark([node], "stopped")
    return [t for t in traces if t.finish is not Finish.STOPPED], len(cut)


async def run_auto(run: SearchRun) -> SearchResult:
    """Pilots, the bin's cell, an early stop, then the cell's method within its budget."""
    auto = run.config.auto
    if auto is None:
        raise ConfigError(
            "auto needs SearchConfig.auto (the rules for this policy and scorer)", "auto"
        )
    budget = run.config.budget
    # DeepConf in the rules: the pilots carry token confidences and become its warm-up traces
    methods = [*auto.methods.values(), *(c.method for c in auto.cells.values())]
    sampling = confidence_sampling(run) if "deepconf" in methods else run.sampling(is_step=False)
    if _at_once(run, auto, budget):
        return await _run_at_once(run, auto, budget, sampling)
    traces = await sample_traces(run, min(auto.pilots, budget), sampling)
    pilots = as_candidates(run, traces)
    leader, runner_up, rest = await _tally(run, pilots)
    agreement = leader / len(pilots) if pilots else 0.0
    difficulty = difficulty_of(leader, len(pilots))
    cell = _resolve(auto, difficulty, budget)
    named = auto.cells.get(difficulty)  # the rules' cell, reported in tts.auto
    # With budget left: will the lead survive it? With none (pilots == the cell's budget) that
    # is vacuous, so the horizon is that budget again: would the lead survive as many once more?
    horizon = max(cell.limit - len(pilots), 0) or cell.limit
    confidence = keeps_lead(leader, runner_up, rest, horizon) if leader else 0.0
    decide = functools.partial(
        AutoDecision,
        len(pilots),
        agreement,
        difficulty,
        rules=auto.rules,
        cell=named.name if named else "",
        budget=cell.limit if named else None,
        evidence=named.evidence if named else "",
    )
    answer_now = cell.method == "pilots" or confidence >= cell.confidence
    if not pilots or answer_now or len(pilots) >= cell.limit:
        is_early = len(pilots) < budget
        why = _why_pilots(cell, len(pilots), budget, confidence)
        return await _vote(run, pilots, None, decide(None, why, is_early, confidence))
    method = cell.method
    remaining = cell.limit - len(pilots)
    if method == "deepconf":
        reason = f"{difficulty} (pilot agreement {agreement:.0%}): deepconf; {auto.reason}"
        warm = Warm(tuple(traces), tuple(c.node_id for c in pilots))
        result = await run_deepconf(
            run.fork("auto", dataclasses.replace(run.config, budget=cell.limit)),
            warm,
            decide(method, reason.rstrip("; "), False, confidence),
        )
        if result.decision is None or result.deepconf is None:
            return result
        early = dataclasses.replace(result.decision, stopped_early=result.deepconf.settled)
        return dataclasses.replace(result, decision=early)
    ran: StrategyName
    cut, stopped_streams = "", 0
    mode: SamplingMode = "sequential"
    if method in _STEP_SEARCHES and remaining >= run.config.beam_width:
        ran = cast("StrategyName", method)
        extra, cut = await _search(run, ran, remaining)
    elif cell.mode == "concurrent" and isinstance(run.policy, StreamingPolicy):
        ran, mode = ("majority" if method == "majority" else "best_of_n"), "concurrent"
        extra, confidence, stopped_streams = await _settle_at_once(run, auto, cell, pilots)
    else:
        ran = "majority" if method == "majority" else "best_of_n"
        tally = (leader, runner_up, rest)
        extra, confidence = await _sample_until_settled(run, cell, pilots, tally, remaining)
    candidates = [*pilots, *extra]
    reason = f"{difficulty} (pilot agreement {agreement:.0%}): {ran}{cut}; {auto.reason}"
    reason = reason.rstrip("; ")
    stopped = len(candidates) < cell.limit and ran in ("majority", "best_of_n")
    decision = decide(ran, reason, stopped, confidence, mode=mode, streams_stopped=stopped_streams)
    return await _vote(run, candidates, ran, decision)


async def _vote(
    run: SearchRun, candidates: list[Candidate], ran: StrategyName | None, decision: AutoDecision
) -> SearchResult:
    """The final answer: by votes (majority, the pilots, or no scorer), else by the scorer; the
    scorer's best when no candidate has an extractable answer."""
    if (await _tally(run, candidates))[0] == 0:
        return await _by_score(run, candidates, decision)
    if ran in (None, "majority") or run.scorer is None:
        return await _voter(run).finish(candidates, decision)
    scored = await run.score(candidates)
    return await run.finish(scored if scored is not None else candidates, decision)


async def _run_at_once(
    run: SearchRun, auto: AutoConfig, budget: int, sampling: Sampling
) -> SearchResult:
    """The whole cap streamed at once: the first ``pilots`` to finish choose the cell, and the
    streams still running are stopped the moment its vote is settled."""
    judge = _Judge(run, auto, budget, None)
    traces = await run.stream_settling(budget, sampling, judge, auto.window) or []
    finished, stopped_streams = _stopped(run, traces)
    candidates = as_candidates(run, finished)
    pilots = min(auto.pilots, len(candidates))
    leader = judge.pilot_leader if judge.cell is not None else (await _tally(run, candidates))[0]
    agreement = leader / pilots if pilots else 0.0
    difficulty = difficulty_of(leader, pilots)
    cell = judge.cell or _resolve(auto, difficulty, budget)
    named = auto.cells.get(difficulty)
    ran: StrategyName | None = None
    if cell.method != "pilots" and len(candidates) > pilots:
        ran = "majority" if cell.method == "majority" else "best_of_n"
        why = f"{difficulty} (pilot agreement {agreement:.0%}): {ran}; {auto.reason}"
    else:
        why = _why_pilots(cell, pilots, budget, judge.confidence)
    decision = AutoDecision(
        pilots,
        agreement,
        difficulty,
        ran,
        why.rstrip("; "),
        len(candidates) < cell.limit,
        judge.confidence,
        rules=auto.rules,
        cell=named.name if named else "",
        budget=cell.limit if named else None,
        evidence=named.evidence if named else "",
        mode="concurrent",
        streams_stopped=stopped_streams,
    )
    return await _vote(run, candidates, ran, decision)


async def _settle_at_once(
    run: SearchRun, auto: AutoConfig, cell: _Cell, pilots: Sequence[Candidate]
) -> tuple[list[Candidate], float, int]:
    """The cell's remaining samples streamed at once after the pilots, the rest stopped once
    the vote is settled: the new candidates, the rule's confidence, the streams stopped."""
    judge = _Judge(run, auto, cell.limit, cell)
    judge.seed([c.text for c in pilots])
    remaining = cell.limit - len(pilots)
    sampling = run.sampling(is_step=False)
    traces = await run.stream_settling(remaining, sampling, judge, auto.window) or []
    finished, stopped_streams = _stopped(run, traces)
    return as_candidates(run, finished), judge.confidence, stopped_streams


def _why_pilots(cell: _Cell, pilots: int, budget: int, confidence: float) -> str:
    if cell.method == "pilots":
        return "the cell answers from the pilots"
    if pilots < cell.limit or (pilots < budget and confidence >= cell.confidence):
        return "the pilots settle it"
    if cell.limit == budget:
        return "the pilots used the whole budget"
    return "the pilots used the cell's budget"


async def _by_score(
    run: SearchRun, candidates: list[Candidate], decision: AutoDecision
) -> SearchResult:
    """No candidate has an extractable final answer (free text): the scorer's best one wins."""
    note = "no extractable final answer: the scorer's best candidate"
    decision = dataclasses.replace(decision, reason=f"{decision.reason}; {note}")
    scored = await run.score(candidates) if run.scorer is not None else None
    return await run.finish(scored if scored is not None else candidates, decision)


def _voter(run: SearchRun) -> SearchRun:
    """The run without its scorer, voting by majority unless a voting mode was asked for."""
    config = run.config if run.config.voting else dataclasses.replace(run.config, voting="majority")
    return run.fork("auto", config, with_scorer=False)


@dataclasses.dataclass(frozen=True, slots=True)
class SearchShape:
    """How ``auto`` runs a step search with ``remaining`` generations of its budget: N per depth
    (``per_depth``), every generation across its depths counted against ``max_generations``,
    and particle Gibbs sweeps cut to what N fits (``particle_iterations``)."""

    per_depth: int
    max_generations: int
    particle_iterations: int


def search_shape(
    method: str, remaining: int, beam_width: int, particle_iterations: int = 1
) -> SearchShape:
    """N is half the remaining budget (so at least two depths fit) in whole beams, never less
    than one beam; particle filtering keeps 2 particles per sweep at least. ``tts-eval
    calibrate`` runs a step search cell's search alone in this shape."""
    per_depth = max(beam_width, (remaining // 2) // beam_width * beam_width)
    sweeps = particle_iterations
    if method == "particle_filtering":
        sweeps = min(particle_iterations, max(per_depth // 2, 1))
    return SearchShape(per_depth, remaining, sweeps)


async def _search(
    run: SearchRun, method: StrategyName, remaining: int
) -> tuple[list[Candidate], str]:
    """The search in ``search_shape``, every generation across its depths counted against the
    cap (and the request's own ``max_generations``), with a note when particle Gibbs sweeps were
    cut to what N fits."""
    shape = search_shape(method, remaining, run.config.beam_width, run.config.particle_iterations)
    cap = run.usage.generations + shape.max_generations
    if run.config.max_generations is not None:
        cap = min(cap, run.config.max_generations)
    config = dataclasses.replace(
        run.config,
        budget=shape.per_depth,
        max_generations=cap,
        particle_iterations=shape.particle_iterations,
    )
    note = ""
    if shape.particle_iterations < run.config.particle_iterations:
        note = (
            f" (particle_iterations {run.config.particle_iterations} cut to "
            f"{shape.particle_iterations}: N={shape.per_depth})"
        )
    result = await _STEP_SEARCHES[method](run.fork(method, config))
    return [c.candidate for c in result.candidates], note


_STEP_SEARCHES = {
    "beam_search": run_beam_search,
    "dvts": run_dvts,
    "particle_filtering": run_particle_filtering,
}


async def _sample_until_settled(
    run: SearchRun,
    cell: _Cell,
    pilots: list[Candidate],
    tally: tuple[int, int, int],
    remaining: int,
) -> tuple[list[Candidate], float]:
    extra: list[Candidate] = []
    confidence = 0.0
    leader, runner_up, rest = tally  # the pilots' votes
    while remaining > 0:
        size = draws_to_settle(leader, runner_up, rest, remaining, cell.confidence, cell.chunk)
        batch = await sample_answers(run, size)
        if not batch:
            break  # the deadline passed
        extra.extend(batch)
        remaining -= len(batch)
        leader, runner_up, rest = await _tally(run, [*pilots, *extra])
        confidence = keeps_lead(leader, runner_up, rest, remaining) if leader else 0.0
        if confidence >= cell.confidence:
            break
    return extra, confidence
