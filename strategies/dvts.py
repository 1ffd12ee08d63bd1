"""``dvts``: Diverse Verifier Tree Search.

The budget N is split into N/M independent subtrees. Each samples M next steps, keeps its single
best by last-step score and continues; a subtree ends when its kept step finishes it. The answer
is voted over the N/M subtree answers. Source: Beeching et al. 2024 (huggingface/search-and-learn
``diverse_verifier_tree_search.py``), Liu et al. 2025 §3.1.

The subtrees share nothing, so they advance without a barrier: each makes its next call as soon as
its own step is scored, instead of all of them waiting for the slowest at every depth (the
reference runs them in lock-step). A depth is one round of the search: its calls, one per live
subtree, are counted together (``generations_per_depth``, the trace's rounds). Must not import I/O
libraries; ``asyncio`` runs the subtrees side by side.
"""

from __future__ import annotations

import asyncio

from strategies.beam_search import expand
from strategies.engine import SearchRun
from strategies.results import Candidate, SearchResult
from strategies.scoring import select_top

__all__ = ["run_dvts"]


async def run_dvts(run: SearchRun) -> SearchResult:
    """Run N/M greedy-by-score subtrees at once, each at its own pace."""
    subtrees = [Candidate() for _ in range(run.config.budget // run.config.beam_width)]
    tasks = [asyncio.ensure_future(_grow(run, subtrees, i)) for i in range(len(subtrees))]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:  # one subtree failed: the others stop too
            task.cancel()
    finished = [tree for tree in subtrees if tree.is_finished]
    # Only finished subtrees answer; on a deadline with none finished, partial ones do (flagged).
    if not finished and run.is_stopped:
        return await run.finish([tree for tree in subtrees if tree.steps])
    return await run.finish(finished)


async def _grow(run: SearchRun, subtrees: list[Candidate], index: int) -> None:
    """One subtree, depth by depth, until its kept step finishes it (or a cap or the deadline
    stops the search); ``subtrees[index]`` holds its best so far."""
    width = run.config.beam_width
    sampling = run.sampling(is_step=True)
    depth = 0
    while not subtrees[index].is_finished:
        tree = subtrees[index]
        batch = await run.generate([tree.text], width, sampling, depth=depth)
        if batch is None:
            return
        scored = await run.score(expand(run, [tree], batch), depth=depth)
        if scored is None:
            return
        kept_ids, duplicate_ids = select_top(scored, 1)
        run.mark([scored[i].node_id for i in duplicate_ids], "duplicate")
        best = scored[kept_ids[0]]
        subtrees[index] = best
        run.mark([best.node_id], "finished" if best.is_finished else "kept")
        depth += 1
