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
        "fastapi",
        "starlette",
        "httpx",
        "uvicorn",
        "pydantic",
        "pydantic_settings",
        "torch",
        "vllm",
        "transformers",
        "litellm",
        "tenacity",
        "proxy",
        "prm_server",
        "os",
        "time",
        "requests",
        "aiohttp",
        "socket",
        "subprocess",
        "cpu_stack",
        "experiments",
        "tts_eval",
        "sqlalchemy",
        "matplotlib",
        *_DEV_ONLY,
    },
    "prm_server": {"proxy", "strategies", "cpu_stack", "experiments", "tts_eval", *_DEV_ONLY},
    # The proxy reaches the store only through experiments/ (and imports that lazily).
    "proxy": {
        "prm_server",
        "torch",
        "vllm",
        "transformers",
        "cpu_stack",
        "tts_eval",
        "sqlalchemy",
        "matplotlib",
        *_DEV_ONLY,
    },
    "cpu_stack": {"prm_server", "strategies", "experiments", "tts_eval", *_DEV_ONLY},
    "experiments": {
        "proxy",
        "prm_server",
        "cpu_stack",
        "tts_eval",
        "fastapi",
        "httpx",
        "matplotlib",
        *_DEV_ONLY,
    },
    "tts_eval": {"proxy", "prm_server", "cpu_stack", "fastapi", "uvicorn", *_DEV_ONLY},
    "harness": {"tests", "bench"},
    "bench": {"tests"},
}


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


# The arrows between proxy/'s parts, one-way: a part imports only those listed (top-level
# modules count as parts). Anything new is a decision: add it here, or cut the import.
PROXY_ARROWS = {
    "wire": {"settings"},
    "upstream": {"errors", "observability", "settings", "wire"},
    "observability": {"errors", "store"},
    "shadow": {"errors", "observability", "settings", "store", "upstream", "wire"},
    "search": {"errors", "observability", "settings", "shadow", "upstream", "wire"},
    "server": {"errors", "observability", "settings"},
    "state": {"search", "server"},
    "api": {"errors", "observability", "search", "server", "settings", "state", "upstream", "wire"},
    "app": {
        "api",
        "errors",
        "observability",
        "search",
        "server",
        "settings",
        "shadow",
        "state",
        "store",
        "upstream",
    },
    "__main__": {"app", "observability", "server", "settings"},
    "settings": set(),
    "errors": set(),
    "store": set(),
    "__init__": set(),
}
# Only the HTTP edge knows the web framework.
WEB = {"fastapi", "starlette", "uvicorn"}
WEB_ALLOWED = {"api", "app", "server", "observability"}  # observability: the request spans


def _part(path: Path) -> str:
    relative = path.relative_to(ROOT / "proxy")
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _proxy_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return {
        node.module.split(".")[1]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("proxy.")
    }


def test_proxy_parts_import_only_their_allowlisted_arrows() -> None:
    offenders = set()
    for path in sorted((ROOT / "proxy").rglob("*.py")):
        part = _part(path)
        assert part in PROXY_ARROWS, f"{path.relative_to(ROOT)}: a new part, add its arrows"
        for target in _proxy_imports(path) - {part} - PROXY_ARROWS[part]:
            offenders.add(f"{path.relative_to(ROOT)} -> {target}")
        if part not in WEB_ALLOWED and imported_roots(path) & WEB:
            offenders.add(f"{path.relative_to(ROOT)} -> the web framework")
    assert not offenders, sorted(offenders)


def test_the_allowlist_has_no_cycle() -> None:
    seen: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(part: str, path: list[str]) -> None:
        assert seen.get(part) != 1, " -> ".join([*path, part])
        if part not in seen:
            seen[part] = 1
            for target in sorted(PROXY_ARROWS[part]):
                visit(target, [*path, part])
            seen[part] = 2

    for part in sorted(PROXY_ARROWS):
        visit(part, [])


def test_only_the_app_imports_the_endpoint_handlers() -> None:
    """Handlers sit on the request skeleton (``proxy.api.endpoint``), never on each other."""
    handlers = {"proxy.api.chat", "proxy.api.completions", "proxy.api.responses"}
    offenders = set()
    for path in sorted((ROOT / "proxy").rglob("*.py")):
        if path.name == "app.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        modules = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        offenders |= {f"{path.relative_to(ROOT)}: {m}" for m in modules & handlers}
    assert not offenders, offenders
