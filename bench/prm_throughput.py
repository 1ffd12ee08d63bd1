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
import tempfile
import time
from pathlib import Path

import httpx

from prm_server.app import create_app
from prm_server.scorer import load_hf_scorer
from prm_server.settings import PrmServerSettings
from tests.fake_servers import serve
from tests.prm_models import build_checkpoint

CLIENTS = 16
DEPTH = 6
WIDTH = 4


def _step(client: int, depth: int, branch: int) -> str:
    return f"Step {depth}: client {client} tries {branch} + {depth} = {branch + depth}."


async def _client(http: httpx.AsyncClient, client: int) -> int:
    accepted: list[str] = []
    steps = 0
    for depth in range(DEPTH):
        candidates = [[*accepted, _step(client, depth, b)] for b in range(WIDTH)]
        body = {"problem": f"Problem {client}: what is the sum?", "candidates": candidates}
        response = await http.post("/v1/score", json=body)
        response.raise_for_status()
        steps += WIDTH  # new steps scored this depth
        accepted.append(candidates[0][-1])
    return steps


async def _run(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_client(http, c)) for c in range(CLIENTS)]
        elapsed = time.perf_counter() - started
    return sum(t.result() for t in tasks) / elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = build_checkpoint("qwen_prm", Path(tmp) / "qwen_prm")
        scorer = load_hf_scorer(path, "qwen_prm", name="tiny", device="cpu", dtype="float32")
        configs = {
            "one at a time, no cache": PrmServerSettings(
                max_wait_ms=0, max_batch_tokens=1, cache_entries=0
            ),
            "batched + cached": PrmServerSettings(max_wait_ms=10, max_batch_tokens=16384),
        }
        rows = []
        for label, settings in configs.items():
            with serve(create_app(settings, scorer=scorer)) as url:
                rows.append((label, asyncio.run(_run(url))))
    base = rows[0][1]
    print(f"{'configuration':<26}{'new steps/s':>12}{'speed-up':>10}")
    print("-" * 48)
    for label, rate in rows:
        print(f"{label:<26}{rate:>12.1f}{rate / base:>9.1f}x")
    print(f"({CLIENTS} clients, depth {DEPTH}, {WIDTH} candidates per request; target >= 5x)")


if __name__ == "__main__":
    main()
