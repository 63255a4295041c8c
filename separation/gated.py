"""The frequency branch's gated convolutions as two halves, on CPU.

Each encoder and decoder layer of HTDemucs ends (encoder) or starts (decoder) with a
"rewrite": a convolution to twice its channels, then ``F.glu(z, dim=1)``, the first half
times the sigmoid of the second. In the frequency branch our CPU passes hold the weights
channels-last, so the convolutions' outputs are channels-last too, whatever their input's
layout: the two halves of ``z`` interleave at every pixel, and PyTorch's GLU
kernel runs such a split about five times slower than on a contiguous tensor: 14 ms
against 2.6 ms for the first layer's ``(1, 96, 512, 336)`` in bf16 on this project's
2-core machine. :func:`use_split_gates` makes the layers compute the two halves as two
convolutions (the first and second halves of the same weights) and multiply them in
place: the GLU's products and sigmoid, on two tensors of one layout. One rewrite and its
GLU on the first layer's shape, alone (``python bench/compiled.py`` measures whole
passes), demucs's against two halves: bf16, 18.1 against 6.9 ms for the encoder's 1x1
rewrite, 46.2 against 34.9 ms for the decoder's 3x3 one; float32, 35.2 against 14.7 ms and
89.6 against 67.7 ms. Where a normalisation sits between the convolution and the GLU
(deeper layers of other shapes), or on other devices, the layers keep demucs's
computation.

Importing this module does not import torch; :func:`use_split_gates` does.
"""

from __future__ import annotations

import functools
from typing import Any


def use_split_gates(model: Any) -> int:
    """Give every HTDemucs encoder and decoder layer in ``model`` a forward that computes
    its rewrite's GLU as two half convolutions where that is faster (classes are swapped,
    so parameters, state dict and hooks stay the model's).

    Args:
        model: a loaded demucs model, on the CPU.

    Returns:
        How many layers were switched now (0 for a model without such layers, or one
        already switched).
    """
    from demucs.hdemucs import HDecLayer, HEncLayer

    encoder, decoder = _split_gate_classes()
    switched = 0
    for module in model.modules():
        if type(module) is HEncLayer:
            module.__class__ = encoder
        elif type(module) is HDecLayer:
            module.__class__ = decoder
        else:
            continue
        switched += 1
    return switched


def gated(conv: Any, norm: Any, x: Any) -> Any:
    """``F.glu(norm(conv(x)), dim=1)``, as two half convolutions where the convolution
    gives a channels-last output (on the CPU, its weights channels-last) and no
    normalisation sits between.

    Args:
        conv: the rewrite, a ``Conv1d`` or ``Conv2d`` to an even number of channels.
        norm: the module between the convolution and the GLU (``nn.Identity`` or a norm).
        x: the layer's activation.

    Returns:
        The gated activation, half of ``conv``'s channels; channels-last where split.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    if (
        isinstance(norm, nn.Identity)
        and isinstance(conv, nn.Conv2d)
        and conv.bias is not None
        and x.device.type == "cpu"
        and x.dim() == 4
        and conv.weight.is_contiguous(memory_format=torch.channels_last)
    ):
        # Once for both halves (each convolution would copy an input of another layout).
        x = x.contiguous(memory_format=torch.channels_last)
        half = conv.out_channels // 2
        value = conv._conv_forward(x, conv.weight[:half], conv.bias[:half])
        gate = conv._conv_forward(x, conv.weight[half:], conv.bias[half:])
        return value.mul_(gate.sigmoid_())
    return F.glu(norm(conv(x)), dim=1)


@functools.cache
def _split_gate_classes() -> tuple[Any, Any]:
    """The switched encoder and decoder layer classes, defined on first use so that
    importing this module does not import torch or demucs."""
    import torch
    from demucs.hdemucs import HDecLayer, HEncLayer
    from torch.nn import functional as F

    class SplitGateEncLayer(HEncLayer):
        """demucs 4.1's ``HEncLayer.forward`` with its rewrite through :func:`gated`."""

        def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
            if not self.freq and x.dim() == 4:
                B, C, Fr, T = x.shape
                x = x.view(B, -1, T)
            if not self.freq:
                le = x.shape[-1]
                if le % self.stride != 0:
                    x = F.pad(x, (0, self.stride - (le % self.stride)))
            y = self.conv(x)
            if self.empty:
                return y
            if inject is not None:
                assert inject.shape[-1] == y.shape[-1], (inject.shape, y.shape)
                if inject.dim() == 3 and y.dim() == 4:
                    inject = inject[:, :, None]
                y = y + inject
            y = F.gelu(self.norm1(y))
            if self.dconv:
                if self.freq:
                    B, C, Fr, T = y.shape
                    y = y.permute(0, 2, 1, 3).reshape(-1, C, T)
                y = self.dconv(y)
                if self.freq:
                    y = y.view(B, Fr, C, T).permute(0, 2, 1, 3)
            if self.rewrite:
                return gated(self.rewrite, self.norm2, y)
            return y

    class SplitGateDecLayer(HDecLayer):
        """demucs 4.1's ``HDecLayer.forward`` with its rewrite through :func:`gated`."""

        def forward(
            self, x: torch.Tensor, skip: torch.Tensor | None, length: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if self.freq and x.dim() == 3:
                B, C, T = x.shape
                x = x.view(B, self.chin, -1, T)
            if not self.empty:
                assert skip is not None
                x = x + skip
                y = gated(self.rewrite, self.norm1, x) if self.rewrite else x
                if self.dconv:
                    if self.freq:
                        B, C, Fr, T = y.shape
                        y = y.permute(0, 2, 1, 3).reshape(-1, C, T)
                    y = self.dconv(y)
                    if self.freq:
                        y = y.view(B, Fr, C, T).permute(0, 2, 1, 3)
            else:
                y = x
                assert skip is None
            z = self.norm2(self.conv_tr(y))
            if self.freq:
                if self.pad:
                    z = z[..., self.pad : -self.pad, :]
            else:
                z = z[..., self.pad : self.pad + length]
                assert z.shape[-1] == length, (z.shape[-1], length)
            if not self.last:
                z = F.gelu(z)
            return z, y

    return SplitGateEncLayer, SplitGateDecLayer
