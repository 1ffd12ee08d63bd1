"""Install steps of the CPU stack: the shipped policy lock, commands run quietly (their output shown
only on failure) or with progress (pip's package lines counted, a heartbeat while it unpacks).
"""

from __future__ import annotations

import contextlib
import queue
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import IO

__all__ = [
    "LockFile",
    "StackError",
    "locked_requirements",
    "pins",
    "run_logged",
    "run_quiet",
    "step",
]

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)
_SEPARATORS = re.compile(r"[-_.]+")
_COLLECTING = re.compile(r"^Collecting (\S+)")
HEARTBEAT_S = 15.0


class StackError(RuntimeError):
    """A setup step failed; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class LockFile:
    """``policy.lock`` as shipped in this package."""

    resource: Traversable
    text: str
    pins: dict[str, str]

    @contextlib.contextmanager
    def as_file(self) -> Iterator[Path]:
        with resources.as_file(self.resource) as path:
            yield path


def locked_requirements() -> LockFile:
    resource = resources.files("cpu_stack") / "policy.lock"
    text = resource.read_text()
    return LockFile(resource, text, pins(text))


def pins(lock_text: str) -> dict[str, str]:
    """``{normalised name: version}`` of every ``name==version`` line of a lock (PEP 503 names)."""
    return {_SEPARATORS.sub("-", m[1]).lower(): m[2] for m in _PIN.finditer(lock_text)}


def step(message: str) -> None:
    print(f"[tts-proxy] {message}", flush=True)  # progress for a person at a terminal


def run_quiet(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise StackError(f"could not {what} (exit {result.returncode}):\n{tail}")


def run_logged(command: list[str], what: str, total: int) -> None:
    """Run ``command``, printing ``(k/total) <package>`` per pip "Collecting" line and a
    heartbeat when it is silent for ``HEARTBEAT_S`` (unpacking torch takes a while)."""
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=20)
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        assert process.stdout is not None
        _follow(process.stdout, total, started, tail)
    if process.returncode != 0:
        raise StackError(f"could not {what} (exit {process.returncode}):\n" + "\n".join(tail))
    step(f"  done in {time.monotonic() - started:.0f} s")


def _follow(stream: IO[str], total: int, started: float, tail: deque[str]) -> None:
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    reader = threading.Thread(target=_pump, args=(stream, lines), daemon=True)
    reader.start()
    seen = 0
    while True:
        try:
            line = lines.get(timeout=HEARTBEAT_S)
        except queue.Empty:
            step(f"  ... still working ({time.monotonic() - started:.0f} s)")
            continue
        if not line:
            break
        tail.append(line.rstrip())
        if match := _COLLECTING.match(line):
            seen += 1
            step(f"  ({seen}/{total}) {match[1]}")
        elif line.startswith(("Installing collected", "Successfully installed")):
            step(f"  {line.strip()[:100]}")
    reader.join()


def _pump(stream: IO[str], lines: queue.SimpleQueue[str]) -> None:
    for line in stream:
        lines.put(line)
    lines.put("")  # end of output
