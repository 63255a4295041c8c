"""HTDemucs's mask and inverse spectrogram one source at a time, so a pass holds less memory.

At the end of its ``forward``, HTDemucs turns every source's spectrogram back into samples
at once: a complex copy of the network's whole output, two padded copies of it, then
``torch.istft``'s frames and windowed frames, each as large again (for one 7.8 s chunk of a
6-source model, about 67 MB apiece, whatever the network's width). With the tiny six-source
test models that was most of what a request rose above the loaded models.
:func:`use_lean_ispec` makes a model's ``_mask`` (for complex-as-channels models, as every
published HTDemucs is) hand on a view of the network's output, and its ``_ispec`` copy and
invert one source at a time: each source's samples are what the one call gives it (every
signal's inverse transform is its own; the tests find them bit-equal), and only one
source's copies exist at once. The two go together: demucs's ``forward`` passes ``_mask``'s
result only to ``_ispec``. One forward pass of the tiny 6-source model in bf16 held at most
189 MB of tensors, against 390 MB without (counted op by op with a dispatch mode). The
copy that makes a source complex also writes demucs's two zero paddings around it, which
demucs makes as two more copies: the work outside the network's layers went from 88 to
78 ms of an htdemucs_ft sub-model's bf16 chunk on a 2-core AMX Xeon.

Importing this module does not import torch; :func:`use_lean_ispec` does.
"""

from __future__ import annotations

import functools
from typing import Any


def use_lean_ispec(model: Any) -> bool:
    """Give an HTDemucs :class:`LeanSpectralHTDemucs`'s ``_mask`` and ``_ispec`` (its class
    is swapped, so parameters, state dict and hooks stay the model's).

    Args:
        model: a loaded demucs model.

    Returns:
        True if ``model`` is an HTDemucs (switched now or before); False for any other
        kind, left as it is.
    """
    from demucs.htdemucs import HTDemucs

    lean = _lean_class()
    if isinstance(model, lean):
        return True
    if type(model) is not HTDemucs:
        return False
    model.__class__ = lean
    return True


@functools.cache
def _lean_class() -> Any:
    """:class:`LeanSpectralHTDemucs`, defined on first use so that importing this module does
    not import torch or demucs."""
    return _define_lean_class()


def _define_lean_class() -> Any:
    import math

    import torch
    from demucs.htdemucs import HTDemucs
    from demucs.spec import ispectro

    class LeanSpectralHTDemucs(HTDemucs):
        """HTDemucs whose mask and inverse spectrogram go one source at a time."""

        def _mask(self, z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
            if not self.cac or self.training:
                return super()._mask(z, m)
            # The network's output as (batch, sources, channels, freqs, frames, re/im), a
            # view: demucs copies it whole into a complex tensor here; _ispec copies one
            # source at a time instead.
            b, s, _, freqs, frames = m.shape
            return m.view(b, s, -1, 2, freqs, frames).permute(0, 1, 2, 4, 5, 3)

        def _ispec(self, z: torch.Tensor, length: int | None = None, scale: int = 0) -> Any:
            # From forward: (batch, sources, channels, freqs, frames), complex; or from
            # _mask above, the same as real and imaginary parts in a last dimension.
            if z.is_complex() and (z.dim() != 5 or z.shape[1] == 1):
                return super()._ispec(z, length, scale)
            out: torch.Tensor | None = None
            for source in range(z.shape[1]):
                part = z[:, source : source + 1]
                if not part.is_complex() and length is not None:
                    samples = self._ispec_padded_once(part, length, scale)
                else:
                    if not part.is_complex():
                        part = torch.view_as_complex(part.contiguous())
                    samples = super()._ispec(part, length, scale)
                del part
                if out is None:
                    out = samples.new_empty(samples.shape[0], z.shape[1], *samples.shape[2:])
                out[:, source : source + 1] = samples
                del samples
            return out

        def _ispec_padded_once(self, part: torch.Tensor, length: int, scale: int) -> Any:
            """demucs 4.1's ``_ispec`` of one source given as real and imaginary parts in a
            last dimension, its two zero paddings (a frequency row, two frames either side)
            written into the one copy that makes it complex, where demucs copies it twice
            more (about 2 ms a source for a 7.8 s chunk)."""
            hl = self.hop_length // (4**scale)
            *lead, freqs, frames, _ = part.shape
            padded = part.new_empty(*lead, freqs + 1, frames + 4, 2)
            padded[..., freqs, :, :] = 0
            padded[..., :freqs, :2, :] = 0
            padded[..., :freqs, frames + 2 :, :] = 0
            padded[..., :freqs, 2 : frames + 2, :] = part
            pad = hl // 2 * 3
            le = hl * math.ceil(length / hl) + 2 * pad
            x = ispectro(torch.view_as_complex(padded), hl, length=le)
            return x[..., pad : pad + length]

    return LeanSpectralHTDemucs
