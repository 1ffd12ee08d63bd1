"""``majority`` (self-consistency, Wang et al. 2023): N samples, the most frequent
mathematically equivalent answer wins. No scorer is consulted. Must not import I/O libraries.
"""

from __future__ import annotations

from strategies.engine import SearchRun
from strategies.full import sample_answers
from strategies.results import SearchResult

__all__ = ["run_majority"]


async def run_majority(run: SearchRun) -> SearchResult:
    """``budget`` samples in one policy call, then a majority vote."""
    return await run.finish(await sample_answers(run, run.config.budget))
