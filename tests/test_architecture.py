"""The dependency arrows: strategies/ is pure; prm_server/ and strategies/ never import proxy/."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "strategies": {
        "fastapi", "starlette", "httpx", "uvicorn", "pydantic", "pydantic_settings", "torch",
        "vllm", "transformers", "litellm", "tenacity", "proxy", "prm_server", "os", "time",
        "requests", "aiohttp", "socket", "subprocess",
    },
    "prm_server": {"proxy", "strategies"},
    "proxy": {"prm_server", "torch", "vllm", "transformers"},
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
