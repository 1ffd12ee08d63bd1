"""Scaling the proxy tier (prints tables; not a test): K proxy processes (1, 2, 4) behind a
round-robin front, against fake vLLM replicas in their own processes whose every call takes
``--upstream-s``, with mixed strategies at N = 16; then K = 2 proxies over 2 and 4 policy
replicas, one replica killed half-way through, to show failover.

The front is client-side round-robin over the K proxy URLs (each client sends its next request
to the next proxy), as kube-proxy spreads connections over a Service's pods at L4: no extra
Python hop on a 2-core machine. The clients run in this process and the fakes in their own; on 2
cores everything shares the same two CPUs, so the table shows where that stops, not what a
cluster would do.

Run: ``.venv/bin/python -m bench.scale [--clients 64] [--seconds 15] [--upstream-s 0.05]``
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from cpu_stack.process import server_process
from harness.servers import free_port

STRATEGIES = ("best_of_n", "majority", "beam_search", "dvts", "none")
MESSAGES = [{"role": "user", "content": "What is 2 + 2? Think step by step."}]
_FAKE = (
    "import sys, uvicorn; from harness.fake_servers import FakeVllm; "
    "uvicorn.run(FakeVllm(delay_s=float(sys.argv[2])).app(), host='127.0.0.1', "
    "port=int(sys.argv[1]), log_level='warning')"
)


@contextlib.contextmanager
def fake_replicas(count: int, upstream_s: float) -> Iterator[list[tuple[str, int]]]:
    """``count`` fake vLLM servers, each its own process; yields (URL, pid) pairs."""
    with contextlib.ExitStack() as stack:
        replicas = []
        for _ in range(count):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            command = [sys.executable, "-c", _FAKE, str(port), str(upstream_s)]
            process = stack.enter_context(server_process(command, url + "/health", name="fake"))
            replicas.append((url + "/v1", process.pid))
        yield replicas


@contextlib.contextmanager
def proxies(count: int, policy_urls: list[str]) -> Iterator[list[str]]:
    """``count`` ``tts-proxy serve`` processes over the same policy replicas."""
    config = Path(tempfile.mkdtemp()) / "scale.toml"
    config.write_text(
        "max_concurrent_searches = 256\npolicy_eject_s = 30\npolicy_probe_interval_s = 1\n"
        "[search]\nmax_steps = 4\n"
    )
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(count):
            port = free_port()
            command = [
                sys.executable,
                "-m",
                "proxy",
                "serve",
                "--port",
                str(port),
                "--policy-model",
                "fake-policy",
                "--config",
                str(config),
                "--log-level",
                "warning",
            ]
            for policy_url in policy_urls:
                command += ["--policy-url", policy_url]
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(server_process(command, url + "/health/live", name="tts-proxy"))
            urls.append(url)
        yield urls


async def _client(
    urls: list[str], until: float, index: int, results: list[tuple[float, float, str]]
) -> None:
    clients = [httpx.AsyncClient(base_url=url, timeout=120) for url in urls]
    turn = index
    try:
        while (now := time.monotonic()) < until:
            client = clients[turn % len(clients)]  # the round-robin front
            strategy = STRATEGIES[turn % len(STRATEGIES)]
            turn += 1
            headers = {"X-TTS-Strategy": strategy, "X-TTS-Budget": "16"}
            body = {"model": "fake-policy", "messages": MESSAGES}
            try:
                response = await client.post("/v1/chat/completions", json=body, headers=headers)
                outcome = "ok" if response.status_code == 200 else str(response.status_code)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            results.append((now, time.monotonic() - now, outcome))
    finally:
        for client in clients:
            await client.aclose()


async def _load(
    urls: list[str], clients: int, seconds: float, kill: tuple[int, float] | None
) -> list[tuple[float, float, str]]:
    results: list[tuple[float, float, str]] = []
    until = time.monotonic() + seconds
    load = asyncio.gather(*(_client(urls, until, i, results) for i in range(clients)))
    if kill is not None:
        pid, after_s = kill
        await asyncio.sleep(after_s)
        with contextlib.suppress(ProcessLookupError):  # the replica's whole process group
            os.killpg(pid, signal.SIGKILL)
    await load
    return results


def _row(label: str, results: list[tuple[float, float, str]], seconds: float) -> str:
    latencies = sorted(s for _, s, outcome in results if outcome == "ok")
    errors = collections.Counter(o for _, _, o in results if o != "ok")
    p50 = statistics.median(latencies) if latencies else float("nan")
    p99 = latencies[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    return (
        f"| {label} | {len(latencies) / seconds:.1f} | {p50:.3f} | {p99:.3f} | "
        f"{dict(errors) or '-'} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.scale", description=__doc__)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--upstream-s", type=float, default=0.05)
    parser.add_argument("--proxies", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    print(
        f"{args.clients} clients x {args.seconds:g} s, mixed strategies at N = 16, "
        f"every upstream call {args.upstream_s:g} s\n"
    )
    print("K proxy processes over 2 policy replicas:\n")
    print("| K (run) | answered/s | p50 s | p99 s | errors |\n|---|---|---|---|---|")
    with fake_replicas(2, args.upstream_s) as replicas:
        for k in args.proxies:
            with proxies(k, [url for url, _ in replicas]) as urls:
                for run in range(1, args.runs + 1):
                    results = asyncio.run(_load(urls, args.clients, args.seconds, None))
                    print(_row(f"{k} ({run})", results, args.seconds), flush=True)
    print("\nFailover: K = 2 proxies, one policy replica killed (SIGKILL) half-way through:\n")
    print("| replicas | answered/s | p50 s | p99 s | errors |\n|---|---|---|---|---|")
    for count in (2, 4):
        with contextlib.ExitStack() as stack:
            replicas = stack.enter_context(fake_replicas(count, args.upstream_s))
            urls = stack.enter_context(proxies(2, [url for url, _ in replicas]))
            kill = (replicas[0][1], args.seconds / 2)
            results = asyncio.run(_load(urls, args.clients, args.seconds, kill))
            print(_row(f"{count}, one killed", results, args.seconds), flush=True)


if __name__ == "__main__":
    main()
