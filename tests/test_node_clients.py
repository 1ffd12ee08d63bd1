"""Node clients, unmodified, against the proxy over the fakes: the Anthropic TypeScript SDK and
Claude Code (npm; versions pinned by ``tests/node/package-lock.json``, installed with ``npm ci``
into ``build/node-clients``). Claude Code answers a one-shot prompt through ``/v1/messages``:
its tools and long system prompt go to the policy's chat endpoint, translated, and its tool call
comes back as a ``tool_use`` block."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from harness.fake_chat import ARGUMENTS
from harness.fake_servers import FakeVllm
from tests.conftest import ProxyFactory

SOURCE = Path(__file__).parent / "node"
PREFIX = Path(__file__).parents[1] / "build" / "node-clients"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """``npm ci`` once per lock (the packages come from the npm registry)."""
    lock = PREFIX / "package-lock.json"
    if not (lock.exists() and filecmp.cmp(lock, SOURCE / "package-lock.json", shallow=False)):
        shutil.rmtree(PREFIX, ignore_errors=True)
        PREFIX.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(SOURCE / name, PREFIX / name)
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"], cwd=PREFIX, check=True, timeout=600
        )
    return PREFIX / "node_modules"


def run_node(args: list[str], env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    done = subprocess.run(
        args, env=os.environ | env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_anthropic_typescript_sdk(
    start_proxy: ProxyFactory, vllm: FakeVllm, node_modules: Path
) -> None:
    url = start_proxy()
    script = PREFIX / "messages.mjs"
    shutil.copy(SOURCE / "messages.mjs", script)
    seen = run_node(["node", str(script)], {"PROXY_URL": url})
    created = seen["create"]
    assert created["id"].startswith("msg_") and created["stop_reason"] == "end_turn"
    assert "\\boxed{4}" in created["content"][0]["text"]
    assert created["tts"]["strategy"] == "best_of_n"
    assert created["usage"]["output_tokens"] > 0
    assert seen["stream"]["types"][0] == "message_start"
    assert seen["stream"]["types"][-1] == "message_stop"
    assert "\\boxed{4}" in seen["stream"]["content"][0]["text"]
    call = seen["tool"]["content"][-1]
    assert call["type"] == "tool_use" and call["input"] == ARGUMENTS
    assert seen["tool"]["stop_reason"] == "tool_use"
    assert seen["count"]["input_tokens"] > 0
    error = seen["error"]
    assert error["name"] == "BadRequestError" and error["status"] == 400
    assert error["body"]["error"]["type"] == "invalid_request_error"


def test_claude_code_answers_a_one_shot_prompt(
    start_proxy: ProxyFactory, vllm: FakeVllm, node_modules: Path, tmp_path: Path
) -> None:
    url = start_proxy()
    env = {
        "HOME": str(tmp_path),
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "unused",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    claude = str(node_modules / ".bin" / "claude")
    seen = run_node([claude, "-p", "What is 2 + 2?", "--output-format", "json"], env)
    assert seen["is_error"] is False and seen["subtype"] == "success"
    # The fake policy asks for a tool first, then answers once it has the tool's result.
    assert seen["result"] == "plain answer" and seen["num_turns"] == 2
    first = vllm.chat_calls[0]
    assert first["messages"][0]["role"] == "system" and len(first["messages"][0]["content"]) > 1000
    assert first["tools"] and all(tool["type"] == "function" for tool in first["tools"])
    assert any(m["role"] == "tool" for m in vllm.chat_calls[-1]["messages"])
