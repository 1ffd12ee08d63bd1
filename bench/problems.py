"""Generated two- and three-step arithmetic word problems with known answers (deterministic)."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Problem", "easy_problems", "multi_step_problems"]


@dataclass(frozen=True, slots=True)
class Problem:
    question: str
    answer: int
    steps: int


_NAMES = ["Tom", "Sara", "Ali", "Mei", "Lena", "Omar", "Ivan", "Nia"]
_THINGS = ["apples", "marbles", "stickers", "pencils", "cookies", "cards"]


def multi_step_problems(count: int, seed: int = 7) -> list[Problem]:
    """Two- and three-step problems (buy, share, give away, ...), alternating."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        name, thing = rng.choice(_NAMES), rng.choice(_THINGS)
        boxes, per_box, given = rng.randint(3, 9), rng.randint(12, 48), rng.randint(5, 30)
        if i % 2 == 0:
            q = (
                f"{name} buys {boxes} boxes of {thing} with {per_box} {thing} in each box, "
                f"then gives away {given} {thing}. How many {thing} does {name} have left?"
            )
            out.append(Problem(q, boxes * per_box - given, 2))
        else:
            friends = rng.choice([2, 3, 4, 5])
            total = boxes * per_box + given
            total -= total % friends
            extra = total - boxes * per_box
            q = (
                f"{name} has {boxes} bags of {per_box} {thing} and finds {extra} more. "
                f"{name} shares them equally among {friends} friends. "
                f"How many {thing} does each friend get?"
            )
            out.append(Problem(q, total // friends, 3))
    return out


def easy_problems(count: int, seed: int = 11) -> list[Problem]:
    """One-step sums and differences."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        a, b = rng.randint(2, 60), rng.randint(2, 40)
        if rng.random() < 0.5:
            out.append(Problem(f"What is {a} + {b}?", a + b, 1))
        else:
            out.append(Problem(f"What is {a + b} - {b}?", a, 1))
    return out
