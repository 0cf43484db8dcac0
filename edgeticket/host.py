"""The machine a number was measured on: CPU model, architecture and the instruction-set flags that change what
a runtime computes (int8 dot products, fp16 and bf16 arithmetic). Standard library only. The bench runner
sends its machine's /proc/cpuinfo block, read here with `parse_cpuinfo`; an export records the CPU that chose
its int8 weight range."""

from __future__ import annotations

import functools
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

# the flags that decide a kernel, as /proc/cpuinfo spells them
RELEVANT_FLAGS = (
    # x86: SIMD width, int8 dot products (VNNI, AMX), half and bfloat16 arithmetic
    "avx2", "f16c", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8",
    # ARM: NEON, fp16 arithmetic, int8 dot product and matrix multiply, bfloat16, SVE
    "asimd", "asimdhp", "fphp", "asimddp", "i8mm", "bf16", "sve",
)


@dataclass(frozen=True)
class CpuInfo:
    model: str
    arch: str                   # platform.machine(): x86_64, aarch64, ...
    flags: tuple[str, ...]      # the RELEVANT_FLAGS this CPU has

    @property
    def x86(self) -> bool:
        return self.arch.lower() in ("x86_64", "amd64", "i686", "i386")

    @property
    def vnni(self) -> bool:
        """x86 int8 dot products without int16 intermediates (AVX512-VNNI or AVX-VNNI)."""
        return "avx512_vnni" in self.flags or "avx_vnni" in self.flags

    @property
    def fp16_arithmetic(self) -> bool:
        """Half-precision arithmetic in the CPU's vector unit (ARMv8.2 asimdhp, x86 AVX512-FP16)."""
        return bool({"asimdhp", "avx512_fp16"} & set(self.flags))

    def describe(self) -> str:
        """One line: model, architecture and flags, for tables and notes."""
        return f"{self.model} ({self.arch}; {' '.join(self.flags) or 'no listed flags'})"

    def as_dict(self) -> dict:
        return {**asdict(self), "flags": list(self.flags)}

    @classmethod
    def from_dict(cls, raw: dict) -> CpuInfo:
        return cls(raw["model"], raw["arch"], tuple(raw["flags"]))


def parse_cpuinfo(text: str, arch: str) -> CpuInfo:
    """Model and relevant flags from /proc/cpuinfo's first processor (x86 `model name`/`flags`,
    ARM `Features` and, where the kernel names it, `Hardware` or `model name`)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or "unknown CPU"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return CpuInfo(model, arch, tuple(f for f in RELEVANT_FLAGS if f in flags))


@functools.cache
def cpu_info() -> CpuInfo:
    """This machine's CPU; on systems without /proc/cpuinfo, the model from `platform` and no flags."""
    arch = platform.machine() or "unknown"
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text(errors="replace"), arch)
    except OSError:
        return CpuInfo(platform.processor() or "unknown CPU", arch, ())
