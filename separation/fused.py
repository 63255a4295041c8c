"""HTDemucs's layers with the element-wise work around their products folded in, on CPU.

Eager PyTorch runs every activation as a pass of its own over a tensor the product before
it has just written. Two such passes are worse than that on a CPU:

- **The gates.** Each encoder and decoder layer ends (encoder) or starts (decoder) with a
  "rewrite": a convolution to twice its channels, then ``F.glu(z, dim=1)``, the first half
  times the sigmoid of the second. Our CPU passes hold the frequency branch's weights
  channels-last, so those convolutions' outputs are channels-last whatever their input:
  the two halves interleave at every pixel, and PyTorch's GLU kernel runs such a split
  about five times slower than on a contiguous tensor (14 ms against 2.6 ms for the first
  layer's ``(1, 96, 512, 336)`` in bf16 on this project's 2-core machine). :func:`gated`
  runs the two halves as two convolutions (the halves of the same weights) and multiplies
  them in place. Alone, on the first layer's shape, demucs's against ours: bf16, 18.1
  against 6.9 ms for the encoder's 1x1 rewrite, 46.2 against 34.9 ms for the decoder's
  3x3 one.
- **The GELUs.** oneDNN applies a GELU to a product's results before it writes them (a
  post-op), which PyTorch exposes as ``torch.ops.mkldnn._linear_pointwise`` and
  ``_convolution_pointwise`` / ``_convolution_transpose_pointwise`` (what inductor's CPU
  fusions call). :func:`linear_gelu` and :func:`conv_gelu` use them for the transformer's
  feed-forward ``linear1`` (bf16, 21.0 against 15.6 ms for the frequency layers'
  ``(2688, 512) x (512, 2048)``), the frequency encoders' convolutions (5.3 against 3.2 ms
  for the first) and the frequency decoders' transposed ones (11.5 against 9.5 ms). The GELU
  is the exact (erf) one demucs uses, applied to the product's float32 sums before they
  round to bf16 once, where demucs rounds the product, then the GELU.

:func:`use_fused_layers` swaps the classes of the encoder, decoder and transformer layers
for ones whose forward is demucs 4.1's with these calls (parameters, state dict and hooks
stay the model's). Where a normalisation sits between a product and its activation (deeper
layers of other shapes), on other devices, or for other layers, the layers compute as
demucs does.

Importing this module does not import torch; :func:`use_fused_layers` does.
"""

from __future__ import annotations

import functools
from typing import Any


def use_fused_layers(model: Any) -> int:
    """Give every HTDemucs encoder, decoder and transformer layer in ``model`` a forward
    with its gate and GELUs fused where that is faster (see the module's docstring).

    Args:
        model: a loaded demucs model, on the CPU.

    Returns:
        How many layers were switched now (0 for a model without such layers, or one
        already switched).
    """
    fused = _fused_classes()
    switched = 0
    for module in model.modules():
        replacement = fused.get(type(module))
        if replacement is not None:
            module.__class__ = replacement
            switched += 1
    return switched


def _channels_last_on_cpu(conv: Any) -> bool:
    """Whether ``conv`` is a 2-D (transposed) convolution on the CPU with channels-last
    weights and a bias: what oneDNN's fused calls and :func:`gated` are measured on."""
    import torch
    from torch import nn

    return (
        isinstance(conv, nn.Conv2d | nn.ConvTranspose2d)
        and conv.bias is not None
        and conv.padding_mode == "zeros"
        and conv.weight.device.type == "cpu"
        and conv.weight.is_contiguous(memory_format=torch.channels_last)
    )


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
        and _channels_last_on_cpu(conv)
        and x.dim() == 4
    ):
        # Once for both halves (each convolution would copy an input of another layout).
        x = x.contiguous(memory_format=torch.channels_last)
        half = conv.out_channels // 2
        value = conv._conv_forward(x, conv.weight[:half], conv.bias[:half])
        gate = conv._conv_forward(x, conv.weight[half:], conv.bias[half:])
        return value.mul_(gate.sigmoid_())
    return F.glu(norm(conv(x)), dim=1)


