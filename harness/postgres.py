"""A real, throwaway PostgreSQL server for the tests: ``initdb`` into a temporary folder and
``pg_ctl start`` on a free loopback port (Debian's ``postgresql`` package; ``.ci/run`` installs
it). PostgreSQL refuses to run as root, so under root every command runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cpu_stack.process import free_port

__all__ = ["PostgresUnavailable", "postgres_bindir", "postgres_server"]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def postgres_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable(
        "PostgreSQL is not installed (apt-get install postgresql; .ci/run does this)"
    )


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Yields ``postgresql://tts@127.0.0.1:PORT/tts`` of a fresh server, stopped afterwards."""
    bindir = postgres_bindir()
    root = Path(tempfile.mkdtemp(prefix="tts-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()
    run = subprocess.run
    try:
        run(
            _as_server_user(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "tts",
                    "-A",
                    "trust",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
        run(
            _as_server_user(
                [
                    str(bindir / "pg_ctl"),
                    "-D",
                    str(data),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(root / "server.log"),
                    "start",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )
        run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "tts", "tts"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield f"postgresql://tts@127.0.0.1:{port}/tts"
    finally:
        if (data / "postmaster.pid").exists():
            run(
                _as_server_user(
                    [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
                ),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
