"""Test songs for the benchmarks, made by ffmpeg (not in Python, so they cost the measured
process nothing): real mp3 decoding, real encoder delay."""

from __future__ import annotations

import subprocess
from pathlib import Path

# Tones, a low line and noise, slightly different per channel.
_EXPRESSION = (
    "0.2*sin(2*PI*220*t)+0.1*sin(2*PI*55*t)+0.05*(random(0)-0.5)"
    "|0.2*sin(2*PI*221*t)+0.1*sin(2*PI*110*t)+0.05*(random(1)-0.5)"
)


def make_song(path: Path, seconds: float) -> Path:
    """A stereo 44.1 kHz mp3 of tones and noise, ``seconds`` long."""
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi"),
            *("-i", f"aevalsrc={_EXPRESSION}:s=44100:d={seconds}"),
            *("-c:a", "libmp3lame", "-b:a", "192k", str(path)),
        ],
        check=True,
    )
    return path


def make_silence(path: Path, seconds: float) -> Path:
    """Digital silence as FLAC: hours of audio in a few MB, the shape of a decompression bomb."""
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi"),
            *("-i", "anullsrc=r=44100:cl=stereo", "-t", str(seconds)),
            *("-c:a", "flac", str(path)),
        ],
        check=True,
    )
    return path
