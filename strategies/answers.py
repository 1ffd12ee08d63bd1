"""Final-answer extraction and mathematical equivalence (via the math-verify library).

Must not import I/O libraries. Extraction follows the Qwen2.5-Math evaluator's order: the last
``\\boxed{...}`` (brace matched), then "the answer is ...", then the last number.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache
from typing import Any

from math_verify import parse, verify

from strategies.answer_cost import is_costly

__all__ = [
    "extract_answer",
    "group_by_text",
    "group_equivalent",
    "group_inline",
    "needs_sympy",
    "split_thinking",
]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class _OwnDeadline(logging.Filter):
    """math-verify warns once per process that its timeout is off when it is given none; a
    timeout of 0 here means the caller bounds the work itself (the proxy's answer workers have a
    deadline: math-verify's own timeout is a signal, which works on the main thread only), so
    that warning is noise in every log and in ``tts-eval``'s output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_OwnDeadline())

_ANSWER_IS = re.compile(r"(?:final answer|the answer) is[:\s]*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_TRAILING = " \t\n.:;$"


def split_thinking(text: str) -> tuple[str | None, str]:
    """A reasoning model's ``(thinking, answer)``: the section before ``</think>`` (its opening
    ``<think>`` is optional: a chat template may open it inside the prompt) and what follows it.
    A section never closed is all thinking, with no answer; text without one is all answer."""
    close = text.find(THINK_CLOSE)
    if close >= 0:
        thinking = text[:close].lstrip()
        thinking = thinking.removeprefix(THINK_OPEN)
        return thinking.strip(), text[close + len(THINK_CLOSE) :].lstrip()
    if text.lstrip().startswith(THINK_OPEN):
        return text.lstrip().removeprefix(THINK_OPEN).strip(), ""
    return None, text


def extract_answer(text: str, markers: Sequence[str] = ("\\boxed{",)) -> str:
    """The final answer written in ``text`` (after a reasoning model's thinking: a box inside
    the thinking is not the answer), or ``""`` when there is none."""
    text = split_thinking(text)[1]
    boxed = _last_marked(text, markers)
    if boxed is not None:
        return boxed.strip()
    matches: list[str] = _ANSWER_IS.findall(text)
    if matches:
        tail = _answer_tail(matches[-1])
        if tail:
            return tail
    numbers: list[str] = _NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(",", "").rstrip(".")
    return ""


def _last_marked(text: str, markers: Sequence[str]) -> str | None:
    best_start = -1
    best_marker = ""
    for marker in markers:
        start = text.rfind(marker)
        if start > best_start:
            best_start, best_marker = start, marker
    if best_start < 0:
        return None
    return _balanced(text, best_start + len(best_marker))


def _balanced(text: str, start: int) -> str | None:
    """Content up to the brace that closes the one opened just before ``start``."""
    depth = 1
    for pos in range(start, len(text)):
        char = text[pos]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:pos]
    return None  # unclosed box: not an answer


def _answer_tail(tail: str) -> str:
    """The answer after "the answer is": a ``$...$`` span, else up to the sentence end."""
    tail = tail.strip().split("\n")[0]
    if tail.startswith("$"):
        end = tail.find("$", 1)
        if end > 0:
            return tail[1:end].strip()
    return tail.split(". ")[0].strip(_TRAILING)


def group_equivalent(answers: Sequence[str], timeout_s: int = 2) -> tuple[int, ...]:
    """A group id per answer: equal ids mean mathematically equivalent answers.

    Empty answers each get a group of their own (they never pool votes). Group ids are the index
    of the group's first member, so they are deterministic and order-preserving.
    """
    # math-verify's timeout uses SIGALRM, which only the main thread may set.
    timeout = timeout_s if threading.current_thread() is threading.main_thread() else 0
    groups: list[int] = []
    representatives: list[int] = []
    for index, answer in enumerate(answers):
        key = _normalise(answer)
        group = index
        if key:
            for rep in representatives:
                if _equivalent(key, _normalise(answers[rep]), timeout):
                    group = rep
                    break
            else:
                representatives.append(index)
        groups.append(group)
    return tuple(groups)


async def group_inline(answers: Sequence[str], timeout_s: int) -> tuple[int, ...]:
    """``group_equivalent`` on the caller's thread (an ``AnswerGrouper``; servers run it off their
    event loop instead)."""
    return group_equivalent(answers, timeout_s)


def group_by_text(answers: Sequence[str]) -> tuple[int, ...]:
    """Groups of answers equal as text (whitespace aside): no sympy, nothing to time out."""
    first: dict[str, int] = {}
    return tuple(
        first.setdefault(key, index) if (key := _normalise(answer)) else index
        for index, answer in enumerate(answers)
    )


def needs_sympy(answers: Sequence[str]) -> bool:
    """Whether ``group_equivalent`` would call sympy on these answers: two distinct answers, one
    of them neither a plain number nor too costly to compare (see ``answer_cost``)."""
    distinct = {key for answer in answers if (key := _normalise(answer))}
    symbolic = [k for k in distinct if _number(k) is None and not is_costly(k)]
    return len(distinct) >= 2 and bool(symbolic)


def _normalise(answer: str) -> str:
    return " ".join(answer.split())


def _equivalent(left: str, right: str, timeout_s: int) -> bool:
    if left == right:
        return True
    left_number, right_number = _number(left), _number(right)
    if left_number is not None and right_number is not None:
        return left_number == right_number  # plain numbers: exact, and no sympy needed
    if is_costly(left) or is_costly(right):
        return False  # equal text only: sympy would build numbers too big to compute
    parsed_left, parsed_right = _parsed(left, timeout_s), _parsed(right, timeout_s)
    if not parsed_left or not parsed_right:
        return False
    result = verify(parsed_left, parsed_right, timeout_seconds=timeout_s or None)
    return bool(result)


_PLAIN_NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:/\d+)?$")


def _number(answer: str) -> Fraction | None:
    """``answer`` as an exact number when it is a plain integer, decimal or a/b fraction."""
    text = answer.replace(",", "").replace(" ", "")
    if not _PLAIN_NUMBER.match(text):
        return None
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


@lru_cache(maxsize=4096)
def _parsed(answer: str, timeout_s: int) -> list[Any]:
    wrapped = answer if "$" in answer else f"${answer}$"
    result: list[Any] = parse(wrapped, parsing_timeout=timeout_s or None)
    return result
