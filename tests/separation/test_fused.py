"""HTDemucs's layers with their gates split and their GELUs fused (separation/fused.py):
demucs's estimates; the fused calls taken only where they were measured (channels-last
weights on the CPU, nothing between the product and its activation)."""

from __future__ import annotations

import copy

import pytest
import torch
from demucs.hdemucs import HDecLayer, HEncLayer
from demucs.htdemucs import HTDemucs
from demucs.transformer import CrossTransformerEncoderLayer, MyTransformerEncoderLayer

from separation.fused import conv_gelu, gated, linear_gelu, use_fused_layers
from separation.random_models import FOUR_SOURCES, TINY_KWARGS
from tests.separation.conftest import TorchCalls, tiny_network
from tests.support.audio import music_like


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-network"])
def test_fused_layers_give_demucs_estimates(bf16: bool) -> None:
    reference = tiny_network(7, bf16)
    split = copy.deepcopy(reference)
    kinds = (HEncLayer, HDecLayer, MyTransformerEncoderLayer, CrossTransformerEncoderLayer)
    layers = sum(type(m) in kinds for m in reference.modules())
    # Encoder and decoder layers of both branches, and a transformer layer per branch.
    assert layers == 4 * TINY_KWARGS["depth"] + 2 * TINY_KWARGS["t_layers"]
    assert use_fused_layers(split) == layers
    assert use_fused_layers(split) == 0, "switched layers are not switched again"
    assert split.state_dict().keys() == reference.state_dict().keys()
    mix = torch.from_numpy(music_like(7.8, seed=22)).unsqueeze(0)

    with torch.inference_mode():
        plain_calls, fused_calls = TorchCalls(), TorchCalls()
        with plain_calls:
            expected = reference(mix)
        with fused_calls:
            got = split(mix)
    depth = TINY_KWARGS["depth"]
    # The frequency branch's rewrites (an encoder's and a decoder's per depth), whose
    # channels-last weights give channels-last outputs, take the halves; the time
    # branch's 1-D ones, contiguous, keep their GLU.
    assert plain_calls["glu"] - fused_calls["glu"] == 2 * depth
    # GELUs in oneDNN's calls: each frequency encoder's, each frequency decoder's but the
    # last one's (it has none), and each transformer layer's feed-forward one.
    fused_gelus = depth + depth - 1 + 2 * TINY_KWARGS["t_layers"]
    assert plain_calls["gelu"] - fused_calls["gelu"] == fused_gelus
    scale = expected.abs().max().item()
    # fp32: the same products, other kernels. bf16: the sigmoid and the product each round;
    # the GELUs round once where demucs rounds the product, then the GELU.
    assert (got - expected).abs().max().item() <= (1e-5 if not bf16 else 2e-2) * scale


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
        counted = TorchCalls()
        with counted:
            got = gated(conv, identity, x)
        assert counted["glu"] == 0
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
        counted = TorchCalls()
        with counted:
            got = gated(conv, norm, x)
        assert counted["glu"] == 1
        torch.testing.assert_close(got, torch.nn.functional.glu(norm(conv(x)), dim=1))


def test_a_convolution_and_its_gelu_are_one_call() -> None:
    torch.manual_seed(10)
    x = torch.randn(1, 8, 12, 20)
    for conv in (
        torch.nn.Conv2d(8, 16, (8, 1), (4, 1), (2, 0)),
        torch.nn.ConvTranspose2d(8, 16, (8, 1), (4, 1)),
    ):
        conv.to(memory_format=torch.channels_last)
        with torch.inference_mode():
            counted = TorchCalls()
            with counted:
                got = conv_gelu(conv, x)
            assert counted["gelu"] == 0
            torch.testing.assert_close(got, torch.nn.functional.gelu(conv(x)), rtol=0, atol=1e-5)
            assert got.is_contiguous(memory_format=torch.channels_last)


def test_a_linear_and_its_gelu_are_one_call() -> None:
    torch.manual_seed(11)
    linear = torch.nn.Linear(16, 64)
    x = torch.randn(1, 30, 16)
    gelu = torch.nn.functional.gelu
    with torch.inference_mode():
        counted = TorchCalls()
        with counted:
            got = linear_gelu(linear, gelu, x)
        assert counted["gelu"] == 0
        torch.testing.assert_close(got, gelu(linear(x)), rtol=0, atol=1e-5)
        # Another activation is demucs's computation.
        relu = torch.nn.functional.relu
        torch.testing.assert_close(linear_gelu(linear, relu, x), relu(linear(x)))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_passes_fuse_the_layers_in_bf16_only(precision: str) -> None:
    from separation.ensemble import place_sub_model

    model = place_sub_model(HTDemucs(FOUR_SOURCES, **TINY_KWARGS), torch.device("cpu"), precision)
    kinds = {type(m).__name__ for m in model.modules()}
    # The tiny shape's one transformer layer per branch is a self-attention one.
    fused = {"FusedEncLayer", "FusedDecLayer", "FusedTransformerEncoderLayer"}
    plain = {"HEncLayer", "HDecLayer", "MyTransformerEncoderLayer"}
    if precision == "bf16":
        assert fused <= kinds and not plain & kinds
    else:
        assert plain <= kinds and not fused & kinds
