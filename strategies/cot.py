"""``cot``: one greedy chain of thought (temperature 0), the paper's baseline.

Must not import I/O libraries.
"""

from __future__ import annotations

from strategies.engine import SearchRun
from strategies.full import sample_answers
from strategies.results import SearchResult

__all__ = ["run_cot"]


async def run_cot(run: SearchRun) -> SearchResult:
    """One sample at temperature 0. Nothing is scored: there is nothing to choose between."""
    return await run.finish(await sample_answers(run, 1, temperature=0.0))
