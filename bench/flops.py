"""The work of the network's passes, and how close a timed run came to this CPU's peak.

FLOPs: one forward pass over one chunk (the models' 7.8 s training segment) of each
published shape, counted by ``torch.utils.flop_counter.FlopCounterMode``: 2 per
multiply-add of the convolutions (transposed ones too), the linear layers and the
attention. The attention runs through SDPA's fused CPU kernel in our passes (the
multi-head attention fast path is off, see ``separation.ensemble``), an op torch's table
does not list; it is counted here with torch's own SDPA formula. The STFT, iSTFT, norms
and activations are not counted (few FLOPs, bound by memory). The count does not depend on
the precision: bf16 does the same multiply-adds.

Peak: cores x FMA units x vector lanes x 2 x clock, from ``lscpu`` (see :class:`CpuPeak`
for what each factor is taken from and the assumptions per CPU family).

:class:`WorkCounter` counts the chunks the HTDemucs modules run while it is active, so a
benchmark knows the FLOPs of what it timed, and :func:`throughput` turns FLOPs and seconds
into FLOP/s and the share of the peak for the precision the passes ran in.

    python bench/flops.py [--size pretrained|tiny] [--lscpu FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from separation.random_models import (
    FOUR_SOURCES,
    PRETRAINED_KWARGS_4,
    PRETRAINED_KWARGS_6,
    SIX_SOURCES,
    TINY_KWARGS,
)

SAMPLERATE = 44100
# Our passes overlap chunks by a quarter (SeparatorConfig.overlap): a chunk every 0.75
# segment, so a sub-model pass costs FLOPs per chunk / (0.75 x 7.8 s) per second of audio.
OVERLAP = 0.25


def _sdpa_cpu_flops(
    query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any
) -> int:
    """SDPA's fused CPU kernel, which our passes' attention runs (not in torch's FLOP
    table): the formula torch applies to the flash and memory-efficient kernels."""
    return int(sdpa_flop_count(query_shape, key_shape, value_shape))


_CUSTOM_FLOPS: dict[Any, Any] = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _CUSTOM_FLOPS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops


def published_shapes(size: str = "pretrained") -> dict[str, torch.nn.Module]:
    """Random-weight HTDemucs of each published shape, by a label (as
    ``separation.random_models`` writes them): htdemucs_ft's sub-model (4 sources,
    ``bottom_channels=512``) and htdemucs_6s (6 sources); ``tiny`` gives the tests' shapes."""
    from demucs.htdemucs import HTDemucs

    if size == "tiny":
        kwargs_4, kwargs_6 = dict(TINY_KWARGS), dict(TINY_KWARGS)
    else:
        kwargs_4, kwargs_6 = dict(PRETRAINED_KWARGS_4), dict(PRETRAINED_KWARGS_6)
    return {
        "htdemucs_ft sub-model: HTDemucs(4 sources)": HTDemucs(FOUR_SOURCES, **kwargs_4).eval(),
        "htdemucs_6s: HTDemucs(6 sources)": HTDemucs(SIX_SOURCES, **kwargs_6).eval(),
    }


def segment_samples(model: Any) -> int:
    """A chunk's length in samples: the model's training segment, as our passes cut it."""
    return int(model.samplerate * float(model.segment))


