"""Re-runs three of the hardening probe's repros against a real ``tts-proxy serve`` process (two
fake policy replicas on loopback) and prints what it measured:

- a stream of malformed requests (a lone surrogate in ``user``), one every 20 ms, with
  ``/health/ready`` sampled after each: how many samples were 200;
- 8 requests each with a 32 MB header: their statuses, and the server's RSS before and after;
- a replica whose completions hang while its ``/health`` answers: statuses and the slowest
  request of a run of sequential requests.

Run: ``.venv/bin/python -m bench.probe`` (about half a minute).
"""

from __future__ import annotations

import contextlib
import socket
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from cpu_stack.process import server_process
from harness.fake_servers import FakeVllm
from harness.servers import free_port, serve

BODY = (
    '{"model": "fake-policy", "messages": [{"role": "user", "content": "hi"}], "user": "a\\ud800"}'
)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _big_header(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        with contextlib.suppress(OSError):  # closed once the bound was passed
            sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 32 * 2**20)
        answer = sock.recv(64)
    return answer.split(b"\r\n", 1)[0].decode() or "(closed)"


def main() -> None:
    with ExitStack() as stack:
        replicas = [FakeVllm(), FakeVllm()]
        urls = [stack.enter_context(serve(r.app())) + "/v1" for r in replicas]
        port = free_port()
        # the call timeout short, so a hung replica is met within the run
        config = Path(stack.enter_context(tempfile.TemporaryDirectory())) / "proxy.toml"
        config.write_text("[policy]\ntimeout_s = 1\n")
        command = [
            sys.executable,
            "-m",
            "proxy",
            "serve",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--policy-model",
            "fake-policy",
            "--policy-url",
            urls[0],
            "--policy-url",
            urls[1],
            "--config",
            str(config),
        ]
        live = f"http://127.0.0.1:{port}/health/live"
        process = stack.enter_context(server_process(command, live))
        base = f"http://127.0.0.1:{port}"
        rows = []
        with httpx.Client(base_url=base, timeout=30) as client:
            ready, statuses = 0, set()
            for _ in range(200):
                reply = client.post(
                    "/v1/chat/completions",
                    content=BODY.encode(),
                    headers={"content-type": "application/json", "X-TTS-Strategy": "none"},
                )
                statuses.add(reply.status_code)
                ready += client.get("/health/ready").status_code == 200
                time.sleep(0.02)
            rows.append(
                (
                    "malformed stream (200 requests)",
                    f"statuses {sorted(statuses)}",
                    f"/health/ready 200 in {ready} of 200 samples",
                )
            )
            before = _rss_mb(process.pid)
            answers = sorted({_big_header(port) for _ in range(8)})
            rows.append(
                (
                    "8 x 32 MB header",
                    ", ".join(answers),
                    f"RSS {before:.0f} MB before, {_rss_mb(process.pid):.0f} MB after",
                )
            )
            replicas[0].delay_s = 60.0  # its completions hang; its /health still answers
            times, codes = [], set()
            for _ in range(20):
                reply = client.post(
                    "/v1/chat/completions",
                    headers={"X-TTS-Strategy": "cot"},
                    json={
                        "model": "fake-policy",
                        "messages": [{"role": "user", "content": "2+2?"}],
                    },
                )
                codes.add(reply.status_code)
                times.append(reply.elapsed.total_seconds())
            rows.append(
                (
                    "hung replica, 20 requests (call timeout 1 s)",
                    f"statuses {sorted(codes)}",
                    f"slowest {max(times):.2f} s, median {sorted(times)[10]:.3f} s",
                )
            )
    print("| repro | answers | measured |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
