"""Audio in and out through ffmpeg: probe, decode to 44.1 kHz stereo float32, encode mp3."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import tempfile
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from separation.errors import InvalidAudioError, SongTooLongError
from separation.naming import track_file_name, track_title

logger = logging.getLogger(__name__)

SAMPLERATE = 44100
MP3_BITRATE = "320k"

# A decoded length this much shorter than the container declares means the file was cut.
_TRUNCATION_TOLERANCE_S = 0.5
_TRUNCATION_RATIO = 0.9
# ffprobe reads headers only; a file that keeps it busy this long is hostile or broken.
PROBE_TIMEOUT_S = 30.0
# Decoding runs at hundreds of times real time; these bound a hostile file's hold on a worker.
DECODE_TIMEOUT_BASE_S = 30.0
DECODE_TIMEOUT_PER_AUDIO_S = 0.2
# ffmpeg stops this far past the duration limit, so "longer than the limit" is seen.
_OVER_LIMIT_MARGIN_S = 1.0
# Samples per block written to an encoder (about 1.5 s).
_ENCODE_BLOCK = 1 << 16


@dataclass(frozen=True)
class AudioInfo:
    """What ffprobe says about a file's first audio stream (no full decode).

    Attributes:
        duration_s: the declared duration in seconds (0.0 when the container declares none).
        samplerate: the stream's native sample rate in Hz.
        channels: the stream's channel count.
        codec: ffmpeg's codec name, e.g. ``"mp3"``.
        title: the title tag, when there is one.
        artist: the artist tag, when there is one.
        duration_estimated: ffprobe guessed the duration from the bitrate (an mp3 without
            a Xing/LAME header), so it may be far off; the decoded length is the truth.
    """

    duration_s: float
    samplerate: int
    channels: int
    codec: str
    title: str | None = None
    artist: str | None = None
    duration_estimated: bool = False


@dataclass(frozen=True)
class Audio:
    """A decoded song at 44.1 kHz stereo.

    Attributes:
        samples: float32 array of shape ``(2, n)``.
        info: what ffprobe said about the original file.
    """

    samples: np.ndarray = field(repr=False)
    info: AudioInfo

    @property
    def duration_s(self) -> float:
        """The decoded duration in seconds."""
        return self.samples.shape[1] / SAMPLERATE


def _tag(tags: Mapping[str, str], name: str) -> str | None:
    for key, value in tags.items():
        if key.lower() == name and value.strip():
            return value.strip()
    return None


def probe_audio(path: Path) -> AudioInfo:
    """Read duration, rate, channels, codec and tags of ``path``'s first audio stream.

    Args:
        path: any file; its content decides, never its name.

    Returns:
        The stream's :class:`AudioInfo`.

    Raises:
        InvalidAudioError: the file is missing, empty, or has no decodable audio stream.
    """
    if not path.is_file() or path.stat().st_size == 0:
        raise InvalidAudioError(f"{path}: missing or empty file")
    result = _run_bounded(
        [
            "ffprobe",
            "-v",
            "warning",
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name,sample_rate,channels,duration:stream_tags:format=duration:format_tags",
            "-of",
            "json",
            str(path),
        ],
        timeout_s=PROBE_TIMEOUT_S,
        path=path,
    )
    if result.returncode != 0:
        raise InvalidAudioError(f"{path}: ffprobe failed: {_last_line(result.stderr)}")
    try:
        data = json.loads(result.stdout or b"{}")
        stream = data["streams"][0]
        samplerate = int(stream["sample_rate"])
        channels = int(stream["channels"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise InvalidAudioError(f"{path}: no audio stream") from exc
    if samplerate <= 0 or channels <= 0:
        raise InvalidAudioError(f"{path}: audio stream without rate or channels")
    fmt = data.get("format", {})
    duration = _float_or_zero(stream.get("duration")) or _float_or_zero(fmt.get("duration"))
    tags = {**stream.get("tags", {}), **fmt.get("tags", {})}
    return AudioInfo(
        duration_s=duration,
        samplerate=samplerate,
        channels=channels,
        codec=str(stream.get("codec_name", "unknown")),
        title=_tag(tags, "title"),
        artist=_tag(tags, "artist"),
        duration_estimated=b"Estimating duration from bitrate" in result.stderr,
    )


def _float_or_zero(value: object) -> float:
    try:
        number = float(str(value))
    except ValueError:
        return 0.0
    return number if np.isfinite(number) and number > 0 else 0.0


def _run_bounded(
    cmd: list[str], *, timeout_s: float, path: Path
) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, capture_output=True, stdin=subprocess.DEVNULL, timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        # subprocess.run has killed it; a file that takes this long is not a song we serve.
        raise InvalidAudioError(f"{path}: {cmd[0]} ran past {timeout_s:.0f}s") from exc


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def decode_audio(
    path: Path,
    info: AudioInfo | None = None,
    *,
    stream: int = 0,
    max_duration_s: float | None = None,
) -> Audio:
    """Decode ``path`` to 44.1 kHz stereo float32.

    Mono is duplicated to both channels; more than two channels are downmixed by ffmpeg.
    The LAME gapless header of an mp3 is honoured, so the samples are those a player plays.

    Args:
        path: any file ffmpeg decodes (mp3, wav, flac, ogg/opus, m4a/aac, ...).
        info: what :func:`probe_audio` said of ``path``, when the caller already asked
            (saves a second probe).
        stream: which audio stream to decode (a multitrack file such as MUSDB's
            ``.stem.mp4`` has several); ``info`` describes the first one.
        max_duration_s: the longest song accepted. ffmpeg stops a second past it, whatever
            the file declares, so memory stays proportional to the limit: a few MB that
            decode to hours are refused after reading the first limit's worth.

    Returns:
        The decoded :class:`Audio`.

    Raises:
        InvalidAudioError: not audio, empty, no samples, cut short (truncated), or not
            decoded within its time limit.
        SongTooLongError: longer than ``max_duration_s``.
    """
    if info is None:
        info = probe_audio(path)
    # ffmpeg's own mono-to-stereo upmix is not a plain copy, so mono is decoded as mono.
    out_channels = 1 if info.channels == 1 else 2
    limit = [] if max_duration_s is None else ["-t", str(max_duration_s + _OVER_LIMIT_MARGIN_S)]
    expected_s = max_duration_s or info.duration_s or 3600.0
    result = _run_bounded(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            *limit,
            "-map",
            f"0:a:{stream}",
            "-f",
            "f32le",
            "-acodec",
            "pcm_f32le",
            "-ar",
            str(SAMPLERATE),
            "-ac",
            str(out_channels),
            "pipe:1",
        ],
        timeout_s=DECODE_TIMEOUT_BASE_S + DECODE_TIMEOUT_PER_AUDIO_S * expected_s,
        path=path,
    )
    if result.returncode != 0:
        raise InvalidAudioError(f"{path}: ffmpeg failed: {_last_line(result.stderr)}")
    raw = result.stdout
    frames = len(raw) // (4 * out_channels)
    if frames == 0:
        raise InvalidAudioError(f"{path}: no audio samples")
    interleaved = np.frombuffer(raw, dtype=np.float32, count=frames * out_channels)
    del result
    if max_duration_s is not None and frames > max_duration_s * SAMPLERATE:
        raise SongTooLongError(
            f"{path}: longer than {max_duration_s:g}s (stopped decoding there)", max_duration_s
        )
    if out_channels == 1:
        samples = np.repeat(interleaved[None, :], 2, axis=0)
    else:
        samples = np.ascontiguousarray(interleaved.reshape(frames, 2).T)
    del raw, interleaved
    if not np.isfinite(samples).all():
        raise InvalidAudioError(f"{path}: decoded samples are not finite")
    decoded_s = frames / SAMPLERATE
    if (
        info.duration_s
        and not info.duration_estimated
        and decoded_s
        < min(info.duration_s * _TRUNCATION_RATIO, info.duration_s - _TRUNCATION_TOLERANCE_S)
    ):
        raise InvalidAudioError(
            f"{path}: truncated: {decoded_s:.2f}s decoded of {info.duration_s:.2f}s declared"
        )
    return Audio(samples=samples, info=info)


def encode_tracks(
    tracks: Mapping[str, np.ndarray],
    out_dir: Path,
    song_name: str,
    *,
    artist: str | None = None,
) -> list[Path]:
    """Encode each track as a 320 kbps mp3 in ``out_dir``, in parallel.

    Files are named :func:`separation.naming.track_file_name` and tagged with the title
    :func:`separation.naming.track_title` and ``artist`` when given. ffmpeg writes the LAME
    header with encoder delay and padding, so decoders that honour it (ffmpeg, most players
    and DAWs) play exactly the track's samples, aligned with the input. Each file is written
    under a temporary name and renamed, so a reader never sees half a file.

    Args:
        tracks: track name to float32 array ``(2, n)`` at 44.1 kHz.
        out_dir: the folder to write; created if missing.
        song_name: a name made safe by :func:`separation.naming.safe_song_name`.
        artist: the artist tag to carry over.

    Returns:
        The written paths, in ``tracks`` order.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (out_dir / track_file_name(song_name, track), track_title(song_name, track), samples)
        for track, samples in tracks.items()
    ]
    if not jobs:
        return []
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    # Each encode is an ffmpeg process; threads only feed them, so tracks encode in parallel.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mp3-encode") as pool:
        futures = [
            pool.submit(_encode_one, samples, path, title, artist) for path, title, samples in jobs
        ]
        return [future.result() for future in futures]


