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


# ffmpeg's codec options of each format, after the input and before the tags (the worker's
# encoder in separation.audio and the mixer's renders use them).
CODEC_ARGS: dict[str, list[str]] = {
    "mp3": ["-c:a", "libmp3lame", "-b:a", MP3_BITRATE, "-id3v2_version", "3", "-write_xing", "1"],
    # FLAC has no 24-bit sample format in ffmpeg: 32-bit samples of which 24 bits are kept.
    "flac": ["-c:a", "flac", "-sample_fmt", "s32", "-bits_per_raw_sample", str(FLAC_BITS)],
    # The float32 samples as they are; RF64 only when the file outgrows RIFF's 4 GB.
    "wav": ["-c:a", "pcm_f32le", "-rf64", "auto"],
}
