"""MUSDB-format ``.stem.mp4`` files for tests: synthetic ones, or cuts of real ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np

from tests.support.audio import write_audio

RATE = 44100


def synthetic_stems(seconds: float) -> dict[str, np.ndarray]:
    """The mixture and four stereo sources (``(2, n)``), no source silent in any 1 s frame,
    in a MUSDB file's stream order: mixture, drums, bass, other, vocals."""
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * RATE)) / RATE
    pan = np.array([[1.0], [0.8]])
    stems = {
        "drums": 0.3 * (np.sin(2 * np.pi * 4 * t) > 0.7) * rng.standard_normal((2, t.size)),
        "bass": 0.25 * np.sin(2 * np.pi * 55 * t) * pan,
        "other": 0.1 * (np.sin(2 * np.pi * 330 * t) + np.sin(2 * np.pi * 415 * t)) * pan[::-1],
        "vocals": 0.2 * np.sin(2 * np.pi * 440 * t + 3 * np.sin(2 * np.pi * 5 * t)) * pan,
    }
    stems["drums"] += 0.01 * rng.standard_normal((2, t.size))
    return {"mixture": sum(stems.values()), **stems}


def write_stem_file(out: Path, seconds: float, work: Path) -> Path:
    """Write a synthetic MUSDB-style ``.stem.mp4`` (five AAC streams) to ``out``; ``work``
    holds the intermediate wav files."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    for stream, samples in synthetic_stems(seconds).items():
        wav = write_audio(work / f"{stream}.wav", samples.astype(np.float32), RATE)
        cmd += ["-i", str(wav)]
    for k in range(5):
        cmd += ["-map", str(k)]
    subprocess.run([*cmd, "-c:a", "aac", "-b:a", "192k", str(out)], check=True)
    return out


def cut_real_file(source: Path, out: Path, seconds: float) -> Path:
    """The first ``seconds`` of a real MUSDB file, all five streams, without re-encoding."""
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(source), "-map", "0"]
    subprocess.run([*cmd, "-c", "copy", "-t", str(seconds), str(out)], check=True)
    return out
