"""``particle_filtering``: sequential Monte Carlo over reasoning steps.

N particles (N = ``budget``) start empty. Each round extends every unfinished particle by one step
(one policy call for all of them, one sample each) and scores the new steps (one scorer call).
Each particle's weight is the softmax over particles of ``logit(last step score) / T``
(``particle_temperature``); the set is then resampled with replacement to N particles. Finished
particles stay in the set (they are not extended again) and keep competing on their weight, so a
good finished answer can fill the set. Rounds end when every particle is finished, at
``max_steps``, or when the deadline or a cap stops the search; the answer is the configured vote
over the final set, duplicates counted, i.e. over the weighted particles.

Resampling is **systematic** (one uniform draw, N evenly spaced pointers): each particle is kept
⌊N·w⌋ or ⌈N·w⌉ times, so at the small N a request can afford (4–16) a strong particle is not lost
and a weak one not copied by the luck of N independent draws, as multinomial resampling (its_hub's
choice) allows — the same expected counts with lower variance, at the same O(N) cost.

**Particle Gibbs** (``particle_iterations`` > 1; Puri et al. §3.2, after Andrieu, Doucet and
Holenstein 2010): the budget is split into that many sweeps of ``budget // iterations``
particles. After a sweep one particle, drawn in proportion to its final weight, becomes the
*reference* of the next sweep: it holds slot 0 and replays its own steps and scores (no policy
or scorer call for it), and at each round it is weighed by its score at that round, as every
other particle is, so an older, longer path gets no edge. Resampling draws the other slots from
all N, the reference included; a copy of the reference is its path up to that round, which then
samples on freely. The answer is the vote over the last sweep's set.

The resampling RNG is seeded from ``SearchConfig.seed``: the same seed and the same samples give
the same search. Sources: Puri et al. 2025 ("A Probabilistic Inference Approach to Inference-Time
Scaling of LLMs using Particle-Based Monte Carlo Methods") and its_hub's implementation.
Must not import I/O libraries.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence

from strategies.beam_search import expand
from strategies.engine import SearchRun
from strategies.results import Candidate, SearchResult

__all__ = ["particle_weights", "run_particle_filtering", "systematic_resample"]

Trajectory = list[Candidate]  # a particle's candidate after each round
_EPS = 1e-6  # scores are clipped to [eps, 1 - eps] before the logit


def particle_weights(scores: Sequence[float], temperature: float) -> list[float]:
    """Normalised weights: softmax of ``logit(score) / temperature`` (scores in [0, 1])."""
    logits = []
    for score in scores:
        s = min(max(score, _EPS), 1.0 - _EPS)
        logits.append((math.log(s) - math.log1p(-s)) / temperature)
    top = max(logits)
    raw = [math.exp(v - top) for v in logits]
    total = sum(raw)
    return [v / total for v in raw]


def systematic_resample(
    weights: Sequence[float], rng: random.Random, count: int | None = None
) -> list[int]:
    """Indices of the ``count`` (default ``len(weights)``) particles drawn: pointers
    ``(u + k) / count``, one ``u``."""
    n = len(weights) if count is None else count
    cumulative = list(itertools.accumulate(weights))
    cumulative[-1] = 1.0  # rounding must not leave the last pointer without a particle
    start = rng.random()
    drawn, index = [], 0
    for k in range(n):
        pointer = (start + k) / n
        while cumulative[index] < pointer:
            index += 1
        drawn.append(index)
    return drawn


async def run_particle_filtering(run: SearchRun) -> SearchResult:
    """Run the filter (one sweep) or particle Gibbs (several); each round is one policy call and
    one scorer call."""
    cfg = run.config
    sweeps = cfg.particle_iterations  # check() saw to at least 2 particles per sweep
    rng = random.Random(cfg.seed)
    n = cfg.budget // sweeps
    reference: Trajectory | None = None
    for sweep in range(sweeps):
        paths = await _sweep(run, n, reference, rng)
        finals = [path[-1] for path in paths]
        if sweep == sweeps - 1 or run.is_stopped:
            break
        weights = particle_weights([p.last_score for p in finals], cfg.particle_temperature)
        (chosen,) = rng.choices(range(n), weights=weights)
        reference = _to_first_finish(paths[chosen])
    finished = [p for p in finals if p.is_finished]
    run.mark([p.node_id for p in finished], "finished")
    # Stopped early or out of steps with nothing finished: the particles with steps answer.
    return await run.finish(finished or [p for p in finals if p.steps])


async def _sweep(
    run: SearchRun, n: int, reference: Trajectory | None, rng: random.Random
) -> list[Trajectory]:
    """One sequential Monte Carlo sweep of ``n`` particles, conditioned on ``reference`` (slot 0)
    when given; the particles' paths."""
    cfg = run.config
    sampling = run.sampling(is_step=True)
    paths: list[Trajectory] = [[Candidate()] for _ in range(n)]
    free = range(1, n) if reference else range(n)
    for t in range(cfg.max_steps):
        live = [i for i in free if not paths[i][-1].is_finished]
        replaying = reference is not None and t < len(reference)
        if not live and not replaying:
            break
        children: list[Candidate] = []
        if live:
            batch = await run.generate([paths[i][-1].text for i in live], 1, sampling)
            scored = (
                None
                if batch is None
                else await run.score(expand(run, [paths[i][-1] for i in live], batch))
            )
            if scored is None:
                break
            children = list(scored)
        grown = dict(zip(live, children, strict=True))
        paths = [[*path, grown.get(i, path[-1])] for i, path in enumerate(paths)]
        if reference is not None:
            paths[0] = [Candidate(), *reference[: t + 1]]
            paths[0] += [paths[0][-1]] * (t + 2 - len(paths[0]))  # finished: it stays as it is
        finals = [path[-1] for path in paths]
        weights = particle_weights([p.last_score for p in finals], cfg.particle_temperature)
        if reference is None:
            paths = [paths[i] for i in systematic_resample(weights, rng)]  # shared: never mutated
        else:  # conditional: the reference keeps slot 0, the others are drawn from all n
            drawn = systematic_resample(weights, rng, n - 1)
            paths = [paths[0], *(paths[i] for i in drawn)]
        run.mark([path[-1].node_id for path in paths], "kept")
    return paths


def _to_first_finish(path: Trajectory) -> Trajectory:
    """The path's rounds up to its finish (a finished particle repeats itself after it), without
    the empty start."""
    rounds = path[1:]
    end = next((k for k, c in enumerate(rounds) if c.is_finished), len(rounds) - 1)
    return rounds[: end + 1]
