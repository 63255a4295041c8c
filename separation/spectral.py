"""HTDemucs's inverse spectrogram one source at a time, so a pass holds less memory.

At the end of its ``forward``, HTDemucs turns every source's spectrogram back into samples
in one call: two padded copies of all the sources' spectrograms, then ``torch.istft``'s
frames and windowed frames, each as large again (for one 7.8 s chunk of a 6-source model,
about 67 MB apiece, whatever the network's width). Over a 10-second request with the tiny
six-source test models, that was most of the 550 MB the process rose above its loaded
models. :func:`use_lean_ispec` gives a model's ``_ispec`` a loop over the sources: each
source's samples are what the one call gives it (every signal's inverse transform is its
own), and only one source's copies exist at a time.

Importing this module does not import torch; :func:`use_lean_ispec` does.
"""

from __future__ import annotations

from typing import Any


def use_lean_ispec(model: Any) -> bool:
    """Give an HTDemucs :class:`LeanSpectralHTDemucs`'s ``_ispec`` (its class is swapped,
    so parameters, state dict and hooks stay the model's).

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


_CLASS: Any = None


def _lean_class() -> Any:
    """:class:`LeanSpectralHTDemucs`, defined on first use so that importing this module does
    not import torch or demucs."""
    global _CLASS
    if _CLASS is None:
        _CLASS = _define_lean_class()
    return _CLASS


def _define_lean_class() -> Any:
    import torch
    from demucs.htdemucs import HTDemucs

    class LeanSpectralHTDemucs(HTDemucs):
        """HTDemucs whose inverse spectrogram runs one source at a time."""

        def _ispec(self, z: torch.Tensor, length: int | None = None, scale: int = 0) -> Any:
            # forward calls it with (batch, sources, channels, freqs, frames).
            if z.dim() != 5 or z.shape[1] == 1:
                return super()._ispec(z, length, scale)
            out: torch.Tensor | None = None
            for source in range(z.shape[1]):
                samples = super()._ispec(z[:, source : source + 1], length, scale)
                if out is None:
                    out = samples.new_empty(samples.shape[0], z.shape[1], *samples.shape[2:])
                out[:, source : source + 1] = samples
                del samples
            return out

    return LeanSpectralHTDemucs
