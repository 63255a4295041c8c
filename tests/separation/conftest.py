"""Fixtures of the separation tests: audio to separate. The separator is the session's
(``separator`` in tests/conftest.py); tests/support/separators.py builds others."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from separation import Audio, AudioInfo
from tests.support.audio import music_like


def audio_of(samples: np.ndarray) -> Audio:
    """An :class:`Audio` around 44.1 kHz stereo samples, as if decoded from a wav."""
    info = AudioInfo(
        duration_s=samples.shape[1] / 44100,
        samplerate=44100,
        channels=2,
        codec="pcm_f32le",
        title=None,
        artist=None,
    )
    return Audio(samples=samples, info=info)


@pytest.fixture
def clip() -> Audio:
    """Two seconds of music-like stereo audio."""
    return audio_of(music_like(2.0))


def demucs_estimate(
    model_repo: Path,
    audio: Audio,
    model_name: str = "htdemucs_ft",
    source: str = "vocals",
    shifts: int = 0,
) -> tuple[np.ndarray, Any]:
    """``source`` of ``audio`` as plain demucs computes it with the one sub-model of
    ``model_name`` that gives it (through ``apply_model``, normalised as demucs's
    separate.py does), and that sub-model. Draws from ``random`` as ``apply_model`` does
    when ``shifts`` > 0."""
    import torch
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    bag = get_model(model_name, repo=model_repo)
    index = bag.sources.index(source)
    weights = [row[index] for row in bag.weights]
    assert weights.count(0.0) == len(weights) - 1, "one sub-model gives the source"
    model = bag.models[[w != 0.0 for w in weights].index(True)]
    mix = torch.from_numpy(audio.samples)
    ref = mix.mean(0)
    mean, std = ref.mean(), ref.std() + 1e-8
    with torch.no_grad():
        out = apply_model(model, ((mix - mean) / std)[None], shifts=shifts, overlap=0.25)
    return (out[0, index] * std + mean).numpy(), model


class TorchCalls:
    """Counts the calls of each torch function run inside ``with`` (a
    ``TorchFunctionMode``; oneDNN's fused ops, called through ``torch.ops``, are not
    torch functions and are not counted)."""

    def __init__(self) -> None:
        from torch.overrides import TorchFunctionMode

        counts: dict[str, int] = {}
        self.counts = counts

        class _Mode(TorchFunctionMode):
            def __torch_function__(
                self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
            ) -> Any:
                name = getattr(func, "__name__", str(func))
                counts[name] = counts.get(name, 0) + 1
                return func(*args, **(kwargs or {}))

        self._mode = _Mode()

    def __enter__(self) -> TorchCalls:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)

    def __getitem__(self, name: str) -> int:
        return self.counts.get(name, 0)


def tiny_network(seed: int, bf16: bool) -> Any:
    """A tiny random 4-source HTDemucs in eval mode, channels-last as our CPU passes place
    it, its network held in bf16 when ``bf16``: the reference a class swap is compared
    with."""
    import torch
    from demucs.htdemucs import HTDemucs

    from separation.bf16 import run_network_in_bf16
    from separation.random_models import FOUR_SOURCES, TINY_KWARGS

    torch.manual_seed(seed)
    network = HTDemucs(FOUR_SOURCES, **TINY_KWARGS).eval()
    network.to(memory_format=torch.channels_last)
    if bf16:
        run_network_in_bf16(network)
    return network
