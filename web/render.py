"""A mix at full quality: Σ gᵢ·trackᵢ of the delivered tracks, tempo and pitch, never clipped.

Pass 1 (ffmpeg): each track with a non-zero gain decoded to 44.1 kHz stereo float, scaled by
its gain (``volume``), summed (``amix`` with ``normalize=0``: a plain sum), then, only when
asked, time-stretched and pitch-shifted by ``rubberband`` (``tempo=t``, ``pitch=2^(s/12)``),
written as raw float32. Its peak is read in blocks (:mod:`array`, no numpy). Pass 2: the
float mix, turned down as a whole when its peak is above full scale (by exactly the dB
needed, which the caption names), encoded in the user's format with the worker's codec
options (:data:`separation.formats.CODEC_ARGS`); a FLAC over the upload limit goes as mp3.
Both passes are subprocesses: the event loop only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from separation.formats import CODEC_ARGS, OutputFormat
from separation.naming import track_file_name, track_title

logger = logging.getLogger(__name__)

SAMPLERATE = 44_100
LEVEL_MIN_DB, LEVEL_MAX_DB = -60.0, 12.0
TEMPO_MIN, TEMPO_MAX = 0.5, 1.5
PITCH_MIN, PITCH_MAX = -12, 12
# Where a mix that would clip is brought to: just under full scale, so the mp3's decoded
# peaks (the encoder adds a little) stay within it too.
CEILING = 10 ** (-0.3 / 20)
# Floats read at once when looking for the peak (4 MB).
PEAK_BLOCK = 1 << 20


class BadParams(ValueError):
    """A render request that is not valid (400); the message says what."""


@dataclass(frozen=True)
class MixParams:
    """What the user set on the page."""

    levels_db: Mapping[str, float]
    muted: tuple[str, ...] = ()
    solo: tuple[str, ...] = ()
    tempo: float = 1.0
    pitch_semitones: int = 0

    def gains(self, tracks: Sequence[str]) -> dict[str, float]:
        """Each track's linear gain: 10^(dB/20); 0 when muted or when others are soloed."""
        gains = {}
        for track in tracks:
            if track in self.muted or (self.solo and track not in self.solo):
                gains[track] = 0.0
            else:
                gains[track] = 10 ** (self.levels_db.get(track, 0.0) / 20)
        return gains


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadParams(f"{name} must be a number")
    return float(value)


def _names(value: Any, name: str, tracks: Sequence[str]) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadParams(f"{name} must be a list of track names")
    unknown = [item for item in value if item not in tracks]
    if unknown:
        raise BadParams(f"{name}: no track named {unknown[0][:40]!r} in this mix")
    return tuple(dict.fromkeys(value))


def parse_params(body: Any, tracks: Sequence[str]) -> MixParams:
    """The render request's JSON body, checked against ``tracks`` and the ranges."""
    if not isinstance(body, dict):
        raise BadParams("the body must be a JSON object")
    known = {"levels_db", "muted", "solo", "tempo", "pitch_semitones"}
    extra = sorted(set(body) - known)
    if extra:
        raise BadParams(f"unknown field {extra[0][:40]!r}")
    levels_raw = body.get("levels_db") or {}
    if not isinstance(levels_raw, dict):
        raise BadParams("levels_db must be an object of track: dB")
    levels: dict[str, float] = {}
    for track, value in levels_raw.items():
        if track not in tracks:
            raise BadParams(f"levels_db: no track named {str(track)[:40]!r} in this mix")
        level = _number(value, f"levels_db.{track}")
        if not LEVEL_MIN_DB <= level <= LEVEL_MAX_DB:
            raise BadParams(f"levels_db.{track} must be within {LEVEL_MIN_DB:g}..{LEVEL_MAX_DB:g}")
        levels[track] = level
    tempo = _number(body.get("tempo", 1.0), "tempo")
    if not TEMPO_MIN <= tempo <= TEMPO_MAX:
        raise BadParams(f"tempo must be within {TEMPO_MIN:g}..{TEMPO_MAX:g}")
    pitch_raw = body.get("pitch_semitones", 0)
    pitch = _number(pitch_raw, "pitch_semitones")
    if pitch != int(pitch):
        raise BadParams("pitch_semitones must be a whole number")
    if not PITCH_MIN <= pitch <= PITCH_MAX:
        raise BadParams(f"pitch_semitones must be within {PITCH_MIN}..{PITCH_MAX}")
    return MixParams(
        levels,
        _names(body.get("muted"), "muted", tracks),
        _names(body.get("solo"), "solo", tracks),
        tempo,
        int(pitch),
    )


