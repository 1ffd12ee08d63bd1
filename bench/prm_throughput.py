"""PRM server throughput (prints a table; not a test).

16 concurrent clients each run a beam-search-shaped workload against a tiny random ``qwen_prm``
on CPU: at every depth a client sends 4 candidates that share its accepted steps and differ in the
last one, like the proxy's beam search. Compared: the server as configured (dynamic batching +
step-score cache) against one-at-a-time scoring (no batching window, one sequence per forward, no
cache) — the reference implementations' behaviour. Target: >= 5x steps/s.

Run: ``.venv/bin/python -m bench.prm_throughput``
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx

from bench.prm_workload import CLIENTS, DEPTH, PROBLEM, WIDTH, step
from cpu_stack.process import server_process
from harness.prm_models import build_checkpoint
from harness.servers import free_port


async def _client(http: httpx.AsyncClient, client: int) -> int:
    """One beam search: 4 candidates per depth, sharing the steps accepted so far."""
    accepted: list[str] = []
    steps = 0
    for depth in range(DEPTH):
        candidates = [[*accepted, step(client, depth, b)] for b in range(WIDTH)]
        body = {"problem": PROBLEM.format(client=client), "candidates": candidates}
        response = await http.post("/v1/score", json=body)
        response.raise_for_status()
        steps += WIDTH  # new steps scored this depth
        accepted.append(candidates[0][-1])
    return steps


Client = Callable[[httpx.AsyncClient, int], Awaitable[int]]  # one client's run: steps scored


async def run_clients(
    url: str, clients: int = CLIENTS, first: int = 0, client: Client = _client
) -> float:
    """New steps scored per second by ``clients`` concurrent ``client`` runs (problems
    ``first``, ``first + 1``, ...)."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(client(http, first + c)) for c in range(clients)]
        elapsed = time.perf_counter() - started
    return sum(t.result() for t in tasks) / elapsed


@contextlib.contextmanager
def prm_server_process(path: Path, flags: list[str]) -> Iterator[str]:
    """``tts-prm serve`` in its own process (the clients must not share its interpreter)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "prm_server",
        "serve",
        "--model",
        str(path),
        "--family",
        "qwen_prm",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *flags,
    ]
    url = f"http://127.0.0.1:{port}"
    with server_process(command, url + "/health"):
        yield url


def model_seconds(url: str) -> float:
    """The server's model time so far (``prm_compute_seconds_total``)."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("prm_compute_seconds_total"):
            return float(line.split()[-1])
    return 0.0


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = build_checkpoint(
            "qwen_prm", Path(tmp) / "qwen_prm", hidden=256, layers=4, context=4096
        )

        configs = {
            "one at a time, no cache": [
                "--max-wait-ms",
                "0",
                "--max-batch-tokens",
                "1",
                "--cache-entries",
                "0",
                "--kv-cache-tokens",
                "0",
            ],
            "batched, no caches": [
                "--max-wait-ms",
                "30",
                "--cache-entries",
                "0",
                "--kv-cache-tokens",
                "0",
            ],
            "batched + cached + KV": ["--max-wait-ms", "30"],
        }
        rows = []
        for label, flags in configs.items():
            with prm_server_process(path, flags) as url:
                asyncio.run(run_clients(url, clients=2, first=1000))  # warm-up, other problems
                before = model_seconds(url)
                rate = asyncio.run(run_clients(url))
                rows.append((label, rate, model_seconds(url) - before))
    base, base_model = rows[0][1], rows[0][2]
    print(f"{'configuration':<26}{'new steps/s':>12}{'speed-up':>10}{'model s':>9}{'model x':>9}")
    print("-" * 66)
    for label, rate, model_s in rows:
        print(
            f"{label:<26}{rate:>12.1f}{rate / base:>9.1f}x{model_s:>9.2f}"
            f"{base_model / model_s:>8.1f}x"
        )
    print(f"({CLIENTS} clients, depth {DEPTH}, {WIDTH} candidates per request; target >= 5x)")


if __name__ == "__main__":
    main()
