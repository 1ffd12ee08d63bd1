"""Where the proxy's CPU goes: the proxy runs under ``py-spy record`` while 50 clients send chat
completions through it. ``--workload passthrough`` (the default): strategy ``none`` to a fake
upstream answering in 100 ms (``bench.overhead``'s); ``--workload vote``: ``majority`` over
N = 16 against a fake vLLM answering each call in 50 ms (``bench.load``'s vote). Writes the
flame graph's data (collapsed stacks, gzipped: flamegraph.pl or speedscope draw it) and prints
the functions with the most samples: inclusive (on the stack) and own (at the top).

py-spy comes from its own lock: ``make profile-tools`` installs it into ``build/tools/py-spy``.

Run: ``.venv/bin/python -m bench.profile_hop [--workload vote] [--requests 3000] [--clients 50]
[--checkout DIR]`` (``--checkout``: the proxy of another checkout, an earlier commit's).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gzip
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from bench.servers import Served, app_process
from cpu_stack.process import server_process
from harness.fake_servers import FakeVllm
from harness.servers import free_port, serve

PY_SPY = Path("build/tools/py-spy/bin/py-spy")
CLIENTS = 50


async def _load(
    url: str, requests: int, headers: dict[str, str], model: str, clients: int = CLIENTS
) -> float:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def worker(count: int) -> None:
            for _ in range(count):
                response = await client.post("/v1/chat/completions", json=body, headers=headers)
                response.raise_for_status()

        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(clients):
                group.create_task(worker(requests // clients))
        return time.perf_counter() - started


@contextlib.contextmanager
def _url(served: contextlib.AbstractContextManager[Served]) -> Iterator[str]:
    with served as server:
        yield server.url


def _frames(stack: str) -> list[str]:
    """``func (module.py:line)`` frames of one collapsed stack, outermost first."""
    return [
        f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0] + ")" for f in stack.split(";")
    ]


def summary(raw: Path, top: int) -> str:
    """The functions with the most samples, inclusive and own, from py-spy's raw output."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        total += samples
        frames = _frames(stack)
        for frame in set(frames):
            inclusive[frame] += samples
        own[frames[-1]] += samples
    lines = [f"{total} samples"]
    for title, counter in (("inclusive", inclusive), ("own", own)):
        lines.append(f"\n{title}:")
        for frame, samples in counter.most_common(top):
            lines.append(f"  {samples / total:6.1%}  {frame}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/profile"))
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--workload", choices=("passthrough", "vote"), default="passthrough")
    parser.add_argument("--label", default=None, help="the output files' name (the workload's)")
    parser.add_argument("--checkout", type=Path, help="profile another checkout's proxy")
    args = parser.parse_args()
    args.label = args.label or args.workload
    if not PY_SPY.exists():
        raise SystemExit(f"{PY_SPY} is missing: run `make profile-tools`")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / f"{args.label}.txt"
    if args.workload == "vote":
        upstream_of = serve(FakeVllm(delay_s=0.05).app())
        model, headers = "fake-policy", {"X-TTS-Strategy": "majority", "X-TTS-Budget": "16"}
    else:
        upstream_of = _url(app_process("bench.overhead:chat_app", "/v1/models"))
        model, headers = "bench", {"X-TTS-Strategy": "none"}
    with upstream_of as upstream:
        port = free_port()
        command = [
            *(str(PY_SPY.resolve()), "record", "--rate", "250", "--format", "raw"),
            *("-o", str(raw.resolve()), "--"),
            *(sys.executable, "-m", "proxy", "serve", "--port", str(port)),
            *("--policy-url", upstream + "/v1", "--policy-model", model, "--log-level", "warning"),
        ]
        url = f"http://127.0.0.1:{port}"
        with server_process(command, url + "/health/live", cwd=args.checkout) as process:
            asyncio.run(_load(url, 200, headers, model, args.clients))  # warm up
            seconds = asyncio.run(_load(url, args.requests, headers, model, args.clients))
            process.send_signal(2)  # py-spy writes its output when the proxy exits
            process.wait(timeout=60)
    print(f"{args.requests} {args.workload} requests, {args.clients} clients: {seconds:.1f} s")
    text = summary(raw, args.top)
    (args.out / f"{args.label}-summary.txt").write_text(text + "\n")
    # The collapsed stacks, compressed (flamegraph.pl or speedscope draw them).
    with raw.open("rb") as source, gzip.open(raw.with_suffix(".txt.gz"), "wb") as target:
        shutil.copyfileobj(source, target)
    raw.unlink()
    print(text)


if __name__ == "__main__":
    main()