def forward_flops(model: Any, *, batch: int = 1) -> dict[str, int]:
    """FLOPs of one forward pass of ``model`` over ``batch`` chunks, by aten op (e.g.
    ``aten.convolution``), with self-attention through SDPA as in our passes."""
    parameter = next(model.parameters())
    inputs = torch.zeros(batch, model.audio_channels, segment_samples(model))
    inputs = inputs.to(parameter.device)
    counter = FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with counter, torch.no_grad():
            model(inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return {str(op): int(flops) for op, flops in counter.get_flop_counts()["Global"].items()}


def chunk_flops(model: Any) -> int:
    """FLOPs of one forward pass of ``model`` over one chunk."""
    return sum(forward_flops(model).values())


def _shape_key(model: Any) -> tuple[Any, ...]:
    """What fixes a module's FLOPs per chunk: its class, sources, segment and size."""
    parameters = sum(p.numel() for p in model.parameters())
    return (type(model).__name__, tuple(model.sources), float(model.segment), parameters)


# FLOPs per chunk by shape key: counted once per process, whatever the number of counters.
_FLOPS_BY_SHAPE: dict[tuple[Any, ...], int] = {}


class WorkCounter:
    """Counts the chunks every HTDemucs forward pass runs while the block runs (a global
    module hook: the benchmark needs no handle on the separator's models), and gives
    their FLOPs. A hook costs microseconds per module call against seconds per chunk.

    Usage: ``with WorkCounter() as work: run()``, then ``work.flops()``.
    """

    def __init__(self) -> None:
        self.chunks: Counter[tuple[Any, ...]] = Counter()
        self._models: dict[tuple[Any, ...], Any] = {}
        self._handle: Any = None

    def __enter__(self) -> WorkCounter:
        self._handle = torch.nn.modules.module.register_module_forward_hook(self._hook)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.remove()

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        from demucs.htdemucs import HTDemucs

        if isinstance(module, HTDemucs) and args:
            key = _shape_key(module)
            self.chunks[key] += int(args[0].shape[0])
            self._models.setdefault(key, module)

    def flops(self) -> int:
        """FLOPs of the chunks counted (each shape's chunk counted once, on first need), as
        demucs's network defines them: counted on a fresh HTDemucs of the counted model's
        shape, so that how our passes compute a layer (a 1-D convolution as a product with
        its bias as a row of ones, say) does not change the work reported."""
        total = 0
        for key, chunks in self.chunks.items():
            if key not in _FLOPS_BY_SHAPE:
                _FLOPS_BY_SHAPE[key] = chunk_flops(_plain_network(self._models[key]))
            total += chunks * _FLOPS_BY_SHAPE[key]
        return total


def _plain_network(model: Any) -> Any:
    """A random-weight HTDemucs, in demucs's own classes, float32 on the CPU, built with the
    arguments ``model`` was built with (demucs records them: ``_init_args_kwargs``)."""
    from demucs.htdemucs import HTDemucs

    args, kwargs = model._init_args_kwargs
    return HTDemucs(*args, **kwargs).eval()


# -- the peak ----------------------------------------------------------------------------

# AMX's tile unit: 1024 bf16 FLOPs per cycle per core, Intel's figure for Sapphire Rapids
# (16 x 32 bf16 by 32 x 16 per TDPBF16PS, 16 cycles); an assumption for later cores too.
AMX_BF16_FLOPS_PER_CYCLE = 1024


@dataclasses.dataclass(frozen=True)
class CpuPeak:
    """A CPU's peak FLOP/s, derived from ``lscpu`` as
    cores x FMA units x fp32 vector lanes x 2 (an FMA is two FLOPs) x clock.

    Attributes:
        model_name: ``Model name``.
        cores: physical cores this process may use: ``Core(s) per socket`` x ``Socket(s)``,
            at most the CPUs it is allowed (as cores: divided by ``Thread(s) per core``,
            since hyperthreads share a core's FMA units).
        clock_ghz: ``CPU max MHz`` (the boost clock: an upper bound, so the share of the
            peak is not flattered), else the ``@ x.xxGHz`` of the model name, else
            ``BogoMIPS`` / 2 (on x86 Linux the TSC's rate, about the base clock: what a VM
            shows when it hides the rest).
        clock_source: which of those gave the clock.
        lanes: fp32 lanes per vector: 16 with ``avx512f``, 8 with ``avx2``/``avx``, else 4.
        fma_units: vector FMAs issued per cycle at that width. Intel: 2 (Xeon Scalable
            Gold 6xxx/Platinum and later; some Silver/Gold 5xxx have 1). AMD family 25
            (Zen 4): 1 at 512 bits (AVX-512 runs as two halves on its two 256-bit FMA
            pipes); family 26 (Zen 5) and later: 2. 2 at 256 bits (Haswell and Zen 2 on).
        bf16_flops_per_cycle: per core. ``amx_bf16``: AMX's tile unit
            (:data:`AMX_BF16_FLOPS_PER_CYCLE`); ``avx512_bf16``: VDPBF16PS multiplies two
            bf16 pairs per fp32 lane at an FMA's rate, twice the fp32 figure; otherwise the
            fp32 figure (bf16 is converted and computed in fp32 at best).
        bf16_source: which of those applied.
    """

    model_name: str
    cores: int
    clock_ghz: float
    clock_source: str
    lanes: int
    fma_units: int
    bf16_flops_per_cycle: int
    bf16_source: str

    @property
    def fp32_flops_per_cycle(self) -> int:
        """fp32 FLOPs per cycle per core."""
        return self.fma_units * self.lanes * 2

    @property
    def fp32(self) -> float:
        """Peak fp32 FLOP/s."""
        return self.cores * self.fp32_flops_per_cycle * self.clock_ghz * 1e9

    @property
    def bf16(self) -> float:
        """Peak bf16 FLOP/s."""
        return self.cores * self.bf16_flops_per_cycle * self.clock_ghz * 1e9

    def for_precision(self, precision: str) -> float | None:
        """The peak for the network's precision (fp16 has no CPU figure: None)."""
        return {"fp32": self.fp32, "bf16": self.bf16}.get(precision)

    def describe(self) -> str:
        """How the peak was derived, on two or three lines."""
        caveat = ""
        if self.clock_source == "BogoMIPS / 2":
            caveat = (
                "\n(the clock is the TSC's rate: cores that boost above it make the share of "
                "the peak read high; BENCH_CPU_GHZ sets the clock)"
            )
        return (
            f"{self.model_name}: {self.cores} cores x {self.fma_units} FMA x {self.lanes} "
            f"fp32 lanes x 2 x {self.clock_ghz:.3f} GHz ({self.clock_source}) = "
            f"{self.fp32 / 1e9:.1f} GFLOP/s fp32\n"
            f"bf16: {self.cores} cores x {self.bf16_flops_per_cycle} FLOP/cycle "
            f"({self.bf16_source}) x {self.clock_ghz:.3f} GHz = {self.bf16 / 1e9:.1f} GFLOP/s"
            + caveat
        )


def _fields(text: str) -> dict[str, str]:
    """``lscpu``'s ``Key: value`` lines (the first of each key)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def _number(fields: dict[str, str], key: str) -> float | None:
    try:
        value = float(fields[key].replace(",", "."))
    except (KeyError, ValueError):
        return None
    return value if value > 0 else None


def parse_lscpu(text: str, usable_cpus: int | None = None) -> CpuPeak:
    """The peak of the CPU that ``lscpu``'s output ``text`` describes.

    Args:
        text: what ``lscpu`` printed (English field names).
        usable_cpus: logical CPUs this process may run on (its affinity); None: all.

    Raises:
        ValueError: a field the formula needs is missing.
    """
    fields = _fields(text)
    flags = set(fields.get("Flags", "").split())
    name = fields.get("Model name", "unknown CPU")
    threads = int(_number(fields, "Thread(s) per core") or 1)
    per_socket = _number(fields, "Core(s) per socket")
    sockets = _number(fields, "Socket(s)") or 1
    logical = _number(fields, "CPU(s)")
    if per_socket is not None:
        cores = int(per_socket * sockets)
    elif logical is not None:
        cores = int(logical) // threads
    else:
        raise ValueError("lscpu names neither Core(s) per socket nor CPU(s)")
    if usable_cpus is not None:
        cores = max(1, min(cores, math.ceil(usable_cpus / threads)))

    max_mhz = _number(fields, "CPU max MHz")
    named = re.search(r"@\s*([\d.]+)\s*GHz", name)
    bogomips = _number(fields, "BogoMIPS")
    if max_mhz is not None:
        clock_ghz, clock_source = max_mhz / 1000, "CPU max MHz"
    elif named is not None:
        clock_ghz, clock_source = float(named.group(1)), "model name"
    elif bogomips is not None:
        clock_ghz, clock_source = bogomips / 2000, "BogoMIPS / 2"
    else:
        raise ValueError("lscpu gives no clock: no CPU max MHz, GHz in the name or BogoMIPS")

    amd = fields.get("Vendor ID") == "AuthenticAMD"
    family = int(_number(fields, "CPU family") or 0)
    if "avx512f" in flags:
        lanes = 16
        fma_units = 1 if amd and family <= 25 else 2
    elif "avx2" in flags or "avx" in flags:
        lanes, fma_units = 8, 2 if "fma" in flags else 1
    else:
        lanes, fma_units = 4, 1
    fp32_per_cycle = fma_units * lanes * 2
    if "amx_bf16" in flags:
        bf16_per_cycle, bf16_source = AMX_BF16_FLOPS_PER_CYCLE, "amx_bf16: AMX tiles"
    elif "avx512_bf16" in flags:
        bf16_per_cycle, bf16_source = 2 * fp32_per_cycle, "avx512_bf16: 2 x fp32"
    else:
        bf16_per_cycle, bf16_source = fp32_per_cycle, "no native bf16: the fp32 rate"
    return CpuPeak(
        model_name=name,
        cores=cores,
        clock_ghz=clock_ghz,
        clock_source=clock_source,
        lanes=lanes,
        fma_units=fma_units,
        bf16_flops_per_cycle=bf16_per_cycle,
        bf16_source=bf16_source,
    )


def cpu_peak(lscpu_text: str | None = None) -> CpuPeak | None:
    """This machine's peak (``lscpu`` run in the C locale, for its English field names),
    for the CPUs this process may use; None when ``lscpu`` is missing or says too little.

    ``BENCH_CPU_GHZ`` in the environment replaces the clock ``lscpu`` gives (a VM that
    shows only the TSC's rate, while its cores boost above it)."""
    if lscpu_text is None:
        try:
            lscpu_text = subprocess.run(
                ["lscpu"],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "LC_ALL": "C"},
            ).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        peak = parse_lscpu(lscpu_text, usable)
    except ValueError:
        return None
    given = os.environ.get("BENCH_CPU_GHZ")
    if given:
        peak = dataclasses.replace(peak, clock_ghz=float(given), clock_source="BENCH_CPU_GHZ")
    return peak


@dataclasses.dataclass(frozen=True)
class Throughput:
    """What a timed run achieved.

    Attributes:
        flops: the work counted.
        seconds: the time it took.
        flop_per_s: ``flops / seconds``.
        share_of_peak: of the peak for the run's precision (0..1), or None when there is
            no peak for it (no lscpu, fp16, not a CPU run).
    """

    flops: float
    seconds: float
    flop_per_s: float
    share_of_peak: float | None

    def cells(self) -> tuple[str, str]:
        """The two report columns: GFLOP/s, and % of the peak ("" when unknown)."""
        share = "" if self.share_of_peak is None else f"{self.share_of_peak:.1%}"
        return f"{self.flop_per_s / 1e9:.1f}", share


def throughput(flops: float, seconds: float, precision: str, peak: CpuPeak | None) -> Throughput:
    """``flops`` of work done in ``seconds`` as FLOP/s, and as a share of ``peak`` at
    ``precision`` (``fp32`` or ``bf16``; the share is None for another or without a peak)."""
    rate = flops / seconds if seconds > 0 else 0.0
    limit = peak.for_precision(precision) if peak is not None else None
    return Throughput(flops, seconds, rate, rate / limit if limit else None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["pretrained", "tiny"], default="pretrained")
    parser.add_argument("--lscpu", type=Path, default=None, help="lscpu output to read")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    print("| shape | chunk (s) | GFLOP per chunk | of which attention | GFLOP per s of audio |")
    print("| --- | ---: | ---: | ---: | ---: |")
    per_chunk: dict[str, int] = {}
    for label, model in published_shapes(args.size).items():
        by_op = forward_flops(model)
        total = sum(by_op.values())
        per_chunk[label] = total
        attention = sum(v for op, v in by_op.items() if "attention" in op)
        seconds = segment_samples(model) / SAMPLERATE
        per_audio_s = total / ((1 - OVERLAP) * seconds)
        print(
            f"| {label} | {seconds:.2f} | {total / 1e9:.2f} | {attention / total:.1%} "
            f"| {per_audio_s / 1e9:.2f} |"
        )
    four, six = per_chunk.values()
    print()
    print("per chunk position, the passes of:")
    for request, flops in (
        ("our six-track request (A's drums, bass, vocals sub-models + B)", 3 * four + six),
        ("our vocals-only request (A's vocals sub-model)", four),
        ("plain demucs, A then B (A's four sub-models + B)", 4 * four + six),
    ):
        print(f"  {request}: {flops / 1e9:.1f} GFLOP")
    lscpu_text = args.lscpu.read_text() if args.lscpu else None
    peak = cpu_peak(lscpu_text)
    print()
    print(peak.describe() if peak else "peak unknown: no usable lscpu output")
    return 0


if __name__ == "__main__":
    sys.exit(main())
