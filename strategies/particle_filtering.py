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


def systematic_resample(weights: Sequence[float], rng: random.Random) -> list[int]:
    """Indices of the ``len(weights)`` particles drawn: pointers ``(u + k) / N``, one ``u``."""
    n = len(weights)
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
    """Run the filter; each round is one policy call and one scorer call."""
    cfg = run.config
    rng = random.Random(cfg.seed)
    sampling = run.sampling(is_step=True)
    particles: list[Candidate] = [Candidate() for _ in range(cfg.budget)]
    for _ in range(cfg.max_steps):
        live = [i for i, p in enumerate(particles) if not p.is_finished]
        if not live:
            break
        batch = await run.generate([particles[i].text for i in live], 1, sampling)
        if batch is None:
            break
        children = await run.score(expand(run, [particles[i] for i in live], batch))
        if children is None:
            break
        for i, child in zip(live, children, strict=True):
            particles[i] = child
        weights = particle_weights([p.last_score for p in particles], cfg.particle_temperature)
        particles = [particles[i] for i in systematic_resample(weights, rng)]
        run.mark([p.node_id for p in particles], "kept")
    finished = [p for p in particles if p.is_finished]
    run.mark([p.node_id for p in finished], "finished")
    # Stopped early or out of steps with nothing finished: the particles with steps answer.
    return run.finish(finished or [p for p in particles if p.steps])