@dataclass(frozen=True)
class RenderedMix:
    path: Path
    fmt: OutputFormat
    peak: float  # before turning down
    lowered_db: float  # 0 when the mix did not need turning down


def filter_graph(gains: Sequence[float], tempo: float, pitch_semitones: int) -> str:
    """ffmpeg's filter graph: input i scaled by gains[i], summed, stretched when asked."""
    chains = [
        f"[{i}:a]aresample={SAMPLERATE},aformat=sample_fmts=flt:channel_layouts=stereo,"
        f"volume={gain:.10f}:precision=float[a{i}]"
        for i, gain in enumerate(gains)
    ]
    labels = "".join(f"[a{i}]" for i in range(len(gains)))
    chains.append(f"{labels}amix=inputs={len(gains)}:normalize=0:duration=longest[sum]")
    last = "sum"
    if abs(tempo - 1.0) > 1e-9 or pitch_semitones:
        ratio = 2 ** (pitch_semitones / 12)
        chains.append(f"[sum]rubberband=tempo={tempo:.6f}:pitch={ratio:.10f}[stretched]")
        last = "stretched"
    chains.append(f"[{last}]aformat=sample_fmts=flt:channel_layouts=stereo[out]")
    return ";".join(chains)


async def _ffmpeg(args: Sequence[str]) -> None:
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-v", "error", "-y", *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await process.communicate()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        message = err.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"ffmpeg failed: {message[-1] if message else process.returncode}")


def float_peak(path: Path) -> float:
    """The largest |sample| of a raw float32 file, read in blocks."""
    peak = 0.0
    with path.open("rb") as file:
        while True:
            block = array("f")
            data = file.read(PEAK_BLOCK * 4)
            if not data:
                break
            block.frombytes(data[: len(data) - len(data) % 4])
            if sys.byteorder == "big":
                block.byteswap()
            if block:
                peak = max(peak, max(block), -min(block))
    return peak


async def render_mix(
    inputs: Sequence[tuple[Path, float]],
    out_dir: Path,
    song_name: str,
    *,
    artist: str | None,
    fmt: OutputFormat,
    tempo: float,
    pitch_semitones: int,
    limit_bytes: int,
) -> RenderedMix:
    """Mix ``inputs`` (file, linear gain > 0) into ``out_dir/<song> - mix.<ext>``."""
    if not inputs:
        raise ValueError("nothing to mix")
    raw = out_dir / "mix.f32"
    args: list[str] = []
    for path, _ in inputs:
        args += ["-i", str(path)]
    graph = filter_graph([gain for _, gain in inputs], tempo, pitch_semitones)
    await _ffmpeg([*args, "-filter_complex", graph, "-map", "[out]", "-f", "f32le", str(raw)])
    peak = await asyncio.to_thread(float_peak, raw)
    scale = CEILING / peak if peak > 1.0 else 1.0
    lowered_db = round(-20 * math.log10(scale), 2) if scale < 1.0 else 0.0
    result = await _encode(raw, out_dir, song_name, artist, fmt, scale)
    if fmt != "mp3" and result.stat().st_size > limit_bytes:
        logger.info("the mix is over the upload limit as %s: sent as mp3", fmt)
        result.unlink(missing_ok=True)
        fmt = "mp3"
        result = await _encode(raw, out_dir, song_name, artist, fmt, scale)
    raw.unlink(missing_ok=True)
    return RenderedMix(result, fmt, peak, lowered_db)


async def _encode(
    raw: Path, out_dir: Path, song_name: str, artist: str | None, fmt: str, scale: float
) -> Path:
    path = out_dir / track_file_name(song_name, "mix", fmt)
    tmp = out_dir / f".mix.{os.getpid()}.{fmt}"
    args = ["-f", "f32le", "-ar", str(SAMPLERATE), "-ac", "2", "-i", str(raw)]
    if scale < 1.0:
        args += ["-af", f"volume={scale:.10f}:precision=float"]
    args += [*CODEC_ARGS[fmt], "-metadata", f"title={track_title(song_name, 'mix')}"]
    if artist:
        args += ["-metadata", f"artist={artist}"]
    await _ffmpeg([*args, "-f", fmt, str(tmp)])
    os.replace(tmp, path)
    return path
