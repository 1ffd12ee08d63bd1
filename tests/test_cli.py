"""The console entry points start real servers (``python -m proxy serve``, ``python -m prm_server
serve``) and stop cleanly."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx

from tests.fake_servers import FakeVllm, free_port, serve
from tests.prm_models import build_checkpoint


@contextmanager
def running(command: list[str], probe: str) -> Iterator[str]:
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            with suppress(httpx.TransportError):
                if httpx.get(probe, timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        yield probe
    finally:
        process.terminate()
        assert process.wait(timeout=20) is not None
        if process.stdout:
            process.stdout.close()


def test_proxy_serve_command(tmp_path: Path) -> None:
    with serve(FakeVllm().app()) as vllm_url:
        config = tmp_path / "proxy.toml"
        config.write_text("default_budget = 2\nmax_budget = 4\n")
        port = free_port()
        command = [sys.executable, "-m", "proxy", "serve", "--port", str(port), "--policy-url",
                   vllm_url + "/v1", "--config", str(config), "--log-level", "warning"]  # fmt: skip
        with running(command, f"http://127.0.0.1:{port}/metrics"):
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
    with running(command, f"http://127.0.0.1:{port}/health"):
        body = {"problem": "2+2?", "candidates": [["add them", "so 4"]]}
        data = httpx.post(f"http://127.0.0.1:{port}/v1/score", json=body, timeout=30).json()
        assert data["model"] == "skywork" and len(data["scores"][0]) == 2
