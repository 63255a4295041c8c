"""How the network passes run: chunks batched into one forward pass, and autocast precision
(bf16 on CPU here), over tiny random models; which precision ``auto`` means where."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.overrides import TorchFunctionMode

from common.settings import Settings
from separation import (
    SOURCES,
    Audio,
    EnsembleSeparator,
    SeparatorConfig,
    decode_audio,
)
from separation.attention import cpu_bf16_attention
from separation.cpu import cpu_flags, has_native_bf16
from separation.ensemble import _ACTIVATION_BYTES_PER_SAMPLE, resolve_precision
from tests.conftest import MUSIC_EXCERPTS
from tests.separation.conftest import audio_of
from tests.separation.test_ensemble import assert_tracks_sum_to_mix
from tests.support.audio import music_like
from tests.support.separators import make_separator

# bf16 estimates of the music excerpts against fp32 ones: the lowest per-track SDR measured
# was 49.5 dB with the tiny random models under autocast, 50.1 dB with the network held in
# bf16 and the blocked attention (46 dB with the published shapes under autocast); the bound
# leaves a margin for other CPUs' bf16 kernels.
MIN_BF16_SDR_DB = 35.0

# /proc/cpuinfo of a few machines (two processors each, flags cut short).
ZEN4_CPUINFO = "".join(
    f"processor\t: {n}\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 fma avx512f "
    "avx512bw avx512_bf16 avx512_vnni\n\n"
    for n in range(2)
)
SAPPHIRE_RAPIDS_CPUINFO = "".join(
    f"processor\t: {n}\nflags\t\t: fpu sse2 avx2 avx512f amx_bf16 amx_tile amx_int8\n\n"
    for n in range(2)
)
SKYLAKE_CPUINFO = "".join(
    f"processor\t: {n}\nflags\t\t: fpu sse2 avx2 fma avx512f avx512bw avx512_vnni\n\n"
    for n in range(2)
)
# An ARM server: its bf16 is a "Features" entry, not read (not measured here).
GRAVITON3_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n\n"


def _excerpt(path: Path, seconds: float) -> Audio:
    """The excerpt's mix, repeated to ``seconds`` so a pass has several chunks."""
    audio = decode_audio(path)
    n = round(seconds * 44100)
    reps = -(-n // audio.samples.shape[1])
    return audio_of(np.ascontiguousarray(np.tile(audio.samples, (1, reps))[:, :n]))


def _sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = float(np.sum((reference - estimate) ** 2.0, dtype=np.float64))
    signal = float(np.sum(reference**2.0, dtype=np.float64))
    return 10.0 * np.log10(max(signal, 1e-20) / max(noise, 1e-20))


# One excerpt (the first real one when the shared test data is there): batching is the same
# code on every song, and each excerpt costs 32 chunk passes at 20 s.
@pytest.mark.parametrize("multitrack_song", MUSIC_EXCERPTS[:2][-1:], indirect=True)
def test_batched_passes_equal_batch_one(model_repo: Path, multitrack_song: Path) -> None:
    # 20 s: four chunks per pass, so batch 3 has a full batch and a ragged one.
    audio = _excerpt(multitrack_song, 20.0)
    # fp32 (as make_separator's default, named here): bf16 batches differ by more than 1e-5.
    one = make_separator(model_repo, batch_size=1, precision="fp32").separate(audio, SOURCES)
    three = make_separator(model_repo, batch_size=3, precision="fp32").separate(audio, SOURCES)
    assert list(three) == list(one)
    for name in one:
        np.testing.assert_allclose(three[name], one[name], rtol=0, atol=1e-5, err_msg=name)
    assert_tracks_sum_to_mix(three, audio)


def test_batches_report_progress_per_chunk(model_repo: Path) -> None:
    separator = make_separator(model_repo, batch_size=4)
    audio = audio_of(music_like(14.0, seed=3))  # three chunks per pass: one batch
    seen: list[float] = []
    separator.separate(audio, ["vocals", "guitar"], progress=seen.append)
    assert seen == sorted(seen)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert len(seen) == 2 + 2 * 3  # start, 2 passes x 3 chunks, end


# One excerpt, as above: the precision is the same code on every song, and the bound stays
# 14 dB under the lowest figure measured on any of the excerpts.
@pytest.mark.parametrize("multitrack_song", MUSIC_EXCERPTS[:2][-1:], indirect=True)
def test_bf16_estimates_stay_close_to_fp32(model_repo: Path, multitrack_song: Path) -> None:
    audio = decode_audio(multitrack_song)
    fp32 = make_separator(model_repo, precision="fp32").separate(audio, SOURCES)
    bf16_separator = make_separator(model_repo, precision="bf16")
    assert bf16_separator.precision == "bf16"
    bf16 = bf16_separator.separate(audio, SOURCES)
    # The residual track closes the sum whatever the network's precision.
    assert_tracks_sum_to_mix(bf16, audio)
    sdrs = {name: _sdr_db(fp32[name], bf16[name]) for name in fp32}
    assert min(sdrs.values()) > MIN_BF16_SDR_DB, sdrs
    assert any(not np.array_equal(fp32[name], bf16[name]) for name in fp32)  # autocast ran


_SPECTRAL = {torch.stft: "stft", torch.istft: "istft", torch.view_as_complex: "complex"}


class _DtypeLog(TorchFunctionMode):
    """Records the dtypes the model code hands to the spectral ops (before autocast's
    casts, so what holds here holds on CUDA too), and what convolutions return."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, set[torch.dtype]] = {}

    def __torch_function__(
        self,
        func: Callable[..., Any],
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        result = func(*args, **(kwargs or {}))
        name = _SPECTRAL.get(func)
        if name is not None:
            self.seen.setdefault(name, set()).add(args[0].dtype)
        elif func in (torch.nn.functional.conv1d, torch.nn.functional.conv2d):
            self.seen.setdefault("conv", set()).add(result.dtype)
        return result


def test_bf16_runs_the_network_in_bf16_and_the_spectral_ops_in_float32(
    model_repo: Path,
) -> None:
    separator = make_separator(model_repo, precision="bf16")
    log = _DtypeLog()
    with log:
        separator.separate(audio_of(music_like(2.0)), ["guitar"])
    assert log.seen["conv"] == {torch.bfloat16}
    assert log.seen["stft"] == {torch.float32}
    assert log.seen["complex"] == {torch.float32}
    assert log.seen["istft"] == {torch.complex64}


def test_fp32_attention_runs_through_the_fused_sdpa_kernel(model_repo: Path) -> None:
    fastpath_before = torch.backends.mha.get_fastpath_enabled()
    separator = make_separator(model_repo)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        separator.separate(audio_of(music_like(2.0)), ["vocals"])
    ops = {event.key for event in profile.key_averages()}
    assert "aten::_native_multi_head_attention" not in ops, "the fast path's unfused kernel"
    assert "aten::scaled_dot_product_attention" in ops
    assert torch.backends.mha.get_fastpath_enabled() is fastpath_before, "no process setting"


def test_auto_precision_is_bf16_where_the_device_computes_it_natively(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu, native_cpu_bf16=True) == "bf16"
    assert resolve_precision("auto", cpu, native_cpu_bf16=False) == "fp32"
    # Named precisions are kept: bf16 emulated where asked, fp32 where bf16 is native.
    assert resolve_precision("bf16", cpu, native_cpu_bf16=False) == "bf16"
    assert resolve_precision("fp32", cpu, native_cpu_bf16=True) == "fp32"
    # Without the argument, this machine's flags decide.
    assert resolve_precision("auto", cpu) == ("bf16" if has_native_bf16() else "fp32")
    assert resolve_precision("auto", torch.device("mps"), native_cpu_bf16=True) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_: True)
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_precision("fp16", torch.device("cuda:1")) == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_: False)
    assert resolve_precision("auto", torch.device("cuda")) == "fp32"
    with pytest.raises(ValueError, match="bf16"):
        resolve_precision("bf16", torch.device("cuda"))


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [
        (ZEN4_CPUINFO, True),
        (SAPPHIRE_RAPIDS_CPUINFO, True),
        (SKYLAKE_CPUINFO, False),
        (GRAVITON3_CPUINFO, False),
        ("", False),
    ],
    ids=["avx512_bf16", "amx_bf16", "avx512-without-bf16", "arm", "empty"],
)
def test_native_bf16_is_read_from_the_cpuinfo_flags(cpuinfo: str, native: bool) -> None:
    assert has_native_bf16(cpuinfo) is native


@pytest.mark.parametrize(
    ("cpuinfo", "kernel"),
    [(ZEN4_CPUINFO, "blocked"), (SAPPHIRE_RAPIDS_CPUINFO, "sdpa"), ("", "blocked")],
    ids=["avx512_bf16", "amx_bf16", "empty"],
)
def test_bf16_attention_takes_sdpa_only_on_amx(cpuinfo: str, kernel: str) -> None:
    assert cpu_bf16_attention(cpuinfo) == kernel


def test_a_flag_counts_only_when_every_processor_has_it() -> None:
    mixed = ZEN4_CPUINFO + SKYLAKE_CPUINFO.replace("processor\t: 0", "processor\t: 2")
    assert "avx512_bf16" not in cpu_flags(mixed)
    assert not has_native_bf16(mixed)
    assert "avx512f" in cpu_flags(mixed)


def test_auto_on_this_cpu_follows_its_flags_and_the_tracks_sum_to_the_mix(
    model_repo: Path,
) -> None:
    separator = make_separator(model_repo, precision="auto")
    assert separator.precision == ("bf16" if has_native_bf16() else "fp32")
    audio = audio_of(music_like(9.0, seed=4))  # two chunks per pass
    assert_tracks_sum_to_mix(separator.separate(audio, SOURCES), audio)


@pytest.mark.parametrize(
    "bad",
    [{"precision": "fp16", "device": "cpu"}, {"precision": "fp8"}, {"batch_size": -1}],
)
def test_bad_batch_or_precision_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        SeparatorConfig(**bad)


def test_fp16_on_a_cpu_that_auto_picked_is_refused() -> None:
    if torch.cuda.is_available() or torch.backends.mps.is_available():
        pytest.skip("auto picks an accelerator here")
    with pytest.raises(ValueError, match="fp16"):
        EnsembleSeparator(SeparatorConfig(device="auto", precision="fp16"))


@pytest.mark.usefixtures("bare_environment")
def test_settings_pass_batch_size_and_precision_through() -> None:
    config = Settings(_env_file=None, batch_size=4, precision="bf16").separator_config()
    assert (config.batch_size, config.precision) == (4, "bf16")
    defaults = Settings(_env_file=None).separator_config()
    assert (defaults.batch_size, defaults.precision) == (0, "auto")
    with pytest.raises(ValidationError, match="fp16"):
        Settings(_env_file=None, device="cpu", precision="fp16")


def test_auto_batch_fits_half_the_free_cuda_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_: True)
    separator = EnsembleSeparator(SeparatorConfig(device="cuda"))
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *_: (10 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *_: 2 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda *_: 0)
    segment = 343_980  # 7.8 s
    per_chunk = _ACTIVATION_BYTES_PER_SAMPLE * segment
    assert separator.batch_size(segment) == (6 * gib) // per_chunk
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *_: (0, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *_: 0)
    assert separator.batch_size(segment) == 1
    assert make_separator(Path("models"), batch_size=5).batch_size(segment) == 5
