"""demucs's residual branches (``DConv``) and 1-D convolutions in the layout and products a
CPU runs fastest.

In HTDemucs's frequency branch each encoder and decoder layer hands its ``DConv`` a view of
a channels-last activation (the frequency rows folded into the batch), so each of the
branch's residual sums adds tensors of two layouts (a strided element-wise loop) and its
first convolution copies the input contiguous again for every layer. And its 1x1
convolutions, which widen a few channels to many (6 to 96 in the first layer), run in
oneDNN's blocked layout with a reorder of the input and of the much larger output around a
kernel made for wider inputs. :func:`use_lean_dconv` makes each ``DConv`` take its input
contiguous once, and each of its 1x1 convolutions one batched matrix product, the bias
folded in as an input channel of ones (``torch.bmm``): the same sums of the same products,
without the reorders. Each layer's ``LayerScale`` and residual sum, two passes over the
activation in demucs, are one ``torch.addcmul``.

The other 1x1 convolutions of the network take the same product
(:func:`use_pointwise_products`): the time branch's gates (48 to 96 channels over 86 000
samples in the first layer) and the channel changes around the transformer. oneDNN
computes a 1-D convolution in its channels-last layout and PyTorch then copies the output
back to channels-first, a transposing copy that cost more than the product (16 ms of the
first gate's 18 ms in bf16 on a 2-core AMX Xeon). There an htdemucs_ft sub-model's bf16
chunk took 730 ms against 759 ms, the time branch's encoders 76 ms against 104 ms.

The time branch's other convolutions with wide outputs take a product too, over their
input's windows unfolded into rows (:func:`use_unfolded_products`; 3 or 8 taps, so the
unfolded input is a few times the input, for an output written once, channels-first):
a chunk took 690 ms against 715 ms on the same machine, the last time decoder 36 ms
against 48 ms.

Importing this module does not import torch; :func:`use_lean_dconv` does.
"""

from __future__ import annotations

import functools
from typing import Any


def use_lean_dconv(model: Any) -> int:
    """Give every demucs ``DConv`` in ``model`` a :class:`LeanDConv`'s forward, and its 1x1
    convolutions a :class:`PointwiseConv1d`'s (classes are swapped, so parameters, state
    dict and hooks stay the model's).

    Args:
        model: a loaded demucs model, on the CPU.

    Returns:
        How many ``DConv`` modules were switched now.
    """
    from demucs.demucs import DConv

    lean, pointwise, _ = _lean_classes()
    switched = 0
    for module in model.modules():
        if type(module) is not DConv:
            continue
        module.__class__ = lean
        for inner in module.modules():
            if _is_pointwise(inner):
                inner.__class__ = pointwise
        switched += 1
    return switched


def use_pointwise_products(model: Any) -> int:
    """Give every 1x1 ``nn.Conv1d`` with a bias in ``model`` :class:`PointwiseConv1d`'s
    forward, inside the residual branches or not (classes are swapped, as above).

    Args:
        model: a loaded demucs model, on the CPU.

    Returns:
        How many convolutions were switched now.
    """
    _, pointwise, _ = _lean_classes()
    switched = 0
    for module in model.modules():
        if _is_pointwise(module):
            module.__class__ = pointwise
            switched += 1
    return switched


def use_unfolded_products(model: Any) -> int:
    """Give the time branch's wide-output convolutions :class:`UnfoldedConv1d`'s forward:
    each decoder layer's gate (3 taps, to twice its channels) and the first encoder
    layer's convolution (the stereo input's 2 channels, 8 taps, to 48).

    Args:
        model: a loaded HTDemucs, on the CPU.

    Returns:
        How many convolutions were switched now.
    """
    from demucs.hdemucs import HDecLayer, HEncLayer

    *_, unfolded = _lean_classes()
    switched = 0
    for layer in model.modules():
        if not isinstance(layer, HEncLayer | HDecLayer) or layer.freq:
            continue
        convs = [layer.rewrite] if isinstance(layer, HDecLayer) else []
        if isinstance(layer, HEncLayer) and layer.conv.in_channels <= 2:
            convs.append(layer.conv)
        for conv in convs:
            if _is_unfoldable(conv):
                conv.__class__ = unfolded
                switched += 1
    return switched


def _is_unfoldable(module: Any) -> bool:
    import torch

    return (
        type(module) is torch.nn.Conv1d
        and module.groups == 1
        and module.bias is not None
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def _is_pointwise(module: Any) -> bool:
    import torch

    return (
        type(module) is torch.nn.Conv1d
        and module.kernel_size == (1,)
        and module.stride == (1,)
        and module.padding == (0,)
        and module.dilation == (1,)
        and module.groups == 1
        and module.bias is not None
        and module.padding_mode == "zeros"
    )


@functools.cache
def _lean_classes() -> tuple[Any, Any, Any]:
    """:class:`LeanDConv`, :class:`PointwiseConv1d` and :class:`UnfoldedConv1d`, defined on
    first use so that importing this module does not import torch or demucs."""
    import torch
    from demucs.demucs import DConv, LayerScale
    from torch.nn import functional as F

    class LeanDConv(DConv):
        """A DConv that makes its input contiguous once, for all its layers, and adds
        each layer's scaled branch to it in one pass."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.contiguous()
            for layer in self.layers:
                *branch, last = list(layer.children())
                if type(last) is LayerScale and not last.channel_last:
                    y = x
                    for module in branch:
                        y = module(y)
                    # x + scale * y, with one rounding instead of two in bf16.
                    x = torch.addcmul(x, last.scale[:, None], y)
                else:
                    x = x + layer(x)
            return x

    class PointwiseConv1d(torch.nn.Conv1d):
        """A 1x1 convolution with a bias, as one batched matrix product."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 3 or x.device.type != "cpu" or self.bias is None:
                return super().forward(x)
            # The bias as one more input channel of ones: the product writes the output
            # once, where baddbmm first copies the broadcast bias into all of it. The
            # inputs are the branch's few hidden channels, so the extra one is cheap.
            weight = torch.cat([self.weight[:, :, 0], self.bias[:, None]], 1)
            ones = x.new_ones(x.shape[0], 1, x.shape[2])
            return torch.bmm(weight.expand(x.shape[0], *weight.shape), torch.cat([x, ones], 1))

    class UnfoldedConv1d(torch.nn.Conv1d):
        """A 1-D convolution as one batched matrix product over its input's unfolded
        windows, the bias folded in as a row of ones, its output channels-first."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.dim() != 3 or x.device.type != "cpu" or self.bias is None:
                return super().forward(x)
            (kernel,), (stride,), (dilation,) = self.kernel_size, self.stride, self.dilation
            # A number here: _is_unfoldable leaves "same"/"valid" convolutions alone.
            padding = int(self.padding[0])
            if padding:
                x = F.pad(x, (padding, padding))
            span = (kernel - 1) * dilation + 1
            # (batch, channels, positions, taps), a view: each window's samples in a row.
            windows = x.unfold(-1, span, stride)[..., ::dilation]
            batch, channels, positions, _ = windows.shape
            rows = channels * kernel
            unfolded = x.new_empty(batch, rows + 1, positions)
            unfolded[:, :rows].view(batch, channels, kernel, positions).copy_(
                windows.transpose(-1, -2)
            )
            unfolded[:, rows].fill_(1)
            flat = self.weight.reshape(self.out_channels, rows)
            weight = torch.cat([flat, self.bias[:, None]], 1)
            return torch.bmm(weight.expand(batch, *weight.shape), unfolded)

    return LeanDConv, PointwiseConv1d, UnfoldedConv1d
