"""``best_of_n``: N full samples in one policy call, all scored in one scorer call, then the
configured scoring (PRM-Last/Min/Avg/Prod) and voting (Majority/PRM-Max/PRM-Vote).
Source: Liu et al. 2025 §3.1; huggingface/search-and-learn ``best_of_n.py``.
Must not import I/O libraries.
"""

from __future__ import annotations

from strategies.engine import SearchRun
from strategies.full import sample_answers
from strategies.results import SearchResult

__all__ = ["run_best_of_n"]


async def run_best_of_n(run: SearchRun) -> SearchResult:
    """Sample ``budget`` answers, score every step once, vote."""
    candidates = await sample_answers(run, run.config.budget)
    scored = await run.score(candidates)
    return await run.finish(scored if scored is not None else candidates)
