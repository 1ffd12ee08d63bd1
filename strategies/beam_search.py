"""``beam_search``: PRM-guided step-level beam search.

Depth 0 samples ``budget`` (N) first steps; the top N/M by last-step score (PRM-Last of the whole
prefix) are kept, and each kept beam is expanded with M samples. Kept beams that are finished leave
the beam set, so N/M − finished beams stay live. The search stops when N/M candidates finished or
nothing is live; the answer is voted over the finished candidates.
Source: Liu et al. 2025 §3.1 and the paper code's ``SearchTree.beam_search`` (OpenR lineage).
Must not import I/O libraries.
"""

from __future__ import annotations

from collections.abc import Sequence

from strategies.engine import SearchRun
from strategies.results import Candidate, SearchResult
from strategies.scoring import select_top
from strategies.steps import extend
from strategies.types import PolicyBatch

__all__ = ["run_beam_search"]


async def run_beam_search(run: SearchRun) -> SearchResult:
    """Run the search; every depth is one policy call and one scorer call."""
    cfg = run.config
    n_keep = cfg.budget // cfg.beam_width
    sampling = run.sampling(is_step=True)
    finished: list[Candidate] = []
    live: list[Candidate] = [Candidate()]
    batch = await run.generate([""], cfg.budget, sampling)
    while batch is not None:
        scored = await run.score(expand(run, live, batch))
        if scored is None:
            break
        kept_ids, duplicate_ids = select_top(scored, n_keep - len(finished))
        kept = [scored[i] for i in kept_ids]
        run.mark([scored[i].node_id for i in duplicate_ids], "duplicate")
        run.mark([c.node_id for c in kept], "kept")
        done = [c for c in kept if c.is_finished]
        run.mark([c.node_id for c in done], "finished")
        finished.extend(done)
        live = [c for c in kept if not c.is_finished]
        if not live:
            break
        batch = await run.generate([c.text for c in live], cfg.beam_width, sampling)
    if not finished and run.is_stopped:
        # A deadline with nothing finished: the live beams answer, and the result is flagged.
        return await run.finish([c for c in live if c.steps])
    return await run.finish(finished)


def expand(run: SearchRun, beams: Sequence[Candidate], batch: PolicyBatch) -> list[Candidate]:
    """Every sampled step appended to its beam, in order (beam-major)."""
    cfg = run.config
    children = []
    for beam, group in zip(beams, batch.generations, strict=True):
        depth = len(beam.steps)
        parent = beam.node_id if beam.steps else None
        for generation in group:
            node_id = run.new_node(
                parent, depth, generation.text, generation.call_id, generation.completion_tokens
            )
            children.append(
                extend(
                    beam,
                    generation,
                    node_id=node_id,
                    max_steps=cfg.max_steps,
                    markers=cfg.answer_markers,
                )
            )
    return children
