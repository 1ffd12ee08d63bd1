"""Grading: the last ``\\boxed{}`` answer (or "the answer is ...", or the last number) compared to
the reference by mathematical equivalence (math-verify), so ``0.5`` and ``\\frac{1}{2}`` agree and
free text never raises."""

from __future__ import annotations

from strategies import extract_answer, group_equivalent

__all__ = ["equivalent", "grade"]


def equivalent(answer: str, reference: str) -> bool:
    if not answer.strip():
        return False
    groups = group_equivalent([answer, reference])
    return groups[0] == groups[1]


def grade(text: str, reference: str) -> tuple[str, bool]:
    """The final answer in ``text`` and whether it equals ``reference``."""
    answer = extract_answer(text)
    return answer, equivalent(answer, reference)
