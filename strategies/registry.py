"""The explicit registry of search methods, and ``search()``, the library's entry point.

Must not import I/O libraries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

from strategies.answers import group_inline
from strategies.auto import run_auto
from strategies.beam_search import run_beam_search
from strategies.best_of_n import run_best_of_n
from strategies.cot import run_cot
from strategies.deepconf import run_deepconf
from strategies.dvts import run_dvts
from strategies.engine import SearchRun
from strategies.errors import ConfigError
from strategies.majority import run_majority
from strategies.particle_filtering import run_particle_filtering
from strategies.results import SearchResult
from strategies.types import (
    AnswerGrouper,
    Policy,
    SearchConfig,
    SearchObserver,
    StepScorer,
    StrategyName,
)

__all__ = ["STRATEGIES", "BudgetUnit", "StrategySpec", "search"]

# What a budget N counts: "samples" (N whole answers), "samples_per_depth" (N continuations at
# every step), "particles" (N particles, one step each per round), "samples_cap" (at most N in
# all, fewer when the answer settles early), "unused" (one answer whatever N).
BudgetUnit = Literal["samples", "samples_per_depth", "particles", "samples_cap", "unused"]


@dataclass(frozen=True, slots=True)
class StrategySpec:
    """How to run one method, what it needs, and what its budget counts."""

    run: Callable[[SearchRun], Awaitable[SearchResult]]
    uses_scorer: bool
    needs_scorer: bool
    is_stepwise: bool
    budget_unit: BudgetUnit = "samples"

    def max_generations(self, config: SearchConfig) -> int:
        """The most generations ``config``'s budget (and its ``max_generations``) allows for this
        method."""
        if self.budget_unit == "unused":
            return 1
        most = config.budget
        if self.budget_unit in ("samples_per_depth", "particles"):
            most = config.budget * config.max_steps
        return min(most, config.max_generations or most)


STRATEGIES: Mapping[StrategyName, StrategySpec] = MappingProxyType(
    {
        "cot": StrategySpec(
            run_cot, uses_scorer=False, needs_scorer=False, is_stepwise=False, budget_unit="unused"
        ),
        "majority": StrategySpec(
            run_majority, uses_scorer=False, needs_scorer=False, is_stepwise=False
        ),
        "best_of_n": StrategySpec(
            run_best_of_n, uses_scorer=True, needs_scorer=False, is_stepwise=False
        ),
        "beam_search": StrategySpec(
            run_beam_search,
            uses_scorer=True,
            needs_scorer=True,
            is_stepwise=True,
            budget_unit="samples_per_depth",
        ),
        "dvts": StrategySpec(
            run_dvts,
            uses_scorer=True,
            needs_scorer=True,
            is_stepwise=True,
            budget_unit="samples_per_depth",
        ),
        "deepconf": StrategySpec(
            run_deepconf, uses_scorer=False, needs_scorer=False, is_stepwise=False
        ),
        "particle_filtering": StrategySpec(
            run_particle_filtering,
            uses_scorer=True,
            needs_scorer=True,
            is_stepwise=False,
            budget_unit="particles",
        ),
        "auto": StrategySpec(
            run_auto,
            uses_scorer=True,
            needs_scorer=False,
            is_stepwise=False,
            budget_unit="samples_cap",
        ),
    }
)


def check(name: StrategyName, config: SearchConfig, has_scorer: bool) -> None:
    """Raise ``ConfigError`` when ``config`` does not suit method ``name``."""
    spec = STRATEGIES[name]
    if spec.needs_scorer and not has_scorer:
        raise ConfigError(f"{name} needs a step scorer (a PRM or the confidence scorer)", "scorer")
    if spec.is_stepwise and config.budget % config.beam_width != 0:
        raise ConfigError(
            f"{name} needs budget to be a multiple of beam_width "
            f"(got {config.budget} and {config.beam_width})",
            "budget",
        )
    if name == "auto" and config.auto is None:
        raise ConfigError("auto needs its rules (SearchConfig.auto)", "auto")
    sweeps = config.particle_iterations
    if name == "particle_filtering" and sweeps > 1 and config.budget < 2 * sweeps:
        raise ConfigError(
            f"particle Gibbs needs at least 2 particles per sweep: budget {config.budget} is "
            f"less than 2 x particle_iterations ({sweeps})",
            "particle_iterations",
        )
    uses_scores = spec.uses_scorer and has_scorer
    if config.voting in ("prm_max", "prm_vote") and not uses_scores:
        raise ConfigError(
            f"voting {config.voting!r} needs scores, which {name} has none of here", "voting"
        )


async def search(
    name: StrategyName,
    problem: str,
    policy: Policy,
    scorer: StepScorer | None,
    config: SearchConfig,
    *,
    deadline: float | None = None,
    observer: SearchObserver | None = None,
    grouper: AnswerGrouper = group_inline,
) -> SearchResult:
    """Run method ``name`` on one problem.

    Args:
        name: a key of ``STRATEGIES``.
        problem: the question, as the scorer should see it.
        policy: extends partial answers (already bound to the conversation's prompt).
        scorer: scores steps; ignored by methods that do not use one.
        config: budget, beam width, scoring, voting and sampling knobs.
        deadline: ``asyncio`` loop time after which the search stops and returns the best it has.
        observer: told around each upstream call (the proxy's trace spans).
        grouper: groups equivalent final answers (default: on this thread; servers pass one that
            runs off their event loop).

    Raises:
        ConfigError: the config does not suit the method.
        SearchError: a collaborator broke its contract, or nothing was generated in time.
    """
    spec = STRATEGIES[name]
    used_scorer = scorer if spec.uses_scorer else None
    check(name, config, used_scorer is not None)
    run = SearchRun(
        name, problem, policy, used_scorer, config, deadline, observer=observer, grouper=grouper
    )
    return await spec.run(run)
