"""The delivered audio formats: names only, so the bot process can use them (no numpy)."""

from __future__ import annotations

from typing import Literal

# What the chat delivers: 320 kbps mp3 (the default) and 24-bit FLAC; the name is also the
# file extension.
OutputFormat = Literal["mp3", "flac"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("mp3", "flac")
# What encode_tracks writes: the chat's formats, and for `demix separate` also WAV of 32-bit
# float samples, the tracks exactly as separated (24-bit integer is FLAC's, losslessly smaller).
FileFormat = Literal["mp3", "flac", "wav"]
FILE_FORMATS: tuple[FileFormat, ...] = ("mp3", "flac", "wav")
DEFAULT_OUTPUT_FORMAT: OutputFormat = "mp3"
MP3_BITRATE = "320k"
FLAC_BITS = 24


def output_format(name: str | None) -> OutputFormat:
    """``name`` as an output format; the default for anything else (unset, unknown)."""
    for known in OUTPUT_FORMATS:
        if name == known:
            return known
    return DEFAULT_OUTPUT_FORMAT
