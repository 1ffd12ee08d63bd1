"""Server processes on 127.0.0.1: a free port, start in its own process group, wait until a probe
answers (failing fast when the process dies), stop the whole group. The one home of these helpers
for the demo, the tests and the benchmarks. Imports nothing of the project.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

__all__ = ["ServerStartError", "check_port_free", "free_port", "server_process", "stop_group"]


class ServerStartError(RuntimeError):
    """A server process exited or did not answer its probe in time; the message has its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def check_port_free(port: int) -> None:
    """Raise ``ServerStartError`` naming the port when something already holds it."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise ServerStartError(
                f"port {port} on 127.0.0.1 is busy ({exc.strerror}); pick another"
            ) from exc


@contextlib.contextmanager
def server_process(
    command: list[str],
    probe_url: str,
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    timeout_s: float = 60.0,
    name: str = "server",
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` in its own process group until the block ends.

    Yields once ``probe_url`` answers 200. Raises ``ServerStartError`` (with the log's tail when
    ``log_path`` is given) if the process exits first or the probe fails for ``timeout_s``.
    """
    log = log_path.open("wb") if log_path else None
    try:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT if log else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if log:
            log.close()
    try:
        _wait_ready(process, probe_url, timeout_s, name, log_path)
        yield process
    finally:
        stop_group(process)


def _wait_ready(
    process: subprocess.Popen[bytes], url: str, timeout_s: float, name: str, log: Path | None
) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise ServerStartError(f"{name} exited with code {process.returncode}:\n{_tail(log)}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise ServerStartError(f"{name} did not answer {url} within {timeout_s:.0f} s:\n{_tail(log)}")


def _tail(log: Path | None, lines: int = 30) -> str:
    if log is None:
        return "(output not captured)"
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_group(process: subprocess.Popen[bytes], grace_s: float = 20.0) -> None:
    """SIGTERM the process's group, SIGKILL it after ``grace_s``; reap the leader."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
