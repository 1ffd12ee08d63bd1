"""A static cost gate in front of sympy: answers whose numbers would be too big to compute.

A model's final answer is untrusted text. Parsed by math-verify, ``2^{2^{235423523}}`` makes sympy
build the integer, and no timeout interrupts one C-level big-integer operation: the process grows
until it is killed (sympy#6835, Math-Verify#63). math-verify's own timeout needs SIGALRM, which
exists only in the main thread. So before an answer reaches sympy its LaTeX is read for the size
of what it spells, on a log scale, without computing anything: an exponent above
``MAX_EXPONENT``, a number of more than ``MAX_DIGITS`` digits, a factorial or binomial of a number
above ``MAX_EXPONENT`` make it *costly*, as does a length over ``MAX_LENGTH`` or brackets nested
too deep to read, and a costly answer is compared as text only.

The estimate is an upper bound read left to right: a literal is its digits, ``b^{e}`` (or
``b**e``) is ``log10(b) * e`` with ``b`` the literal or group just before it (10 for a symbol),
``n!`` is ``n * log10(n)``. Towers (``10^{10^{10}}``) are costly because their exponent is.
Must not import I/O libraries.
"""

from __future__ import annotations

import math
import re

__all__ = ["MAX_DIGITS", "MAX_EXPONENT", "MAX_LENGTH", "is_costly"]

MAX_EXPONENT = 10_000  # the largest exponent / factorial argument given to sympy
MAX_DIGITS = 100_000  # the largest number (in digits) an answer may spell
MAX_LENGTH = 2_000  # longer answers are compared as text (reading them is quadratic at worst)
_LOG_MAX_EXPONENT = math.log10(MAX_EXPONENT)
_SYMBOL = 1.0  # log10 of what a symbol stands for as a base (x, \pi, e: "about 10")
_BINOMIAL = re.compile(r"\\[dt]?binom|\\choose")
_COMMAND = re.compile(r"\\[A-Za-z]+")
_CLOSE = {"{": "}", "(": ")", "[": "]"}


class _Costly(Exception):
    """Raised inside the scan as soon as one part is too big."""


def is_costly(answer: str) -> bool:
    """Whether comparing ``answer`` symbolically could build numbers too big to compute."""
    if len(answer) > MAX_LENGTH:
        return True
    text = answer.replace("**", "^").replace("\\left", "").replace("\\right", "")
    try:
        peak = _log_bound(text)
        if _BINOMIAL.search(text) and peak > _LOG_MAX_EXPONENT:
            return True
    except (_Costly, RecursionError):
        return True
    return False


def _log_bound(text: str) -> float:
    """log10 of an upper bound on the largest number ``text`` spells; ``_Costly`` past the
    limits."""
    peak = 0.0
    base: float | None = None  # log10 of what a ``^`` or ``!`` here applies to
    i = 0
    while i < len(text):
        base, i = _read(text, i, base)
        if base is not None:
            if base > MAX_DIGITS:
                raise _Costly
            peak = max(peak, base)
    return peak


def _read(text: str, i: int, base: float | None) -> tuple[float | None, int]:
    """The token at ``i``: the log10 bound of what it leaves to raise to a power, and where the
    next token starts."""
    char = text[i]
    if char.isdigit():
        literal, end = _digits(text, i)
        digits = literal.lstrip("0")
        return (math.log10(int(digits[:15])) + max(0, len(digits) - 15) if digits else 0.0), end
    if char in _CLOSE:
        group, end = _group(text, i)
        return _log_bound(group), end
    if char == "^":
        exponent, end = _operand(text, i + 1)
        log_exponent = _log_bound(exponent)
        if log_exponent > _LOG_MAX_EXPONENT:
            raise _Costly
        return max(base if base is not None else _SYMBOL, 0.0) * 10**log_exponent, end
    if char == "!":
        if base is not None and base > _LOG_MAX_EXPONENT:
            raise _Costly
        return (10**base * base if base is not None else None), i + 1  # log10(n!) <= n log10 n
    if char == "\\" or char.isalpha():
        command = _COMMAND.match(text, i)
        return _SYMBOL, command.end() if command else i + (2 if char == "\\" else 1)
    return (base if char.isspace() else None), i + 1  # an operator: nothing to raise


def _digits(text: str, start: int) -> tuple[str, int]:
    end = start
    while end < len(text) and text[end].isdigit():
        end += 1
    return text[start:end], end


def _group(text: str, start: int) -> tuple[str, int]:
    """The inside of the bracket opened at ``start`` and the index after its close (the rest of
    the text when it never closes)."""
    opener, closer = text[start], _CLOSE[text[start]]
    depth = 0
    for pos in range(start, len(text)):
        if text[pos] == opener:
            depth += 1
        elif text[pos] == closer:
            depth -= 1
            if depth == 0:
                return text[start + 1 : pos], pos + 1
    return text[start + 1 :], len(text)


def _operand(text: str, start: int) -> tuple[str, int]:
    """What a ``^`` at ``start - 1`` raises to: a bracketed group, a run of digits, a command or
    one character."""
    while start < len(text) and text[start].isspace():
        start += 1
    if start >= len(text):
        return "", start
    if text[start] in _CLOSE:
        return _group(text, start)
    if text[start].isdigit():
        return _digits(text, start)
    command = _COMMAND.match(text, start)
    if command:
        return command.group(), command.end()
    return text[start], start + 1
