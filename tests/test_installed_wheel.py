"""The path users and the Docker image take: build the wheel, install it non-editable into a fresh
virtual environment the way the Dockerfile does (``pip install -c requirements/docker.txt
'tts-proxy[litellm,prm]'``), then serve requests from that install, outside the source tree.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from cpu_stack.process import free_port, server_process
from harness.fake_api import FakeChatApi
from harness.fake_servers import FakeVllm
from harness.locks import pins
from harness.prm_models import build_checkpoint
from harness.servers import serve

# Building and installing takes 2-4 min on 2 cores; only the first test pays for it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT_S = 900


def _docker_context() -> list[str]:
    """What the Dockerfile's build stage copies in (its ``COPY`` lines before ``--from``)."""
    names: list[str] = []
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not parts[1].startswith("--"):
            names += parts[1:-1]
    return names


@dataclass(frozen=True)
class Installed:
    wheel: Path
    bin: Path
    workdir: Path  # outside the source tree, so nothing imports from the checkout


def _run(command: list[str | Path], cwd: Path) -> str:
    result = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    # The Docker build context, copied: the build writes build/ and *.egg-info next to its
    # sources, which must neither land in the checkout nor leak stale files into the wheel.
    context = root / "context"
    context.mkdir()
    for name in _docker_context():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, context / name)
        else:
            shutil.copy2(ROOT / name, context / name)
    dist = root / "dist"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            dist,
            context,
        ],
        cwd=root,
    )
    wheel = next(dist.glob("tts_proxy-*.whl"))
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=root)
    pip: list[str | Path] = [venv / "bin" / "python", "-m", "pip", "--disable-pip-version-check"]
    constraints = ROOT / "requirements" / "docker.txt"
    _run([*pip, "install", "--quiet", "-c", constraints, f"{wheel}[eval,prm]"], cwd=root)
    return Installed(wheel, venv / "bin", root)


def test_wheel_ships_its_data_and_nothing_of_the_checkout(installed: Installed) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    shipped = (
        "proxy/auto_rules.toml",
        "proxy/ui/trace.js",
        "proxy/ui/traces.html",
        "proxy/ui/trace.css",
        "cpu_stack/policy.lock",
        "cpu_stack/convert_gguf.py",
        "tts_eval/data/math500.jsonl",
        "tts_eval/data/aime24.jsonl",
        "tts_eval/data/README.md",
    )
    for data in shipped:
        assert data in names, f"{data} missing from {installed.wheel.name}"
    leaked = {n.split("/")[0] for n in names} & {"tests", "harness", "bench", "requirements"}
    assert not leaked, leaked
    # The import names the wheel installs are a decision (README, Development): no new one
    # slips in, above all no other generic one.
    roots = {n.split("/")[0] for n in names} - {n.split("/")[0] for n in names if ".dist-info" in n}
    assert roots == set(IMPORT_ROOTS), roots


IMPORT_ROOTS = ("strategies", "proxy", "prm_server", "cpu_stack", "experiments", "tts_eval")


def test_installed_versions_are_the_locked_ones(installed: Installed) -> None:
    frozen = _run(
        [installed.bin / "python", "-m", "pip", "freeze", "--exclude", "tts-proxy"],
        cwd=installed.workdir,
    )
    locked = pins((ROOT / "requirements" / "dev.lock").read_text())
    drift = {
        name: (version, locked.get(name))
        for name, version in pins(frozen).items()
        if locked.get(name) != version
    }
    assert not drift, f"installed (version, locked) differ: {drift}"


def test_installed_package_is_not_the_checkout(installed: Installed) -> None:
    code = "import proxy, cpu_stack; print(proxy.__file__); print(cpu_stack.__file__)"
    paths = _run([installed.bin / "python", "-c", code], cwd=installed.workdir).split()
    assert all("site-packages" in p and not p.startswith(str(ROOT)) for p in paths), paths
    lock = "from cpu_stack.installer import locked_requirements as l; print(len(l().pins))"
    assert int(_run([installed.bin / "python", "-c", lock], cwd=installed.workdir)) > 50


@pytest.fixture
def installed_proxy(installed: Installed) -> Iterator[str]:
    with serve(FakeVllm().app()) as vllm_url:
        port = free_port()
        command = [
            installed.bin / "tts-proxy",
            "serve",
            "--port",
            str(port),
            "--policy-url",
            vllm_url + "/v1",
            "--log-level",
            "warning",
        ]
        url = f"http://127.0.0.1:{port}"
        with server_process([str(c) for c in command], url + "/health", name="tts-proxy"):
            yield url


def test_installed_proxy_serves_a_search(installed_proxy: str) -> None:
    assert httpx.get(installed_proxy + "/health").json()["status"] == "ok"
    client = openai.OpenAI(
        _strict_response_validation=True,
        base_url=installed_proxy + "/v1",
        api_key="unused",
        max_retries=0,
    )
    reply = client.chat.completions.create(
        model="fake-policy",
        messages=[{"role": "user", "content": "2+2?"}],
        extra_body={"tts": {"budget": 4}},
    )
    assert reply.choices[0].message.content and "\\boxed{4}" in reply.choices[0].message.content
    tts = reply.model_extra["tts"] if reply.model_extra else {}
    assert tts["requested_strategy"] == "auto"  # the shipped auto_rules.toml loaded
    # The trace page's files come from the installed package.
    assert httpx.get(f"{installed_proxy}/ui/traces/{reply.id}").status_code == 200
    assert "TtsTrace" in httpx.get(installed_proxy + "/ui/static/trace.js").text
    assert httpx.get(f"{installed_proxy}/v1/tts/traces/{reply.id}").json()["request_id"] == reply.id


def test_installed_prm_server_scores(installed: Installed, tmp_path: Path) -> None:
    checkpoint = build_checkpoint("qwen_prm", tmp_path / "qwen_prm")
    port = free_port()
    command = [
        installed.bin / "tts-prm",
        "serve",
        "--model",
        checkpoint,
        "--family",
        "qwen_prm",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    url = f"http://127.0.0.1:{port}"
    with server_process([str(c) for c in command], url + "/health", name="tts-prm"):
        body = {"problem": "2+2?", "candidates": [["add them", "so 4"], ["guess 5"]]}
        data = httpx.post(url + "/v1/score", json=body, timeout=60).json()
    assert [len(s) for s in data["scores"]] == [2, 1], json.dumps(data)
    assert all(0.0 <= x <= 1.0 for s in data["scores"] for x in s)


def test_installed_demo_command_starts(installed: Installed) -> None:
    usage = _run([installed.bin / "tts-demo", "--help"], cwd=installed.workdir)
    assert "--dtype" in usage and "qwen2.5-coder-0.5b" in usage


def test_installed_eval_runs_a_bundled_benchmark_and_reports(installed: Installed) -> None:
    with serve(FakeChatApi().app()) as api_url:
        out = installed.workdir / "eval-run"
        _run(
            [
                installed.bin / "tts-eval",
                "run",
                "--dataset",
                "aime24",
                "--limit",
                "2",
                "--provider",
                "litellm",
                "--model",
                "openai/fake-big",
                "--endpoint",
                api_url + "/v1",
                "--api-key",
                "x",
                "--out",
                out,
            ],
            cwd=installed.workdir,
        )
    table = _run([installed.bin / "tts-eval", "report", out], cwd=installed.workdir)
    assert "openai/fake-big" in table and (out / "report.md").exists()
    assert len((out / "rows.jsonl").read_text().splitlines()) == 2
