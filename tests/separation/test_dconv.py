"""The residual branches in the CPU's layout (separation/dconv.py): demucs's estimates,
each DConv's input made contiguous once, its 1x1 convolutions one matrix product and its
scaled sums one pass."""

from __future__ import annotations

import copy

import pytest
import torch
from demucs.demucs import DConv
from demucs.htdemucs import HTDemucs

from separation.dconv import (
    _is_pointwise,
    use_lean_dconv,
    use_pointwise_products,
    use_unfolded_products,
)
from separation.random_models import FOUR_SOURCES, TINY_KWARGS
from tests.separation.conftest import TorchCalls, tiny_network
from tests.support.audio import music_like


def _forward(model: torch.nn.Module, mix: torch.Tensor) -> tuple[torch.Tensor, TorchCalls]:
    with torch.inference_mode(), TorchCalls() as calls:
        out = model(mix)
    return out, calls


def _estimates_match(
    reference: torch.nn.Module, lean: torch.nn.Module, bf16: bool, seed: int
) -> tuple[TorchCalls, TorchCalls]:
    """Both networks' estimates of one chunk of music agree within float rounding (the same
    products summed in another order; bf16 rounds each product's sum once, as the
    convolution does); the torch calls of each pass, reference's first."""
    mix = torch.from_numpy(music_like(7.8, seed=seed)).unsqueeze(0)
    expected, plain_calls = _forward(reference, mix)
    got, lean_calls = _forward(lean, mix)
    scale = expected.abs().max().item()
    assert (got - expected).abs().max().item() <= (1e-6 if not bf16 else 1e-2) * scale
    return plain_calls, lean_calls


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-network"])
def test_lean_residual_branches_give_demucs_estimates(bf16: bool) -> None:
    reference = tiny_network(5, bf16)
    lean = copy.deepcopy(reference)
    branches = sum(type(m) is DConv for m in reference.modules())
    assert branches > 0
    assert use_lean_dconv(lean) == branches
    assert use_lean_dconv(lean) == 0, "switched branches are not switched again"
    assert lean.state_dict().keys() == reference.state_dict().keys()
    # The scaled sums round once where demucs rounds the scaled branch and then the sum.
    plain_calls, lean_calls = _estimates_match(reference, lean, bf16, seed=21)
    # Each branch's 1x1 convolution is one bmm instead of a conv1d, and each layer's scaled
    # sum one addcmul.
    layers = branches * TINY_KWARGS["dconv_depth"]
    assert lean_calls["bmm"] == layers
    assert lean_calls["addcmul"] == layers
    assert plain_calls["bmm"] == plain_calls["addcmul"] == 0


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-network"])
def test_every_pointwise_convolution_as_a_product_gives_demucs_estimates(bf16: bool) -> None:
    reference = tiny_network(5, bf16)
    lean = copy.deepcopy(reference)
    pointwise = sum(_is_pointwise(m) for m in reference.modules())
    inside_branches = sum(
        _is_pointwise(m) for b in reference.modules() if type(b) is DConv for m in b.modules()
    )
    assert pointwise > inside_branches > 0, "the time branch's gates are outside the branches"
    assert use_pointwise_products(lean) == pointwise
    assert use_pointwise_products(lean) == 0
    _, calls = _estimates_match(reference, lean, bf16, seed=22)
    assert calls["bmm"] == pointwise


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-network"])
def test_unfolded_time_branch_convolutions_give_demucs_estimates(bf16: bool) -> None:
    reference = tiny_network(5, bf16)
    lean = copy.deepcopy(reference)
    # Each time decoder's gate, and the first time encoder's convolution.
    expected_switches = len(reference.tdecoder) + 1
    assert use_unfolded_products(lean) == expected_switches
    assert use_unfolded_products(lean) == 0
    assert type(lean.tencoder[0].conv).__name__ == "UnfoldedConv1d"
    assert type(lean.tencoder[1].conv) is torch.nn.Conv1d
    assert type(lean.encoder[0].conv) is type(reference.encoder[0].conv)
    _, calls = _estimates_match(reference, lean, bf16, seed=23)
    assert calls["bmm"] == expected_switches


@pytest.mark.parametrize(
    ("channels", "kernel", "stride", "padding", "dilation"),
    [(2, 8, 4, 2, 1), (5, 3, 1, 1, 1), (4, 3, 1, 2, 2), (3, 1, 1, 0, 1)],
)
def test_an_unfolded_convolution_is_the_convolution(
    channels: int, kernel: int, stride: int, padding: int, dilation: int
) -> None:
    from separation.dconv import _lean_classes

    torch.manual_seed(7)
    plain = torch.nn.Conv1d(channels, 7, kernel, stride, padding, dilation)
    unfolded = copy.deepcopy(plain)
    unfolded.__class__ = _lean_classes()[2]
    for length in (101, 4, kernel * dilation):
        x = torch.randn(2, channels, length)
        with torch.inference_mode():
            want = plain(x)
            got = unfolded(x)
        assert got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_a_pointwise_convolution_is_the_convolution() -> None:
    torch.manual_seed(6)
    branch = DConv(48, compress=8, depth=2).eval()
    lean = copy.deepcopy(branch)
    assert use_lean_dconv(torch.nn.Sequential(lean)) == 1
    # The frequency branch's input: a view of a channels-last activation.
    x = torch.randn(1, 48, 16, 40).to(memory_format=torch.channels_last)
    x = x.permute(0, 2, 1, 3).reshape(-1, 48, 40)
    assert not x.is_contiguous()
    with torch.inference_mode():
        torch.testing.assert_close(lean(x), branch(x), rtol=0, atol=1e-6)
        pointwise = lean.layers[0][3]
        plain = branch.layers[0][3]
        y = torch.randn(16, 6, 40)
        torch.testing.assert_close(pointwise(y), plain(y), rtol=0, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cpu_passes_take_the_lean_branches_in_bf16_and_the_products_in_both(precision: str) -> None:
    from separation.ensemble import place_sub_model

    model = place_sub_model(HTDemucs(FOUR_SOURCES, **TINY_KWARGS), torch.device("cpu"), precision)
    kinds = {type(m).__name__ for m in model.modules()}
    if precision == "bf16":
        assert "LeanDConv" in kinds and "DConv" not in kinds
    else:
        assert "DConv" in kinds and "LeanDConv" not in kinds
    # In either precision every 1x1 convolution, the time branch's gates among them, takes
    # the product, and so do the time decoders' gates.
    assert not any(_is_pointwise(m) for m in model.modules())
    assert all(type(layer.rewrite).__name__ == "PointwiseConv1d" for layer in model.tencoder)
    assert all(type(layer.rewrite).__name__ == "UnfoldedConv1d" for layer in model.tdecoder)
