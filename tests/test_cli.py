"""The console entry points start real servers (``python -m proxy serve``, ``python -m prm_server
serve``) and stop cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

import httpx

from cpu_stack.process import server_process
from harness.fake_servers import FakeVllm
from harness.prm_models import build_checkpoint
from harness.servers import free_port, serve


def test_proxy_serve_command(tmp_path: Path) -> None:
    with serve(FakeVllm().app()) as vllm_url:
        config = tmp_path / "proxy.toml"
        config.write_text("default_budget = 2\nmax_budget = 4\n")
        port = free_port()
        command = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--policy-url",
                   vllm_url + "/v1", "--config", str(config), "--log-level", "warning"]  # fmt: skip
        with server_process(command, f"http://127.0.0.1:{port}/metrics"):
            body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            data = httpx.post(url, json=body, headers={"X-TTS-Strategy": "majority"}).json()
            assert data["tts"]["budget"] == 2  # from the config file
            too_big = httpx.post(url, json=body, headers={"X-TTS-Budget": "5"})
            assert too_big.status_code == 400  # the file's cap applies


def test_prm_serve_command(tmp_path: Path) -> None:
    checkpoint = build_checkpoint("skywork", tmp_path / "skywork")
    port = free_port()
    command = [sys.executable, "-m", "prm_server", "serve", "--model", str(checkpoint),
               "--family", "skywork", "--port", str(port), "--log-level", "warning"]  # fmt: skip
    with server_process(command, f"http://127.0.0.1:{port}/health"):
        body = {"problem": "2+2?", "candidates": [["add them", "so 4"]]}
        data = httpx.post(f"http://127.0.0.1:{port}/v1/score", json=body, timeout=30).json()
        assert data["model"] == "skywork" and len(data["scores"][0]) == 2


def test_sigterm_with_a_hung_upstream_ends_within_the_grace_period() -> None:
    hung = FakeVllm(delay_s=120.0)
    with serve(hung.app()) as vllm_url:
        port = free_port()
        command = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--policy-url",
                   vllm_url + "/v1", "--policy-model", "fake-policy",
                   "--log-level", "warning"]  # fmt: skip
        env = dict(os.environ, PROXY_SHUTDOWN_GRACE_S="2")
        with server_process(command, f"http://127.0.0.1:{port}/health/live", env=env) as process:
            body = {"model": "fake-policy", "messages": [{"role": "user", "content": "2+2?"}]}
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            client = threading.Thread(target=_post_quietly, args=(url, body), daemon=True)
            client.start()
            assert hung.started.wait(10)
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=15)
            assert time.monotonic() - started < 2 + 5  # the grace, then the rest is cancelled
        assert hung.in_flight == 0 or hung.cancelled >= 1


def _post_quietly(url: str, body: dict[str, object]) -> None:
    with contextlib.suppress(httpx.HTTPError):
        httpx.post(url, json=body, headers={"X-TTS-Strategy": "cot"}, timeout=60)
