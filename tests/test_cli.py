"""The console entry points start real servers (``python -m proxy serve``, ``python -m prm_server
serve``) and stop cleanly."""

from __future__ import annotations

import sys
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
