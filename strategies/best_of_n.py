"""``best_of_n``: N full samples, every step scored, then the configured scoring
(PRM-Last/Min/Avg/Prod) and voting (Majority/PRM-Max/PRM-Vote).
Source: Liu et al. 2025 §3.1; huggingface/search-and-learn ``best_of_n.py``.

With a scorer on a server of its own (``StepScorer.is_remote``: a PRM server, a verifier served
apart from the policy), the samples are drawn in a few calls at once and each part is scored as
soon as it is back, while the others still generate: only the last part's scoring follows the
generation instead of all of it. One round of the search all the same (``generations_per_depth``,
the trace). Without one (the confidence scorer, a verifier on the policy's server, no scorer), or
under a token cap that shares what is left among one call's samples, it is one call.
Must not import I/O libraries; ``asyncio`` runs the parts side by side.
"""

from __future__ import annotations

import asyncio

from strategies.engine import SearchRun
from strategies.full import as_candidates, sample_answers
from strategies.results import Candidate, SearchResult

__all__ = ["OVERLAP_PARTS", "run_best_of_n"]

# Calls the samples are drawn in when their scoring can overlap their generation. More parts
# leave less scoring after the last sample, at the price of as many policy calls.
OVERLAP_PARTS = 4


async def run_best_of_n(run: SearchRun) -> SearchResult:
    """Sample ``budget`` answers, score every step once, vote."""
    budget = run.config.budget
    scorer = run.scorer
    if (
        scorer is None
        or not scorer.is_remote
        or budget < 2
        or run.config.max_total_tokens is not None
    ):
        candidates = await sample_answers(run, budget)
        scored = await run.score(candidates)
        return await run.finish(scored if scored is not None else candidates)
    parts = min(OVERLAP_PARTS, budget)
    sizes = [budget // parts + (1 if i < budget % parts else 0) for i in range(parts)]
    tasks = [asyncio.ensure_future(_scored_part(run, size)) for size in sizes]
    try:
        done = await asyncio.gather(*tasks)
    finally:
        for task in tasks:  # one part failed: the others stop too
            task.cancel()
    return await run.finish([candidate for part in done for candidate in part])


async def _scored_part(run: SearchRun, n: int) -> list[Candidate]:
    """``n`` answers in one call, scored as soon as they are back (unscored past the
    deadline; none if it hit before they were)."""
    batch = await run.generate([""], n, run.sampling(is_step=False), depth=0)
    if batch is None:
        return []
    candidates = as_candidates(run, batch.generations[0])
    scored = await run.score(candidates, depth=0)
    return scored if scored is not None else candidates
