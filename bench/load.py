"""Load benchmark (prints a table; not a test): 100 concurrent clients for a fixed duration,
mixed strategies at N = 16 (best_of_n, majority, beam_search, dvts, and pass-through), against a
fake vLLM whose answers take ``UPSTREAM_S`` per call. The proxy runs as its own process
(``python -m proxy serve``), so its CPU time and RSS are read from ``/proc`` alone.

Per run: answered requests/s, p50/p99 latency of answers, proxy CPU per answer, RSS after the run
and peak RSS, errors by type (429s among them; clients wait ``Retry-After`` as the SDKs do). The
fake upstream and the clients share this process, so on a small machine they, not the proxy,
bound the throughput. Three runs on the same process: RSS after the third should
equal RSS after the first (nothing grows per request).

Run: ``.venv/bin/python -m bench.load [--clients 100] [--seconds 20] [--runs 3]``
(not yet compared with optillm / its_hub rows).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cpu_stack.process import server_process
from harness.fake_servers import FakeVllm
from harness.servers import free_port, serve

UPSTREAM_S = 0.05
STRATEGIES = ("best_of_n", "majority", "beam_search", "dvts", "none")
MESSAGES = [{"role": "user", "content": "What is 2 + 2? Think step by step."}]


def _proc(pid: int) -> tuple[float, int, int]:
    """CPU seconds (user + system), RSS and peak RSS in bytes of process ``pid``."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu_s = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        status = dict(line.split(":", 1) for line in f if ":" in line)

    def size(key: str) -> int:
        return int(status[key].split()[0]) * 1024  # /proc reports kB

    return cpu_s, size("VmRSS"), size("VmHWM")


async def _client(url: str, until: float, index: int, results: list[tuple[float, str]]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        turn = index
        while time.monotonic() < until:
            strategy = STRATEGIES[turn % len(STRATEGIES)]
            turn += 1
            started = time.monotonic()
            try:
                response = await client.post(
                    "/v1/chat/completions",
                    json={"model": "fake-policy", "messages": MESSAGES},
                    headers={"X-TTS-Strategy": strategy, "X-TTS-Budget": "16"},
                )
                outcome = "ok" if response.status_code == 200 else str(response.status_code)
                if response.status_code != 200:
                    outcome += ":" + str(response.json().get("error", {}).get("code"))
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
                response = None
            results.append((time.monotonic() - started, outcome))
            if response is not None and response.status_code == 429:  # as the SDKs do
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


async def _run(url: str, clients: int, seconds: float) -> list[tuple[float, str]]:
    results: list[tuple[float, str]] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, until, i, results) for i in range(clients)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.load", description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    vllm = FakeVllm(delay_s=UPSTREAM_S)
    with serve(vllm.app()) as upstream:
        port = free_port()
        config = Path(tempfile.mkdtemp()) / "load.toml"
        config.write_text("max_concurrent_searches = 64\ndefault_max_steps = 4\n")
        command = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--policy-url",
                   upstream + "/v1", "--policy-model", "fake-policy", "--config", str(config),
                   "--log-level", "warning"]  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        with server_process(command, url + "/health/live") as process:
            print(f"{args.clients} clients x {args.seconds:g} s, N = 16, upstream {UPSTREAM_S}s")
            print("| run | answered/s | p50 s | p99 s | proxy CPU ms/answer | RSS MiB | peak MiB | "
                  "errors (429s honour Retry-After) |")  # fmt: skip
            print("|---|---|---|---|---|---|---|---|")
            for run in range(1, args.runs + 1):
                cpu_before, _, _ = _proc(process.pid)
                results = asyncio.run(_run(url, args.clients, args.seconds))
                cpu_after, rss, peak = _proc(process.pid)
                latencies = sorted(s for s, outcome in results if outcome == "ok")
                errors = collections.Counter(o for _, o in results if o != "ok")
                p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
                print(f"| {run} | {len(latencies) / args.seconds:.1f} | "
                      f"{statistics.median(latencies) if latencies else float('nan'):.3f} | "
                      f"{p99:.3f} | {1000 * (cpu_after - cpu_before) / max(len(latencies), 1):.1f}"
                      f" | {rss / 2**20:.0f} | {peak / 2**20:.0f} | "
                      f"{dict(errors) or '-'} |")  # fmt: skip


if __name__ == "__main__":
    main()