def _encode_one(samples: np.ndarray, path: Path, title: str, artist: str | None) -> Path:
    if samples.ndim != 2 or samples.shape[0] != 2:
        raise ValueError(f"a track is a (2, n) array, got shape {samples.shape}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "f32le",
        "-ar",
        str(SAMPLERATE),
        "-ac",
        "2",
        "-i",
        "pipe:0",
        "-c:a",
        "libmp3lame",
        "-b:a",
        MP3_BITRATE,
        "-id3v2_version",
        "3",
        "-write_xing",
        "1",
        "-metadata",
        f"title={title}",
    ]
    if artist:
        cmd += ["-metadata", f"artist={artist}"]
    cmd += ["-f", "mp3", str(tmp)]
    try:
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors
            )
            assert process.stdin is not None
            try:
                # Fed in blocks: interleaving a whole song at once would cost one more copy
                # of it per encoder running.
                for start in range(0, samples.shape[1], _ENCODE_BLOCK):
                    block = samples[:, start : start + _ENCODE_BLOCK]
                    process.stdin.write(np.ascontiguousarray(block.T, dtype=np.float32).data)
            except BrokenPipeError:
                pass  # ffmpeg stopped early; its status and message say why
            finally:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
            status = process.wait()
            if status != 0:
                errors.seek(0)
                message = _last_line(errors.read())
                raise RuntimeError(f"ffmpeg could not encode {path.name}: {message}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
