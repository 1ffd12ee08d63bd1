"""Whole-answer sampling shared by ``cot``, ``majority`` and ``best_of_n``: one policy call for
all samples, each sample cut into steps. Must not import I/O libraries.
"""

from __future__ import annotations

from strategies.engine import SearchRun
from strategies.results import Candidate
from strategies.steps import split_generation
from strategies.types import Finish

__all__ = ["sample_answers"]


async def sample_answers(
    run: SearchRun, n: int, temperature: float | None = None
) -> list[Candidate]:
    """``n`` full answers to the prompt, in one policy call (empty list if the deadline hit)."""
    sampling = run.sampling(is_step=False, temperature=temperature)
    batch = await run.generate([""], n, sampling)
    if batch is None:
        return []
    candidates = []
    for generation in batch.generations[0]:
        node_id = run.new_node(None, 0, generation.text, generation.call_id)
        candidates.append(
            Candidate(
                steps=split_generation(generation, run.config.step_delimiter),
                is_finished=True,
                is_truncated=generation.finish is Finish.LENGTH,
                node_id=node_id,
            )
        )
    run.mark([c.node_id for c in candidates], "finished")
    return candidates
