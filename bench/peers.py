"""optillm and its_hub's HTTP servers for side-by-side benchmark rows (``bench.load``,
``bench.overhead``). Each is installed once into its own throw-away venv under the cache, from
the pinned closure in ``bench/peer_requirements/`` with ``--no-deps`` (nothing is resolved): only
what its HTTP server imports. A full optillm install pulls torch, spacy, gradio and more
(~7.6 GB); its server needs 50 packages (~350 MB). its_hub[iaas] is ~170 MB.

What each is asked, the nearest thing it offers to our N = 16 vote:
- its_hub 1.2.0 IaaS: self-consistency, ``budget`` 16 (its HTTP service has nothing else);
- optillm 0.4.0: the ``majority_voting`` plugin with ``k`` 16 (one upstream call with ``n``).
For pass-through rows: optillm's ``none`` approach, its_hub at ``budget`` 1.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cpu_stack.process import server_process
from cpu_stack.stack import default_cache_dir
from harness.servers import free_port

__all__ = ["PEERS", "Peer", "peer_server"]

_REQUIREMENTS = Path(__file__).with_name("peer_requirements")


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    search_model: str  # the model name that asks for its N = 16 vote
    search_body: dict[str, Any]  # body fields that ask for it
    search_label: str
    passthrough_model: str
    passthrough_body: dict[str, Any]


PEERS = {
    "optillm": Peer(
        "optillm",
        "0.4.0",
        "majority_voting-fake-policy",
        {"k": 16},
        "majority_voting, k 16",
        "none-fake-policy",
        {},
    ),
    "its_hub": Peer(
        "its_hub",
        "1.2.0",
        "fake-policy",
        {"budget": 16},
        "self-consistency, budget 16",
        "fake-policy",
        {"budget": 1},
    ),
}


def _venv(peer: Peer, cache: Path) -> Path:
    """The peer's venv, created on first use from its pinned closure."""
    venv = cache / "bench-peers" / f"{peer.name}-{peer.version}"
    stamp = venv / ".installed"
    requirements = _REQUIREMENTS / f"{peer.name}.txt"
    if stamp.exists() and stamp.read_text() == requirements.read_text():
        return venv
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "-r",
            str(requirements),
        ],
        check=True,
    )
    stamp.write_text(requirements.read_text())
    return venv


@contextlib.contextmanager
def peer_server(
    name: str, upstream_v1: str, cache: Path | None = None
) -> Iterator[tuple[str, int]]:
    """Run peer ``name`` in its own process against ``upstream_v1``; yields its base URL and
    process id."""
    peer = PEERS[name]
    venv = _venv(peer, cache or default_cache_dir())
    log = venv.parent / f"{name}.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, OPENAI_API_KEY="sk-bench", PYTHONUNBUFFERED="1")  # noqa: TID251
    if name == "optillm":
        command = [
            str(venv / "bin" / "optillm"),
            "--base-url",
            upstream_v1,
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--log",
            "error",
        ]
        probe = url + "/health"
    else:
        command = [
            str(venv / "bin" / "its-iaas"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
        probe = url + "/docs"
    with server_process(command, probe, env=env, name=name, log_path=log) as process:
        if name == "its_hub":
            configured = httpx.post(
                url + "/configure",
                timeout=30,
                json={
                    "endpoint": upstream_v1,
                    "api_key": "sk-bench",
                    "model": "fake-policy",
                    "alg": "self-consistency",
                    "budget": 16,
                    "regex_patterns": [r"(\w+)\W*$"],  # the vote: on the answer's last word
                },
            )
            configured.raise_for_status()
        yield url, process.pid
