"""The suite's own pytest settings keep one failing test from aborting the whole run.

On CPython 3.11.7 (gh-106905) ``ast.parse`` can raise ``SystemError: AST constructor recursion
depth mismatch`` when two threads parse at once. pytest's default traceback styles ``ast.parse``
the failing test's source file and catch only ``SyntaxError``, so the error escapes as an
INTERNALERROR and ends the session. The inner run below makes ``ast.parse`` raise exactly that
before failing a test (until that failure is reported), under our ``addopts`` and, as a control,
under pytest's default style.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_INNER = """
import ast

def _mismatch(*args, **kwargs):
    raise SystemError("AST constructor recursion depth mismatch (before=48, after=50)")

def test_fails_while_ast_parse_is_broken():
    ast.parse = _mismatch
    assert 1 + 1 == 3
"""
# The real race is transient: parsing works again once the failure has been reported.
_INNER_CONFTEST = """
import ast

_PARSE = ast.parse

def pytest_runtest_logreport(report):
    ast.parse = _PARSE
"""


def _inner_run(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    (tmp_path / "pytest.ini").write_text(f"[pytest]\naddopts = {options['addopts']}\n")
    (tmp_path / "test_inner.py").write_text(_INNER)
    (tmp_path / "conftest.py").write_text(_INNER_CONFTEST)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:randomly",
            "--rootdir",
            str(tmp_path),
            *extra,
            str(tmp_path / "test_inner.py"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_failure_is_reported_even_when_ast_parse_breaks(tmp_path: Path) -> None:
    result = _inner_run(tmp_path)
    output = result.stdout + result.stderr
    assert "INTERNALERROR" not in output, output
    assert result.returncode == 1 and "1 failed" in output, output
    assert "assert (1 + 1) == 3" in output  # the assertion's explanation survives


def test_the_default_traceback_style_would_abort(tmp_path: Path) -> None:
    result = _inner_run(tmp_path, "--tb=auto")  # a later option wins
    output = result.stdout + result.stderr
    assert "INTERNALERROR" in output and "recursion depth mismatch" in output, output
