"""Fixtures of the separation tests: one shared separator over the tiny models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from separation import Audio, AudioInfo, EnsembleSeparator, SeparatorConfig
from tests.support.audio import music_like


@pytest.fixture(scope="module")
def separator(model_repo: Path) -> EnsembleSeparator:
    """A cache-less separator over the tiny models, on CPU, shared by a test module."""
    return EnsembleSeparator(SeparatorConfig(model_repo=model_repo, device="cpu"))


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
