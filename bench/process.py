"""Run a server command in its own process for a benchmark: wait until it answers, then stop it."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator

import httpx

__all__ = ["server_process"]


@contextlib.contextmanager
def server_process(command: list[str], probe: str, timeout_s: float = 60.0) -> Iterator[None]:
    """Start ``command``; yield once ``probe`` answers 200 (or the timeout passes); terminate."""
    process = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(probe, timeout=2).status_code == 200:
                    break
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=30)
