"""Audio made by the tests: tones and noise written in any format ffmpeg encodes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

CODEC_ARGS = {
    ".mp3": ["-c:a", "libmp3lame", "-b:a", "192k"],
    ".wav": ["-c:a", "pcm_s16le"],
    ".flac": ["-c:a", "flac"],
    ".ogg": ["-c:a", "libopus", "-b:a", "96k"],
    ".opus": ["-c:a", "libopus", "-b:a", "96k"],
    ".m4a": ["-c:a", "aac", "-b:a", "160k"],
}


def music_like(
    seconds: float, samplerate: int = 44100, channels: int = 2, seed: int = 0
) -> np.ndarray:
    """A (channels, n) float32 signal: a few tones, a pulse and a little noise, below full scale."""
    rng = np.random.default_rng(seed)
    n = round(seconds * samplerate)
    t = np.arange(n) / samplerate
    out = np.zeros((channels, n), dtype=np.float64)
    for ch in range(channels):
        for freq, amp in ((110.0, 0.2), (220.0 * (1 + ch * 0.01), 0.15), (880.0, 0.05)):
            out[ch] += amp * np.sin(2 * np.pi * freq * t + ch)
        out[ch] += 0.2 * (np.sin(2 * np.pi * 2.0 * t) > 0.95) * rng.standard_normal(n)
        out[ch] += 0.01 * rng.standard_normal(n)
    return np.clip(out, -0.9, 0.9).astype(np.float32)


def write_audio(
    path: Path,
    samples: np.ndarray,
    samplerate: int,
    *,
    title: str | None = None,
    artist: str | None = None,
    codec: str | None = None,
) -> Path:
    """Encode ``samples`` (channels, n) to ``path``; the codec follows the file's suffix
    unless ``codec`` names one (e.g. ``pcm_s24le`` or ``pcm_f32le`` for a .wav)."""
    channels = samples.shape[0]
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "f32le",
        "-ar",
        str(samplerate),
        "-ac",
        str(channels),
        "-i",
        "pipe:0",
    ]
    if title:
        cmd += ["-metadata", f"title={title}"]
    if artist:
        cmd += ["-metadata", f"artist={artist}"]
    cmd += (["-c:a", codec] if codec else CODEC_ARGS[path.suffix.lower()]) + [str(path)]
    subprocess.run(cmd, input=np.ascontiguousarray(samples.T).tobytes(), check=True)
    return path


def make_song(
    path: Path,
    seconds: float = 3.0,
    samplerate: int = 44100,
    channels: int = 2,
    seed: int = 0,
    **tags: str,
) -> Path:
    """Write a music-like test song of the given length, rate and channel count."""
    return write_audio(path, music_like(seconds, samplerate, channels, seed), samplerate, **tags)


def decode(path: Path, samplerate: int = 44100, channels: int = 2) -> np.ndarray:
    """Decode any file with ffmpeg (gapless, as a player would) to (channels, n) float32."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-f",
            "f32le",
            "-ac",
            str(channels),
            "-ar",
            str(samplerate),
            "pipe:1",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, channels).T.copy()
