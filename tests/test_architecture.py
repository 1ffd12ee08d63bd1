"""The dependency arrows: strategies/ is pure; prm_server/ and strategies/ never import proxy/;
proxy/ and tts_eval/ share only strategies/ and experiments/ (the store), which imports neither;
nothing shipped imports the demo stack, the harness, the tests or the benchmarks; the benchmarks
never import the tests."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_DEV_ONLY = {"tests", "harness", "bench"}
FORBIDDEN = {
    "strategies": {
        "fastapi", "starlette", "httpx", "uvicorn", "pydantic", "pydantic_settings", "torch",
        "vllm", "transformers", "litellm", "tenacity", "proxy", "prm_server", "os", "time",
        "requests", "aiohttp", "socket", "subprocess", "cpu_stack", "experiments", "tts_eval",
        "sqlalchemy", "matplotlib", *_DEV_ONLY,
    },
    "prm_server": {"proxy", "strategies", "cpu_stack", "experiments", "tts_eval", *_DEV_ONLY},
    # The proxy reaches the store only through experiments/ (and imports that lazily).
    "proxy": {"prm_server", "torch", "vllm", "transformers", "cpu_stack", "tts_eval", "sqlalchemy",
              "matplotlib", *_DEV_ONLY},
    "cpu_stack": {"prm_server", "strategies", "experiments", "tts_eval", *_DEV_ONLY},
    "experiments": {"proxy", "prm_server", "cpu_stack", "tts_eval", "fastapi", "httpx",
                    "matplotlib", *_DEV_ONLY},
    "tts_eval": {"proxy", "prm_server", "cpu_stack", "fastapi", "uvicorn", *_DEV_ONLY},
    "harness": {"tests", "bench"},
    "bench": {"tests"},
}  # fmt: skip


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_respect_the_arrows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in imported_roots(path) & FORBIDDEN[package]
    }
    assert not offenders, offenders


def test_gguf_converter_stands_alone() -> None:
    """It runs as a file in the policy environment, where none of the project is installed."""
    ours = {"strategies", "proxy", "prm_server", "cpu_stack", *_DEV_ONLY}
    assert not imported_roots(ROOT / "cpu_stack" / "convert_gguf.py") & ours


def proxy_modules_imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("proxy.")
    }


def test_only_the_app_imports_the_endpoint_handlers() -> None:
    """Handlers sit on the request skeleton (``proxy.endpoint``), never on each other."""
    handlers = {"proxy.routes", "proxy.routes_completions", "proxy.routes_responses"}
    offenders = {
        f"{path.name}: {name}"
        for path in sorted((ROOT / "proxy").glob("*.py"))
        if path.name != "app.py"
        for name in proxy_modules_imported(path) & handlers
    }
    assert not offenders, offenders
