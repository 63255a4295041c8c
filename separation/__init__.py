"""Separation engine: decode, two-model Demucs ensemble, stem arithmetic, encode, cache.

A pure library: no Telegram, Redis or SQLite. Importing the package loads neither torch nor
numpy: the torch-free rules (:mod:`separation.tracks`, :mod:`separation.naming`,
:mod:`separation.config`, :mod:`separation.errors`) are what the bot process uses, and the
heavy names below are imported on first access (PEP 562).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from separation.config import (
    DEFAULT_BLEND_WEIGHTS,
    DEFAULT_MODELS,
    DEFAULT_STRATEGY,
    STRATEGIES,
    Ensemble,
    SeparatorConfig,
)
from separation.errors import (
    ACCEPTED_FORMATS,
    InvalidAudioError,
    ModelUnavailableError,
    NoSoundError,
    SeparationCancelled,
    SeparationError,
    SongTooLongError,
    UnknownStemError,
)
from separation.naming import safe_song_name, track_file_name, track_title
from separation.tracks import SOURCES, plan_tracks, sources_to_estimate

if TYPE_CHECKING:
    from separation.audio import (
        SAMPLERATE,
        Audio,
        AudioInfo,
        RawTrack,
        Track,
        decode_audio,
        encode_tracks,
        probe_audio,
    )
    from separation.ensemble import EnsembleSeparator, resolve_device

# Name -> module for the names that need numpy or torch.
_LAZY = {
    "SAMPLERATE": "separation.audio",
    "Audio": "separation.audio",
    "AudioInfo": "separation.audio",
    "RawTrack": "separation.audio",
    "Track": "separation.audio",
    "decode_audio": "separation.audio",
    "encode_tracks": "separation.audio",
    "probe_audio": "separation.audio",
    "EnsembleSeparator": "separation.ensemble",
    "resolve_device": "separation.ensemble",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'separation' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "ACCEPTED_FORMATS",
    "DEFAULT_BLEND_WEIGHTS",
    "DEFAULT_MODELS",
    "DEFAULT_STRATEGY",
    "SAMPLERATE",
    "SOURCES",
    "STRATEGIES",
    "Audio",
    "AudioInfo",
    "Ensemble",
    "EnsembleSeparator",
    "InvalidAudioError",
    "ModelUnavailableError",
    "NoSoundError",
    "RawTrack",
    "SeparationCancelled",
    "SeparationError",
    "SeparatorConfig",
    "SongTooLongError",
    "Track",
    "UnknownStemError",
    "decode_audio",
    "encode_tracks",
    "plan_tracks",
    "probe_audio",
    "resolve_device",
    "safe_song_name",
    "sources_to_estimate",
    "track_file_name",
    "track_title",
]
