"""When a vote is settled: the predictive stopping rule ``auto`` and ``deepconf`` share.

Must not import I/O libraries.
"""

from __future__ import annotations

import functools
import math

__all__ = ["draws_to_settle", "keeps_lead"]


@functools.lru_cache(maxsize=4096)  # the same tallies recur across requests with one budget
def keeps_lead(leader: int, runner_up: int, rest: int, remaining: int) -> float:
    """P(the leader still beats the runner-up after ``remaining`` more samples).

    Predictive (Dirichlet-multinomial) over three outcomes — leader, runner-up, anything else —
    with a uniform prior: the probability that the answer the whole budget would give is the one
    the samples so far give. With nothing remaining it is 1 if the leader is ahead; as
    ``remaining`` grows it tends to P(p_leader > p_runner_up).
    """
    if remaining <= 0:
        return 1.0 if leader > runner_up else 0.0
    a, b, c = leader + 1, runner_up + 1, rest + 1
    base = math.lgamma(a + b + c) - math.lgamma(a + b + c + remaining) + math.lgamma(remaining + 1)
    base -= math.lgamma(a) + math.lgamma(b) + math.lgamma(c)
    # log of each outcome's factor for k more draws of it: lgamma(x + k) - lgamma(k + 1)
    to_leader, to_rival, to_rest = (
        [math.lgamma(x + k) - math.lgamma(k + 1) for k in range(remaining + 1)] for x in (a, b, c)
    )
    total = 0.0
    for more_leader in range(remaining + 1):
        head = base + to_leader[more_leader]
        left = remaining - more_leader
        # the runner-up must stay strictly behind: more_rival < leader + more_leader - runner_up
        for more_rival in range(min(left, leader + more_leader - runner_up - 1) + 1):
            total += math.exp(head + to_rival[more_rival] + to_rest[left - more_rival])
    return min(total, 1.0)


def draws_to_settle(
    leader: int, runner_up: int, rest: int, remaining: int, confidence: float, at_least: int = 1
) -> int:
    """The fewest further samples, from ``at_least`` on, that could settle the vote: the smallest
    ``k`` such that, were all ``k`` to agree with the leader, ``keeps_lead`` would reach
    ``confidence``. Drawing fewer cannot stop the loop; it would only add a round trip.
    Never more than ``remaining`` (drawing everything always settles the vote)."""

    def settles(k: int) -> bool:
        return keeps_lead(leader + k, runner_up, rest, remaining - k) >= confidence

    low = min(max(at_least, 1), remaining)
    if low <= 0 or settles(low):
        return max(low, 0)
    high = min(2 * low, remaining)  # gallop, then bisect: keeps_lead rises with k
    while high < remaining and not settles(high):
        low, high = high, min(2 * high, remaining)
    while high - low > 1:  # settles(high), not settles(low)
        mid = (low + high) // 2
        low, high = (low, mid) if settles(mid) else (mid, high)
    return high
