"""Waiting for what another thread or process does, in one place: ``eventually`` returns the
condition's first truthy value, or fails the test saying what never happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["eventually"]

_T = TypeVar("_T")


def eventually(condition: Callable[[], _T], what: str, timeout_s: float = 10.0) -> _T:
    """Poll ``condition`` (quickly at first, then every 50 ms) until it is truthy."""
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
