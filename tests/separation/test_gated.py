"""The frequency branch's gated convolutions as two halves (separation/gated.py): demucs's
estimates, the halves taken only where the activation is channels-last and nothing sits
between the convolution and its GLU."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from demucs.hdemucs import HDecLayer, HEncLayer
from demucs.htdemucs import HTDemucs
from torch.overrides import TorchFunctionMode

from separation.bf16 import run_network_in_bf16
from separation.gated import gated, use_split_gates
from separation.random_models import FOUR_SOURCES, TINY_KWARGS
from tests.support.audio import music_like


class _Glus(TorchFunctionMode):
    """Counts the GLUs a computation runs."""

    def __init__(self) -> None:
        super().__init__()
        self.glus = 0

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        if getattr(func, "__name__", "") == "glu":
            self.glus += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-network"])
def test_split_gates_give_demucs_estimates(bf16: bool) -> None:
    torch.manual_seed(7)
    reference = HTDemucs(FOUR_SOURCES, **TINY_KWARGS).eval()
    reference.to(memory_format=torch.channels_last)  # as the passes place it on CPU
    if bf16:
        run_network_in_bf16(reference)
    split = copy.deepcopy(reference)
    layers = sum(type(m) in (HEncLayer, HDecLayer) for m in reference.modules())
    assert layers == 4 * TINY_KWARGS["depth"]  # encoder and decoder, both branches
    assert use_split_gates(split) == layers
    assert use_split_gates(split) == 0, "switched layers are not switched again"
    assert split.state_dict().keys() == reference.state_dict().keys()
    mix = torch.from_numpy(music_like(7.8, seed=22)).unsqueeze(0)

    with torch.inference_mode():
        plain_glus, split_glus = _Glus(), _Glus()
        with plain_glus:
            expected = reference(mix)
        with split_glus:
            got = split(mix)
    # The frequency branch's rewrites (an encoder's and a decoder's per depth), whose
    # channels-last weights give channels-last outputs, take the halves; the time
    # branch's 1-D ones, contiguous, keep their GLU.
    assert plain_glus.glus - split_glus.glus == 2 * TINY_KWARGS["depth"]
    scale = expected.abs().max().item()
    # fp32: the same products, other kernels. bf16: the sigmoid and the product each round.
    assert (got - expected).abs().max().item() <= (1e-6 if not bf16 else 2e-2) * scale


@pytest.mark.parametrize("layout", ["channels-last", "contiguous", "permuted"])
def test_a_gate_is_the_glu_of_the_convolution(layout: str) -> None:
    torch.manual_seed(8)
    conv = torch.nn.Conv2d(8, 16, 3, 1, 1).to(memory_format=torch.channels_last)
    x = torch.randn(1, 8, 12, 20)
    if layout == "channels-last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":  # as an encoder's lean residual branch hands it on
        x = x.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    identity = torch.nn.Identity()
    with torch.inference_mode():
        expected = torch.nn.functional.glu(conv(x), dim=1)
        counted = _Glus()
        with counted:
            got = gated(conv, identity, x)
        assert counted.glus == 0
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
        assert got.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("case", ["contiguous-weights", "norm", "conv1d"])
def test_other_gates_keep_demucs_glu(case: str) -> None:
    torch.manual_seed(9)
    conv: torch.nn.Module = torch.nn.Conv2d(8, 16, 3, 1, 1).to(memory_format=torch.channels_last)
    norm: torch.nn.Module = torch.nn.Identity()
    x = torch.randn(1, 8, 12, 20).to(memory_format=torch.channels_last)
    if case == "contiguous-weights":
        conv = torch.nn.Conv2d(8, 16, 3, 1, 1)
    elif case == "norm":
        norm = torch.nn.GroupNorm(4, 16)
    else:
        conv, x = torch.nn.Conv1d(8, 16, 1), torch.randn(1, 8, 20)
    with torch.inference_mode():
        counted = _Glus()
        with counted:
            got = gated(conv, norm, x)
        assert counted.glus == 1
        torch.testing.assert_close(got, torch.nn.functional.glu(norm(conv(x)), dim=1))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_passes_split_the_gates_in_bf16_only(precision: str) -> None:
    from separation.ensemble import place_sub_model

    model = place_sub_model(HTDemucs(FOUR_SOURCES, **TINY_KWARGS), torch.device("cpu"), precision)
    kinds = {type(m).__name__ for m in model.modules()}
    if precision == "bf16":
        assert {"SplitGateEncLayer", "SplitGateDecLayer"} <= kinds
        assert not {"HEncLayer", "HDecLayer"} & kinds
    else:
        assert {"HEncLayer", "HDecLayer"} <= kinds and "SplitGateEncLayer" not in kinds
