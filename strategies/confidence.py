"""A step scorer that needs no PRM: the policy's own confidence from its token log-probabilities.

A step's score is the geometric-mean token probability over its least confident window of tokens
(``exp`` of the lowest sliding-window mean log-probability), in the spirit of DeepConf's
lowest-group confidence (Fu et al. 2025). Cheap and real, but weaker than a PRM.
Must not import I/O libraries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from strategies.errors import SearchError
from strategies.types import ScoreBatch, ScoreRequest

__all__ = ["ConfidenceScorer", "step_confidence"]


def step_confidence(token_logprobs: Sequence[float], window: int) -> float:
    """exp(lowest mean log-prob over ``window`` consecutive tokens), in [0, 1]."""
    if not token_logprobs:
        raise SearchError("confidence scoring needs token log-probabilities from the policy")
    size = max(1, min(window, len(token_logprobs)))
    running = math.fsum(token_logprobs[:size])
    lowest = running
    for i in range(size, len(token_logprobs)):
        running += token_logprobs[i] - token_logprobs[i - size]
        lowest = min(lowest, running)
    return min(1.0, max(0.0, math.exp(lowest / size)))


class ConfidenceScorer:
    """Scores each step from the log-probabilities the policy already returned."""

    DEFAULT_WINDOW = 16  # tokens per group of the sliding window

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 1:
            raise ValueError("window must be >= 1")
        self._window = window

    @property
    def name(self) -> str:
        """The scorer's name in reports: ``confidence``."""
        return "confidence"

    @property
    def needs_logprobs(self) -> bool:
        """True: the policy must return each token's log-probability."""
        return True

    @property
    def is_remote(self) -> bool:
        """False: read from the policy's own log-probabilities, no call."""
        return False

    async def score(self, problem: str, requests: Sequence[ScoreRequest]) -> ScoreBatch:
        """Each new step's score: the lowest windowed mean token probability in it (0..1)."""
        scores = tuple(
            tuple(step_confidence(s.token_logprobs, self._window) for s in r.steps[r.first_new :])
            for r in requests
        )
        return ScoreBatch(scores=scores, scored_tokens=0)
