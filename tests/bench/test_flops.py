"""bench/flops.py: the FLOP count of a forward pass (tiny models), the work counter over a
real separation, and the peak derived from canned ``lscpu`` outputs."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from demucs.htdemucs import HTDemucs

from separation.random_models import FOUR_SOURCES, TINY_KWARGS
from tests.bench.conftest import load_bench_script
from tests.separation.conftest import audio_of
from tests.support.audio import music_like
from tests.support.separators import make_separator

# This development machine's lscpu (a KVM guest on AMD Zen 4: family 25, AVX-512 with BF16,
# the clock hidden but for BogoMIPS).
ZEN4_VM = """\
Architecture:                            x86_64
CPU(s):                                  2
On-line CPU(s) list:                     0,1
Vendor ID:                               AuthenticAMD
Model name:                              AMD EPYC
CPU family:                              25
Model:                                   17
Thread(s) per core:                      1
Core(s) per socket:                      2
Socket(s):                               1
Stepping:                                1
BogoMIPS:                                5192.27
Flags:                                   fpu sse sse2 avx fma avx2 avx512f avx512dq \
avx512bw avx512vl avx512_bf16 avx512_vnni
Hypervisor vendor:                       KVM
"""

# A two-socket Sapphire Rapids server: AMX, hyperthreads, a max clock.
SAPPHIRE_RAPIDS = """\
Architecture:             x86_64
CPU(s):                   224
Vendor ID:                GenuineIntel
  Model name:             Intel(R) Xeon(R) Platinum 8480+
    CPU family:           6
    Model:                143
    Thread(s) per core:   2
    Core(s) per socket:   56
    Socket(s):            2
    CPU max MHz:          3800.0000
    CPU min MHz:          800.0000
    BogoMIPS:             4000.00
    Flags:                fpu sse sse2 avx fma avx2 avx512f avx512_bf16 amx_bf16 amx_tile
"""

# An AVX2 desktop whose lscpu gives the clock only in the model name.
HASWELL = """\
CPU(s):                8
Vendor ID:             GenuineIntel
Model name:            Intel(R) Core(TM) i7-4770 CPU @ 3.40GHz
Thread(s) per core:    2
Core(s) per socket:    4
Socket(s):             1
Flags:                 fpu sse sse2 avx fma avx2
"""


@pytest.fixture(scope="module")
def flops() -> ModuleType:
    """``bench/flops.py``."""
    return load_bench_script("flops")


def tiny(seconds: int, **kwargs: Any) -> HTDemucs:
    """A tiny 4-source HTDemucs whose chunk (training segment) is ``seconds`` long."""
    return HTDemucs(FOUR_SOURCES, **{**TINY_KWARGS, "segment": Fraction(seconds), **kwargs}).eval()


def test_flops_are_positive_and_grow_with_the_chunk(flops: ModuleType) -> None:
    # Without the transformer the network is convolutions only: linear in the length.
    short, long = (flops.chunk_flops(tiny(s, t_layers=0)) for s in (2, 4))
    assert short > 0
    assert long / short == pytest.approx(2.0, rel=0.02)
    # Attention is quadratic in the length: the whole network grows between 2x and 4x.
    short_by_op, long_by_op = (flops.forward_flops(tiny(s)) for s in (2, 4))
    attention = "aten._scaled_dot_product_flash_attention_for_cpu"
    assert short_by_op[attention] > 0, "SDPA's CPU kernel is counted"
    assert long_by_op[attention] / short_by_op[attention] == pytest.approx(4.0, rel=0.05)
    ratio = sum(long_by_op.values()) / sum(short_by_op.values())
    assert 2.0 < ratio < 4.0


def test_flops_of_a_batch_are_its_chunks(flops: ModuleType) -> None:
    model = tiny(2)
    assert sum(flops.forward_flops(model, batch=3).values()) == 3 * flops.chunk_flops(model)


def test_work_counter_counts_the_chunks_a_separation_runs(
    flops: ModuleType, model_repo: Path
) -> None:
    separator = make_separator(model_repo, batch_size=2)
    # 14 s: three 7.8 s chunks (a chunk every 5.85 s) in one pass of A's vocals sub-model.
    with flops.WorkCounter() as work:
        separator.separate(audio_of(music_like(14.0, seed=1)), ["vocals"])
    assert list(work.chunks.values()) == [3]
    per_chunk = flops.chunk_flops(HTDemucs(FOUR_SOURCES, **TINY_KWARGS).eval())
    assert work.flops() == 3 * per_chunk
    with flops.WorkCounter() as idle:
        pass
    assert idle.flops() == 0


def test_peak_of_a_zen4_vm_from_bogomips(flops: ModuleType) -> None:
    peak = flops.parse_lscpu(ZEN4_VM)
    assert (peak.cores, peak.lanes, peak.fma_units) == (2, 16, 1)
    assert peak.clock_source == "BogoMIPS / 2"
    assert peak.clock_ghz == pytest.approx(5192.27 / 2000)
    assert peak.fp32 == pytest.approx(2 * 1 * 16 * 2 * 5192.27e6 / 2)
    assert peak.bf16 == pytest.approx(2 * peak.fp32)  # AVX-512 BF16: twice fp32
    assert "BogoMIPS" in peak.describe()


def test_peak_of_a_sapphire_rapids_server_with_amx(flops: ModuleType) -> None:
    peak = flops.parse_lscpu(SAPPHIRE_RAPIDS)
    assert (peak.model_name, peak.cores, peak.fma_units) == (
        "Intel(R) Xeon(R) Platinum 8480+",
        112,
        2,
    )
    assert (peak.clock_ghz, peak.clock_source) == (3.8, "CPU max MHz")
    assert peak.fp32 == pytest.approx(112 * 2 * 16 * 2 * 3.8e9)
    assert peak.bf16 == pytest.approx(112 * 1024 * 3.8e9)
    # Eight hyperthreads allowed: four cores' FMA units.
    assert flops.parse_lscpu(SAPPHIRE_RAPIDS, usable_cpus=8).cores == 4


def test_peak_of_an_avx2_desktop_from_its_model_name(flops: ModuleType) -> None:
    peak = flops.parse_lscpu(HASWELL)
    assert (peak.cores, peak.lanes, peak.fma_units, peak.clock_ghz) == (4, 8, 2, 3.4)
    assert peak.fp32 == pytest.approx(4 * 2 * 8 * 2 * 3.4e9)
    assert peak.bf16 == peak.fp32  # no native bf16
    with pytest.raises(ValueError, match="clock"):
        flops.parse_lscpu(HASWELL.replace("@ 3.40GHz", ""))


def test_throughput_against_the_peak_of_its_precision(flops: ModuleType) -> None:
    peak = flops.parse_lscpu(ZEN4_VM)
    fp32 = flops.throughput(2e12, 20.0, "fp32", peak)
    assert fp32.flop_per_s == pytest.approx(1e11)
    assert fp32.share_of_peak == pytest.approx(1e11 / peak.fp32)
    bf16 = flops.throughput(2e12, 20.0, "bf16", peak)
    assert bf16.share_of_peak == pytest.approx(fp32.share_of_peak / 2)
    assert bf16.cells() == ("100.0", f"{1e11 / peak.bf16:.1%}")
    assert flops.throughput(2e12, 20.0, "fp16", peak).share_of_peak is None
    assert flops.throughput(2e12, 20.0, "fp32", None).cells() == ("100.0", "")
