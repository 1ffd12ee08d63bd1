"""Load benchmark (prints a table; not a test): 100 concurrent clients for a fixed duration,
mixed strategies at N = 16 (best_of_n, majority, beam_search, dvts, and pass-through), against a
fake vLLM whose answers take ``UPSTREAM_S`` per call. The proxy runs as its own process
(``python -m proxy serve``), so its CPU time and RSS are read from ``/proc`` alone.

Per run: answered requests/s, p50/p99 latency of answers, proxy CPU per answer, RSS after the run
and peak RSS, errors by type (429s among them; clients wait ``Retry-After`` as the SDKs do). The
fake upstream and the clients share this process, so on a small machine they, not the proxy,
bound the throughput. Three runs on the same process: RSS after the third should
equal RSS after the first (nothing grows per request).

Then the same clients ask for the one thing all three servers offer, a vote over N = 16
samples: the proxy (``majority``), its_hub's IaaS (self-consistency, ``budget`` 16) and optillm
(``majority_voting``, ``k`` 16), each its own process against the same fake upstream (peers
installed by ``bench.peers`` into throw-away venvs; ``--no-peers`` skips them).

Run: ``.venv/bin/python -m bench.load [--clients 100] [--seconds 20] [--runs 3] [--no-peers]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.peers import PEERS, peer_server
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


@dataclass(frozen=True)
class Workload:
    """What the clients send: the model, body extras and headers of each turn."""

    model: str
    body: dict[str, Any]
    strategies: tuple[str, ...] | None  # X-TTS-Strategy per turn, in rotation (proxy only)

    def request(self, turn: int) -> tuple[dict[str, Any], dict[str, str]]:
        body = {"model": self.model, "messages": MESSAGES} | self.body
        if self.strategies is None:
            return body, {}
        strategy = self.strategies[turn % len(self.strategies)]
        return body, {"X-TTS-Strategy": strategy, "X-TTS-Budget": "16"}


MIXED = Workload("fake-policy", {}, STRATEGIES)


async def _client(
    url: str, work: Workload, until: float, index: int, results: list[tuple[float, str]]
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        turn = index
        while time.monotonic() < until:
            body, headers = work.request(turn)
            turn += 1
            started = time.monotonic()
            try:
                response = await client.post("/v1/chat/completions", json=body, headers=headers)
                outcome = "ok" if response.status_code == 200 else str(response.status_code)
                if response.status_code != 200:
                    outcome += ":" + _error_code(response)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
                response = None
            results.append((time.monotonic() - started, outcome))
            if response is not None and response.status_code == 429:  # as the SDKs do
                await asyncio.sleep(float(response.headers.get("retry-after", "1")))


def _error_code(response: httpx.Response) -> str:
    try:
        error = response.json().get("error")
    except ValueError:
        return "not-json"
    return str(error.get("code")) if isinstance(error, dict) else "not-openai-shaped"


async def _run(url: str, work: Workload, clients: int, seconds: float) -> list[tuple[float, str]]:
    results: list[tuple[float, str]] = []
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(url, work, until, i, results) for i in range(clients)))
    return results


def _row(label: str, pid: int, url: str, work: Workload, args: argparse.Namespace) -> str:
    cpu_before, _, _ = _proc(pid)
    results = asyncio.run(_run(url, work, args.clients, args.seconds))
    cpu_after, rss, peak = _proc(pid)
    latencies = sorted(s for s, outcome in results if outcome == "ok")
    errors = collections.Counter(o for _, o in results if o != "ok")
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    cpu_ms = 1000 * (cpu_after - cpu_before) / max(len(latencies), 1)
    return (
        f"| {label} | {len(latencies) / args.seconds:.1f} | {p50:.3f} | {p99:.3f} | "
        f"{cpu_ms:.1f} | {rss / 2**20:.0f} | {peak / 2**20:.0f} | {dict(errors) or '-'} |"
    )


_HEADER = (
    "| {} | answered/s | p50 s | p99 s | server CPU ms/answer | RSS MiB | peak MiB | "
    "errors (429s honour Retry-After) |\n|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.load", description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-peers", dest="peers", action="store_false")
    args = parser.parse_args()
    vllm = FakeVllm(delay_s=UPSTREAM_S)
    with serve(vllm.app()) as upstream:
        print(f"{args.clients} clients x {args.seconds:g} s, N = 16, upstream {UPSTREAM_S}s")
        print(
            "\nThe proxy, mixed strategies (best_of_n, majority, beam_search, dvts, none), "
            "admission at 64 searches:"
        )
        print(_HEADER.format("run"))
        with _proxy(upstream, max_searches=64) as (url, pid):
            for run in range(1, args.runs + 1):
                print(_row(str(run), pid, url, MIXED, args), flush=True)
        print(
            "\nA vote over N = 16 samples, side by side (one run each; the proxy's admission "
            "above the client count, as the peers have none):"
        )
        print(_HEADER.format("server"))
        with _proxy(upstream, max_searches=2 * args.clients) as (url, pid):
            vote = Workload("fake-policy", {}, ("majority",))
            print(_row("tts-proxy (majority)", pid, url, vote, args), flush=True)
        if args.peers:
            for name, peer in PEERS.items():
                with peer_server(name, upstream + "/v1") as (peer_url, pid):
                    work = Workload(peer.search_model, peer.search_body, None)
                    label = f"{name} {peer.version} ({peer.search_label})"
                    print(_row(label, pid, peer_url, work, args), flush=True)


@contextlib.contextmanager
def _proxy(upstream: str, max_searches: int) -> Iterator[tuple[str, int]]:
    """``python -m proxy serve`` in its own process; yields its URL and process id."""
    port = free_port()
    config = Path(tempfile.mkdtemp()) / "load.toml"
    config.write_text(f"max_concurrent_searches = {max_searches}\n[search]\nmax_steps = 4\n")
    command = [
        sys.executable,
        "-m",
        "proxy",
        "serve",
        "--port",
        str(port),
        "--policy-url",
        upstream + "/v1",
        "--policy-model",
        "fake-policy",
        "--config",
        str(config),
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}"
    with server_process(command, url + "/health/live") as process:
        yield url, process.pid


if __name__ == "__main__":
    main()
