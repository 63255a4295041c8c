"""Fixtures of the separation tests: audio to separate. The separator is the session's
(``separator`` in tests/conftest.py); tests/support/separators.py builds others."""

from __future__ import annotations

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