def conv_gelu(conv: Any, x: Any) -> Any:
    """``F.gelu(conv(x))`` for a convolution or transposed convolution, in one oneDNN
    call where :func:`_channels_last_on_cpu` holds.

    Args:
        conv: an ``nn.Conv1d``/``Conv2d``/``ConvTranspose2d``.
        x: its input, in its dtype.

    Returns:
        The activation, channels-last where fused.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    if not _channels_last_on_cpu(conv) or x.dim() != 4 or x.dtype != conv.weight.dtype:
        return F.gelu(conv(x))
    args: list[list[int]] = [list(conv.padding)]
    if isinstance(conv, nn.ConvTranspose2d):
        args.append(list(conv.output_padding))
        call = torch.ops.mkldnn._convolution_transpose_pointwise
    else:
        call = torch.ops.mkldnn._convolution_pointwise
    return call(
        x,
        conv.weight,
        conv.bias,
        *args,
        list(conv.stride),
        list(conv.dilation),
        conv.groups,
        "gelu",
        [],
        "none",  # the exact GELU, as F.gelu's default
    )


def linear_gelu(linear: Any, activation: Any, x: Any) -> Any:
    """``activation(linear(x))``, in one oneDNN call where ``activation`` is the exact
    GELU and everything is on the CPU in one dtype.

    Args:
        linear: an ``nn.Linear`` with a bias.
        activation: the function applied after it (demucs passes ``F.gelu``).
        x: its input.

    Returns:
        The activation.
    """
    import torch
    from torch.nn import functional as F

    if (
        activation is F.gelu
        and linear.bias is not None
        and x.device.type == "cpu"
        and x.dtype == linear.weight.dtype
    ):
        return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "gelu", [], "none")
    return activation(linear(x))


def _residual_branch(layer: Any, y: Any) -> Any:
    """An encoder or decoder layer's ``dconv`` over ``y``, the frequency rows folded into
    the batch and back, as demucs's layers run it."""
    if not layer.freq:
        return layer.dconv(y)
    B, C, Fr, T = y.shape
    y = layer.dconv(y.permute(0, 2, 1, 3).reshape(-1, C, T))
    return y.view(B, Fr, C, T).permute(0, 2, 1, 3)


@functools.cache
def _fused_classes() -> dict[type, type]:
    """demucs's layer class to its fused one, defined on first use so that importing this
    module does not import torch or demucs."""
    import torch
    from demucs.hdemucs import HDecLayer, HEncLayer
    from demucs.transformer import CrossTransformerEncoderLayer, MyTransformerEncoderLayer
    from torch import nn
    from torch.nn import functional as F

    class FusedEncLayer(HEncLayer):
        """demucs 4.1's ``HEncLayer.forward``, its GELU and gate fused."""

        def forward(self, x: torch.Tensor, inject: torch.Tensor | None = None) -> torch.Tensor:
            if not self.freq and x.dim() == 4:
                x = x.view(x.shape[0], -1, x.shape[-1])
            if not self.freq:
                le = x.shape[-1]
                if le % self.stride != 0:
                    x = F.pad(x, (0, self.stride - (le % self.stride)))
            if self.empty:
                return self.conv(x)
            if inject is None and isinstance(self.norm1, nn.Identity):
                y = conv_gelu(self.conv, x)
            else:
                y = self.conv(x)
                if inject is not None:
                    assert inject.shape[-1] == y.shape[-1], (inject.shape, y.shape)
                    if inject.dim() == 3 and y.dim() == 4:
                        inject = inject[:, :, None]
                    y = y + inject
                y = F.gelu(self.norm1(y))
            if self.dconv:
                y = _residual_branch(self, y)
            if self.rewrite:
                return gated(self.rewrite, self.norm2, y)
            return y

    class FusedDecLayer(HDecLayer):
        """demucs 4.1's ``HDecLayer.forward``, its gate and GELU fused."""

        def forward(
            self, x: torch.Tensor, skip: torch.Tensor | None, length: int
        ) -> tuple[torch.Tensor, torch.Tensor]:
            if self.freq and x.dim() == 3:
                x = x.view(x.shape[0], self.chin, -1, x.shape[-1])
            if not self.empty:
                assert skip is not None
                x = x + skip
                y = gated(self.rewrite, self.norm1, x) if self.rewrite else x
                if self.dconv:
                    y = _residual_branch(self, y)
            else:
                y = x
                assert skip is None
            # The GELU before the crop is the GELU of the crop: it acts sample by sample.
            if not self.last and isinstance(self.norm2, nn.Identity):
                z = conv_gelu(self.conv_tr, y)
                activate = False
            else:
                z = self.norm2(self.conv_tr(y))
                activate = not self.last
            if self.freq:
                if self.pad:
                    z = z[..., self.pad : -self.pad, :]
            else:
                z = z[..., self.pad : self.pad + length]
                assert z.shape[-1] == length, (z.shape[-1], length)
            if activate:
                z = F.gelu(z)
            return z, y

    def _ff_block(self: Any, x: torch.Tensor) -> torch.Tensor:
        """The feed-forward block, its first product and GELU in one call."""
        return self.linear2(self.dropout(linear_gelu(self.linear1, self.activation, x)))

    fused_self = type(
        "FusedTransformerEncoderLayer",
        (MyTransformerEncoderLayer,),
        {"_ff_block": _ff_block, "__doc__": "demucs's self-attention layer, FF fused."},
    )
    fused_cross = type(
        "FusedCrossTransformerEncoderLayer",
        (CrossTransformerEncoderLayer,),
        {"_ff_block": _ff_block, "__doc__": "demucs's cross-attention layer, FF fused."},
    )
    return {
        HEncLayer: FusedEncLayer,
        HDecLayer: FusedDecLayer,
        MyTransformerEncoderLayer: fused_self,
        CrossTransformerEncoderLayer: fused_cross,
    }
