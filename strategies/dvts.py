"""``dvts``: Diverse Verifier Tree Search.

The budget N is split into N/M independent subtrees advanced in lock-step. At every depth each
live subtree samples M next steps, keeps its single best by last-step score and continues; a
subtree ends when its kept step finishes it. The answer is voted over the N/M subtree answers.
Source: Beeching et al. 2024 (huggingface/search-and-learn ``diverse_verifier_tree_search.py``),
Liu et al. 2025 §3.1. Must not import I/O libraries.
"""

from __future__ import annotations

from strategies.beam_search import expand
from strategies.engine import SearchRun
from strategies.results import Candidate, SearchResult
from strategies.scoring import select_top

__all__ = ["run_dvts"]


async def run_dvts(run: SearchRun) -> SearchResult:
    """Run N/M greedy-by-score subtrees; one policy and one scorer call per depth for all."""
    cfg = run.config
    width = cfg.beam_width
    subtrees = [Candidate() for _ in range(cfg.budget // width)]
    live = list(range(len(subtrees)))
    sampling = run.sampling(is_step=True)
    while live:
        batch = await run.generate([subtrees[i].text for i in live], width, sampling)
        if batch is None:
            break
        scored = await run.score(expand(run, [subtrees[i] for i in live], batch))
        if scored is None:
            break
        still_live = []
        for slot, tree in enumerate(live):
            group = scored[slot * width : (slot + 1) * width]
            kept_ids, duplicate_ids = select_top(group, 1)
            run.mark([group[i].node_id for i in duplicate_ids], "duplicate")
            best = group[kept_ids[0]]
            subtrees[tree] = best
            run.mark([best.node_id], "finished" if best.is_finished else "kept")
            if not best.is_finished:
                still_live.append(tree)
        live = still_live
    finished = [tree for tree in subtrees if tree.is_finished]
    # Only finished subtrees answer; on a deadline with none finished, partial ones do (flagged).
    if not finished and run.is_stopped:
        return await run.finish([tree for tree in subtrees if tree.steps])
    return await run.finish(finished)
