"""What this machine's CPU computes natively, for ``DEMIX_PRECISION=auto`` (torch-free).

The one place the CPU's bf16 capability is detected: from the ``flags`` lines of Linux's
``/proc/cpuinfo`` (``avx512_bf16``: AVX-512 BF16's dot products; ``amx_bf16``: AMX tiles).
Not from torch: ``torch.backends.cpu.get_cpu_capability()`` names only the vector level
ATen dispatches to (``AVX512`` on AVX-512 CPUs with or without BF16, so it cannot tell),
and torch's own cpuinfo queries are private (``torch._C._cpu``) and gone from torch 2.13.
The kernel's flags are a stable interface, and list AMX only when the kernel enabled its
register state, so a flag seen is an instruction the process can run. Elsewhere (no
``/proc/cpuinfo``: macOS, Windows; or ARM, whose ``Features`` line is not read, its bf16
not measured here) the answer is no, which keeps fp32: bf16 emulated through fp32 is
slower than fp32 itself.
"""

from __future__ import annotations

import functools
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# Either flag means bf16 products at least twice fp32's rate on the CPU's own units.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
# AMX's bf16 tiles: oneDNN's and torch's flash attention's bf16 kernels pack blocks for them.
AMX_BF16_FLAG = "amx_bf16"


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags every processor of a ``/proc/cpuinfo`` text has (its ``flags`` lines, x86
    Linux): a thread may run on any of them."""
    common: set[str] | None = None
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "flags":
            flags = set(value.split())
            common = flags if common is None else common & flags
    return frozenset(common or ())


def has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AVX-512 BF16 or AMX).

    Args:
        cpuinfo: a ``/proc/cpuinfo`` text to judge; None reads this machine's (once per
            process).
    """
    flags = _this_cpu_flags() if cpuinfo is None else cpu_flags(cpuinfo)
    return bool(flags & NATIVE_BF16_FLAGS)


def has_amx_bf16(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has AMX's bf16 tiles (``amx_bf16``).

    Args:
        cpuinfo: a ``/proc/cpuinfo`` text to judge; None reads this machine's (once per
            process).
    """
    flags = _this_cpu_flags() if cpuinfo is None else cpu_flags(cpuinfo)
    return AMX_BF16_FLAG in flags


@functools.cache
def _this_cpu_flags() -> frozenset[str]:
    try:
        text = CPUINFO.read_text(errors="replace")
    except OSError:  # not Linux, or /proc not mounted: no evidence of native bf16
        return frozenset()
    return cpu_flags(text)
