"""Whole-answer sampling shared by ``cot``, ``majority``, ``best_of_n`` and ``auto``'s pilots: one
policy call for all samples, each sample cut into steps. Must not import I/O libraries.
"""

from __future__ import annotations

from collections.abc import Sequence

from strategies.engine import SearchRun
from strategies.results import Candidate
from strategies.steps import split_generation
from strategies.types import Finish, Generation, Sampling

__all__ = ["as_candidates", "sample_answers", "sample_traces"]


async def sample_answers(
    run: SearchRun, n: int, temperature: float | None = None
) -> list[Candidate]:
    """``n`` full answers to the prompt, in one policy call (empty list if the deadline hit)."""
    sampling = run.sampling(is_step=False, temperature=temperature)
    return as_candidates(run, await sample_traces(run, n, sampling))


async def sample_traces(run: SearchRun, n: int, sampling: Sampling) -> list[Generation]:
    """``n`` full answers as generations, in one policy call (none if the deadline hit)."""
    batch = await run.generate([""], n, sampling)
    return list(batch.generations[0]) if batch is not None else []


def as_candidates(run: SearchRun, generations: Sequence[Generation]) -> list[Candidate]:
    """Finished candidates of whole answers, each a new node at the root of the trace."""
    candidates = [
        Candidate(
            steps=split_generation(generation, run.config.step_delimiter),
            is_finished=True,
            is_truncated=generation.finish is Finish.LENGTH,
            node_id=run.new_node(
                None, 0, generation.text, generation.call_id, generation.completion_tokens
            ),
        )
        for generation in generations
    ]
    run.mark([c.node_id for c in candidates], "finished")
    return candidates
