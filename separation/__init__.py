"""Separation engine: decode, two-model Demucs ensemble, stem arithmetic, encode, cache.

A pure library: no Telegram, Redis or SQLite.
"""

from separation.audio import (
    SAMPLERATE,
    Audio,
    AudioInfo,
    decode_audio,
    encode_tracks,
    probe_audio,
    safe_song_name,
    track_file_name,
)
from separation.ensemble import (
    DEFAULT_BLEND_WEIGHTS,
    DEFAULT_MODELS,
    EnsembleSeparator,
    SeparatorConfig,
    resolve_device,
)
from separation.errors import (
    InvalidAudioError,
    ModelUnavailableError,
    SeparationCancelled,
    SeparationError,
    UnknownStemError,
)
from separation.tracks import SOURCES, plan_tracks, sources_to_estimate

__all__ = [
    "DEFAULT_BLEND_WEIGHTS",
    "DEFAULT_MODELS",
    "SAMPLERATE",
    "SOURCES",
    "Audio",
    "AudioInfo",
    "EnsembleSeparator",
    "InvalidAudioError",
    "ModelUnavailableError",
    "SeparationCancelled",
    "SeparationError",
    "SeparatorConfig",
    "UnknownStemError",
    "decode_audio",
    "encode_tracks",
    "plan_tracks",
    "probe_audio",
    "resolve_device",
    "safe_song_name",
    "sources_to_estimate",
    "track_file_name",
]
