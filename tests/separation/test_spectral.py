"""The lean mask and inverse spectrogram (separation/spectral.py): demucs's samples, one
source's inverse transform at a time."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from demucs.htdemucs import HTDemucs
from torch import nn
from torch.overrides import TorchFunctionMode

from separation import EnsembleSeparator
from separation.bf16 import run_network_in_bf16
from separation.random_models import FOUR_SOURCES, SIX_SOURCES, TINY_KWARGS
from separation.spectral import use_lean_ispec
from tests.separation.conftest import audio_of
from tests.support.audio import music_like


class _InverseCalls(TorchFunctionMode):
    """Records how many signals each ``torch.istft`` call inverts at once."""

    def __init__(self) -> None:
        super().__init__()
        self.signals: list[int] = []

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if func is torch.istft:
            self.signals.append(int(args[0].shape[0]))
        return func(*args, **(kwargs or {}))


def _run(model: nn.Module, mix: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    calls = _InverseCalls()
    with torch.no_grad(), calls:
        out = model(mix)
    return out, calls.signals


@pytest.mark.parametrize("sources", [FOUR_SOURCES, SIX_SOURCES], ids=["4-source", "6-source"])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-network"])
def test_lean_inverse_gives_demucs_samples_one_source_at_a_time(
    sources: list[str], bf16: bool
) -> None:
    torch.manual_seed(3)
    reference = HTDemucs(sources, **TINY_KWARGS).eval()
    if bf16:
        run_network_in_bf16(reference)
    lean = copy.deepcopy(reference)
    assert use_lean_ispec(lean)
    assert use_lean_ispec(lean), "an already switched model stays switched"
    assert isinstance(lean, HTDemucs) and type(lean) is not HTDemucs
    assert lean.state_dict().keys() == reference.state_dict().keys()
    mix = torch.from_numpy(music_like(7.0)).unsqueeze(0)

    want, want_signals = _run(reference, mix)
    got, got_signals = _run(lean, mix)

    assert want_signals == [2 * len(sources)], "demucs inverts every source in one call"
    assert got_signals == [2] * len(sources), "one source (two channels) per call"
    assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
    assert torch.equal(got, want), "each signal's inverse is its own: bit-equal"


def test_a_model_without_complex_as_channels_keeps_demucs_mask() -> None:
    torch.manual_seed(4)
    reference = HTDemucs(FOUR_SOURCES, **{**TINY_KWARGS, "cac": False}).eval()
    lean = copy.deepcopy(reference)
    assert use_lean_ispec(lean)
    mix = torch.from_numpy(music_like(7.0)).unsqueeze(0)
    want, _ = _run(reference, mix)
    got, got_signals = _run(lean, mix)
    assert got_signals == [2] * len(FOUR_SOURCES)
    assert torch.equal(got, want)


def test_only_an_htdemucs_is_switched() -> None:
    linear = nn.Linear(2, 2)
    assert not use_lean_ispec(linear)
    assert type(linear) is nn.Linear


def test_cpu_separator_places_its_networks_with_the_lean_inverse(
    separator: EnsembleSeparator,
) -> None:
    calls = _InverseCalls()
    with calls:
        separator.separate(audio_of(music_like(2.0)), ["vocals", "guitar"])
    assert calls.signals, "the passes ran"
    assert set(calls.signals) == {2}, "every inverse transform took one source"
