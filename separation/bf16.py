"""An HTDemucs network held and run in bf16 on CPU, its STFT and iSTFT in float32.

Autocast lowers convolutions and matrix products to bf16 but leaves everything between them
(group norms, GLUs, GELUs, residual sums, layer scales) in float32, and converts every
activation and weight on the way in and out of each lowered op. With the network's weights
and activations in bf16 those conversions go and the element-wise ops move half the bytes.
Together with the blocked attention (:mod:`separation.attention`), a forward pass of the
published htdemucs_ft sub-model shape over one 7.8 s chunk took 1.75 s against autocast's
2.13 s in one run of ``bench/compiled.py --variants eager,passes``; this part alone measured
2 to 8 % in separate runs on a noisy machine. Estimates of one random-weight chunk were
48.0 dB from float32's where autocast's were 48.7 dB (the tests bound the real excerpts).

HTDemucs computes its spectrogram and its inverse inside ``forward``, around the network.
Hooks at the network's inputs keep them float32 without patching demucs: the first encoder
layer of each branch takes its input in bf16; the transformer's layers take theirs in bf16
(its positional embedding is float32, so the sum before the first layer is). The last
decoder layer of each branch hands on bf16, and ``forward`` rescales it at once by the
input's float32 statistics, which promotes it to float32 exactly as converting it first
would (bf16 widens to float32 without rounding); the mask and the iSTFT read float32. The
float32 copy that a cast in a hook kept beside the rescaled output is gone; the product's
own float32 temporary remains.

Importing this module does not import torch.
"""

from __future__ import annotations

from typing import Any

# Set on a network converted here, so that its passes run without autocast.
_MARK = "_demix_runs_in_bf16"


def run_network_in_bf16(model: Any) -> bool:
    """Convert an HTDemucs's network to bf16 in place, spectral ops kept in float32.

    Args:
        model: a loaded demucs model, in eval mode, on the CPU.

    Returns:
        True if ``model`` was converted (an HTDemucs); False for any other kind, whose
        passes keep autocast.
    """
    from demucs.htdemucs import HTDemucs

    if not isinstance(model, HTDemucs):
        return False
    if runs_in_bf16(model):
        return True
    import torch

    model.to(torch.bfloat16)
    for first in (model.encoder[0], model.tencoder[0]):
        first.register_forward_pre_hook(_inputs_to_bf16)
    transformer = model.crosstransformer
    if transformer is not None:
        for layer in [*transformer.layers, *transformer.layers_t]:
            layer.register_forward_pre_hook(_inputs_to_bf16)
    setattr(model, _MARK, True)
    return True


def runs_in_bf16(model: Any) -> bool:
    """Whether :func:`run_network_in_bf16` converted ``model``.

    Args:
        model: a loaded demucs model.

    Returns:
        True if its network holds and computes bf16 itself (no autocast needed).
    """
    return bool(getattr(model, _MARK, False))


def _inputs_to_bf16(_module: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    import torch

    return tuple(
        arg.to(torch.bfloat16) if isinstance(arg, torch.Tensor) and arg.is_floating_point() else arg
        for arg in args
    )
