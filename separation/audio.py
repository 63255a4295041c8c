"""Audio in and out through ffmpeg: probe, decode to 44.1 kHz stereo float32, encode mp3,
FLAC or WAV."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import mmap
import os
import subprocess
import tempfile
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TypeAlias

import numpy as np
import numpy.typing as npt

from separation.errors import InvalidAudioError, NoSoundError, SongTooLongError
from separation.formats import (
    CODEC_ARGS,
    DEFAULT_OUTPUT_FORMAT,
    FILE_FORMATS,
    FileFormat,
)
from separation.naming import safe_tag, track_file_name, track_title

logger = logging.getLogger(__name__)

SAMPLERATE = 44100

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
# Bytes per block read from the decoder, each in a mapping of its own (_mapped_empty),
# returned to the system when freed.
_DECODE_BLOCK_BYTES = 64 << 20
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
class SpooledSamples:
    """A decoded song's float32 samples on disk, one raw file per channel (the same file
    twice for a mono song), read a window at a time: a long song then costs memory only
    for the windows being worked on, as the tracks do (:class:`RawTrack`).

    Indexing with ``[:, start:stop]`` reads that span as a float32 ``(2, stop - start)``
    array; ``np.asarray`` reads the whole song. The files live as long as the folder the
    song was decoded into (:func:`decode_audio`'s ``spool_dir``).

    Attributes:
        channels: the left and right channels' files (raw float32, native byte order).
        frames: the song's length in samples per channel.
    """

    channels: tuple[Path, Path]
    frames: int

    ndim = 2
    dtype = np.dtype(np.float32)

    @property
    def shape(self) -> tuple[int, int]:
        """``(2, frames)``, as the samples' array would have."""
        return (2, self.frames)

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Samples ``[start, stop)`` (clipped to the song) as a new float32 ``(2, n)``
        array."""
        start, stop, _ = slice(start, stop).indices(self.frames)
        out = np.empty((2, max(0, stop - start)), dtype=np.float32)
        for row, path in zip(out, self.channels, strict=True):
            with open(path, "rb") as file:
                file.seek(4 * start)
                view = row.data.cast("B")
                filled = 0
                while filled < len(view) and (got := file.readinto(view[filled:])):
                    filled += got
            if filled != len(view):
                raise OSError(f"{path}: {filled} of {len(view)} bytes of the song read back")
        return out

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, span = key
        if rows != slice(None) or span.step not in (None, 1):
            raise IndexError("a spooled song is read as [:, start:stop]")
        return self.read(span.start or 0, span.stop)

    def __array__(self, dtype: npt.DTypeLike | None = None, copy: bool | None = None) -> np.ndarray:
        return self.read() if dtype is None else self.read().astype(dtype)


Samples: TypeAlias = np.ndarray | SpooledSamples
"""A decoded song's samples: float32 ``(2, n)`` in memory, or on disk."""


@dataclass(frozen=True)
class Audio:
    """A decoded song at 44.1 kHz stereo.

    Attributes:
        samples: float32 ``(2, n)``: an array, or :class:`SpooledSamples` when the song
            was decoded to disk.
        info: what ffprobe said about the original file.
    """

    samples: Samples = field(repr=False)
    info: AudioInfo

    @property
    def duration_s(self) -> float:
        """The decoded duration in seconds."""
        return self.samples.shape[1] / SAMPLERATE


@dataclass(frozen=True)
class RawTrack:
    """A track spilled to disk as raw float32 interleaved stereo at 44.1 kHz (ffmpeg's
    ``f32le``), so a long song's tracks need not all be in memory at once.

    Attributes:
        path: the file.
        frames: its length in samples per channel.
    """

    path: Path
    frames: int

    def read(self) -> np.ndarray:
        """The whole track as a float32 ``(2, frames)`` array."""
        interleaved = np.fromfile(self.path, dtype=np.float32, count=2 * self.frames)
        return np.ascontiguousarray(interleaved.reshape(self.frames, 2).T)


Track: TypeAlias = np.ndarray | RawTrack
"""A track's samples: in memory (float32 ``(2, n)``) or spilled to disk."""


def track_frames(track: Track) -> int:
    """A track's length in samples per channel."""
    return track.frames if isinstance(track, RawTrack) else int(track.shape[1])


def _tag(tags: Mapping[str, str], name: str) -> str | None:
    # Tags are whatever the file's author wrote: made safe here, before anyone shows them.
    for key, value in tags.items():
        if key.lower() == name and (tag := safe_tag(value)):
            return tag
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


def _mapped_empty(count: int) -> np.ndarray:
    """An uninitialised float32 array of ``count`` samples in an anonymous mapping of its
    own: returned to the system when its last view goes, and never in malloc's heap, which
    keeps the passes' working set (:mod:`separation.heap`) and may have ``mmap`` off while
    another job's pass runs."""
    if count == 0:
        return np.empty(0, dtype=np.float32)
    # Private: a shared anonymous mapping is shmem, and a forked child would write into it.
    mapping = mmap.mmap(-1, 4 * count, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return np.frombuffer(mapping, dtype=np.float32)


class _SongSpool:
    """Where a song decoded to disk goes: each channel appended to a raw file of its own in
    ``folder`` as the decoder's blocks arrive (one file for mono)."""

    def __init__(self, folder: Path, channels: int) -> None:
        self._files: list[IO[bytes]] = []
        self._paths: list[Path] = []
        try:
            for name in ("left", "right")[:channels]:
                handle, where = tempfile.mkstemp(prefix=f"song-{name}-", suffix=".f32", dir=folder)
                self._paths.append(Path(where))
                self._files.append(os.fdopen(handle, "wb"))
        except BaseException:
            self.discard()
            raise
        self.frames = 0

    def add(self, interleaved: np.ndarray) -> None:
        """Append whole frames of interleaved samples."""
        frames = interleaved.reshape(-1, len(self._files))
        for channel, file in enumerate(self._files):
            file.write(np.ascontiguousarray(frames[:, channel]).data)
        self.frames += frames.shape[0]

    def close(self) -> SpooledSamples:
        """The spooled song (its files flushed and closed)."""
        for file in self._files:
            file.close()
        return SpooledSamples((self._paths[0], self._paths[-1]), self.frames)

    def discard(self) -> None:
        """Close and remove the files."""
        for file in self._files:
            file.close()
        for path in self._paths:
            path.unlink(missing_ok=True)


def _decode_pcm(
    cmd: list[str],
    *,
    channels: int,
    timeout_s: float,
    path: Path,
    spool_dir: Path | None = None,
) -> tuple[int, bytes, Samples | None]:
    """Run the decoder ``cmd`` (float32 samples of ``channels`` on its stdout) within
    ``timeout_s``: its exit status, its stderr, and the samples as float32 ``(2, n)`` (mono
    on both rows), or None when some are not finite.

    The output is read in blocks. Into memory, the blocks are then moved one by one into
    the song's array, each freed as it is moved, so the song is held about once, not
    twice; with ``spool_dir`` each block is written to the song's files there as it
    arrives, so only a block is held.

    Raises:
        InvalidAudioError: the decoder ran past ``timeout_s`` (it is killed).
        OSError: the song's files could not be written.
    """
    timed_out = threading.Event()
    blocks: list[tuple[np.ndarray, int]] = []
    spool = None if spool_dir is None else _SongSpool(spool_dir, channels)
    finite = True
    try:
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errors
            )

            def kill() -> None:
                timed_out.set()
                process.kill()

            timer = threading.Timer(timeout_s, kill)
            timer.start()
            try:
                reader = process.stdout
                assert isinstance(reader, io.BufferedReader)
                # One block is reused when spooling; into memory each is kept until moved.
                block = _mapped_empty(_DECODE_BLOCK_BYTES // 4)
                while True:
                    if spool is None and blocks:
                        block = _mapped_empty(_DECODE_BLOCK_BYTES // 4)
                    view = block.data.cast("B")
                    filled = 0
                    while filled < len(view) and (got := reader.readinto(view[filled:])):
                        filled += got
                    del view
                    if spool is None:
                        blocks.append((block, filled))
                    elif finite:
                        # Whole frames only: a killed decoder may stop inside one.
                        data = block[: filled // (4 * channels) * channels]
                        # After a non-finite block the rest is read, not kept, so the
                        # decoder is not left blocked on a full pipe.
                        finite = bool(np.isfinite(data).all())
                        if finite:
                            spool.add(data)
                        del data
                    if filled < _DECODE_BLOCK_BYTES:
                        break
                status = process.wait()
            finally:
                timer.cancel()
                if process.poll() is None:
                    process.kill()
                    process.wait()
                if process.stdout is not None:
                    process.stdout.close()
            if timed_out.is_set() and status < 0:
                # Killed by the timer (one that fired as ffmpeg ended does not count): a
                # file that takes this long is not a song we serve.
                raise InvalidAudioError(f"{path}: {cmd[0]} ran past {timeout_s:.0f}s")
            errors.seek(0)
            stderr = errors.read()
        if spool is not None:
            if not finite:
                spool.discard()
                return status, stderr, None
            return status, stderr, spool.close()
    except BaseException:
        if spool is not None:
            spool.discard()
        raise
    frames = sum(filled for _, filled in blocks) // (4 * channels)
    samples = _mapped_empty(2 * frames).reshape(2, frames)
    at = 0
    while blocks:
        block, filled = blocks.pop(0)
        count = min(filled // (4 * channels), frames - at)
        data = block[: count * channels]
        if not np.isfinite(data).all():
            return status, stderr, None
        # Blocks hold whole frames: their size is a multiple of the frame's.
        samples[:, at : at + count] = data.reshape(count, channels).T
        at += count
        del block, data
    return status, stderr, samples


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def decode_audio(
    path: Path,
    info: AudioInfo | None = None,
    *,
    stream: int = 0,
    max_duration_s: float | None = None,
    spool_dir: Path | None = None,
) -> Audio:
    """Decode ``path`` to 44.1 kHz stereo float32, in memory or on disk.

    Mono is duplicated to both channels; more than two channels are downmixed by ffmpeg's
    default matrix: for 5.1 and 7.1 (and 8 channels of unknown layout, taken as 7.1) the
    front left and right pass at gain 1, centre and surrounds at 0.707, and the LFE channel
    is left out, as the ITU-R BS.775 downmix does. Nothing is normalised or clipped:
    samples are float32, so a loud downmix, or a float file above full scale, keeps its
    values above 1.0. The LAME gapless header of an mp3 is honoured, so the samples are
    those a player plays. Resampling to 44.1 kHz yields nothing for a file of a few dozen
    samples at another rate (ffmpeg 5.1), which is then refused as holding no audio.

    Args:
        path: any file ffmpeg decodes (mp3, wav, flac, ogg/opus, m4a/aac, ...).
        info: what :func:`probe_audio` said of ``path``, when the caller already asked
            (saves a second probe).
        stream: which audio stream to decode (a multitrack file such as MUSDB's
            ``.stem.mp4`` has several); ``info`` describes the first one.
        max_duration_s: the longest song accepted. ffmpeg stops a second past it, whatever
            the file declares, so memory stays proportional to the limit: a few MB that
            decode to hours are refused after reading the first limit's worth.
        spool_dir: an existing folder to decode into: the samples are then
            :class:`SpooledSamples`, raw files there (4 bytes per sample and channel,
            about 21 MB per minute), and the song costs memory only for the windows the
            separation reads; the files go with the folder. None: a float32 array.

    Returns:
        The decoded :class:`Audio`.

    Raises:
        InvalidAudioError: not audio, empty, no samples, cut short (truncated), or not
            decoded within its time limit.
        SongTooLongError: longer than ``max_duration_s``.
        OSError: ``spool_dir`` could not be written (a refused song leaves no file there).
    """
    if info is None:
        info = probe_audio(path)
    # ffmpeg's own mono-to-stereo upmix is not a plain copy, so mono is decoded as mono.
    out_channels = 1 if info.channels == 1 else 2
    limit = [] if max_duration_s is None else ["-t", str(max_duration_s + _OVER_LIMIT_MARGIN_S)]
    expected_s = max_duration_s or info.duration_s or 3600.0
    status, stderr, samples = _decode_pcm(
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
        channels=out_channels,
        timeout_s=DECODE_TIMEOUT_BASE_S + DECODE_TIMEOUT_PER_AUDIO_S * expected_s,
        path=path,
        spool_dir=spool_dir,
    )
    try:
        _check_decoded(path, info, status, stderr, samples, max_duration_s)
    except BaseException:
        if isinstance(samples, SpooledSamples):
            for file in set(samples.channels):
                file.unlink(missing_ok=True)
        raise
    assert samples is not None
    return Audio(samples=samples, info=info)


def _check_decoded(
    path: Path,
    info: AudioInfo,
    status: int,
    stderr: bytes,
    samples: Samples | None,
    max_duration_s: float | None,
) -> None:
    """Raise the error that refuses a decode's outcome, if any (see :func:`decode_audio`)."""
    if status != 0:
        raise InvalidAudioError(f"{path}: ffmpeg failed: {_last_line(stderr)}")
    if samples is None:
        raise InvalidAudioError(f"{path}: decoded samples are not finite")
    frames = samples.shape[1]
    if frames == 0:
        if info.duration_s >= _TRUNCATION_TOLERANCE_S:
            raise InvalidAudioError(
                f"{path}: no audio samples decoded of {info.duration_s:.2f}s declared"
            )
        raise NoSoundError(f"{path}: no audio samples")
    if max_duration_s is not None and frames > max_duration_s * SAMPLERATE:
        raise SongTooLongError(
            f"{path}: longer than {max_duration_s:g}s (stopped decoding there)", max_duration_s
        )
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


def encode_tracks(
    tracks: Mapping[str, Track],
    out_dir: Path,
    song_name: str,
    *,
    artist: str | None = None,
    fmt: FileFormat = DEFAULT_OUTPUT_FORMAT,
) -> list[Path]:
    """Encode each track as a 320 kbps mp3, a 24-bit FLAC or a 32-bit float WAV in
    ``out_dir``, in parallel.

    Files are named :func:`separation.naming.track_file_name` with ``fmt`` as extension and
    tagged with the title :func:`separation.naming.track_title` and ``artist`` when given.
    For mp3, ffmpeg writes the LAME header with encoder delay and padding, so decoders that
    honour it (ffmpeg, most players and DAWs) play exactly the track's samples, aligned with
    the input; FLAC and WAV have no delay, so they are aligned as they are. Each file is
    written under a temporary name and renamed, so a reader never sees half a file.

    Levels are left alone, but the formats differ above full scale. LAME takes the
    float samples as they are, so peaks above 1.0 (a hot float master, a loud downmix) stay
    above 1.0 in the mp3 for a float decoder such as ffmpeg, and the tracks still sum to the
    mix; a player that converts to 16-bit clips them, the mix included. 24-bit FLAC is
    integer: samples are quantised to 24 bits (noise near -146 dBFS, far below what the
    tracks' sum needs) and samples beyond full scale are clipped to it on encode, so only
    tracks within full scale sum back to the mix exactly. A track of a song that does not
    clip can still peak a little above 1.0 (two stems in antiphase each louder than their
    sum); those peaks are clipped in FLAC. WAV holds the float32 samples themselves, bit for
    bit: nothing is quantised or clipped, and the tracks sum to the mix as separated (RF64
    past 4 GB, about three hours of stereo).

    Args:
        tracks: track name to float32 array ``(2, n)`` at 44.1 kHz, or to a
            :class:`RawTrack` that ffmpeg reads from disk itself.
        out_dir: the folder to write; created if missing.
        song_name: a name made safe by :func:`separation.naming.safe_song_name`.
        artist: the artist tag to carry over.
        fmt: ``"mp3"`` (320 kbps), ``"flac"`` (24-bit) or ``"wav"`` (32-bit float).

    Returns:
        The written paths, in ``tracks`` order.

    Raises:
        OSError: the disk is full, over quota or read-only (the machine's fault).
        RuntimeError: ffmpeg failed for another reason.
    """
    if fmt not in FILE_FORMATS:
        raise ValueError(f"not an output format: {fmt!r}")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [
        (out_dir / track_file_name(song_name, track, fmt), track_title(song_name, track), samples)
        for track, samples in tracks.items()
    ]
    if not jobs:
        return []
    workers = max(1, min(len(jobs), os.cpu_count() or 1))
    # Each encode is an ffmpeg process; threads only feed them, so tracks encode in parallel.
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{fmt}-encode") as pool:
        futures = [
            pool.submit(_encode_one, samples, path, title, artist, fmt)
            for path, title, samples in jobs
        ]
        return [future.result() for future in futures]


_STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)


# The codec options of each format (separation.formats, shared with the mixer's renders).
_CODEC_ARGS = CODEC_ARGS


def _encode_one(
    samples: Track, path: Path, title: str, artist: str | None, fmt: FileFormat
) -> Path:
    if not isinstance(samples, RawTrack) and (samples.ndim != 2 or samples.shape[0] != 2):
        raise ValueError(f"a track is a (2, n) array, got shape {samples.shape}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    source = str(samples.path) if isinstance(samples, RawTrack) else "pipe:0"
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
        source,
        *_CODEC_ARGS[fmt],
        "-metadata",
        f"title={title}",
    ]
    if artist:
        cmd += ["-metadata", f"artist={artist}"]
    cmd += ["-f", fmt, str(tmp)]
    try:
        with tempfile.TemporaryFile() as errors:
            if isinstance(samples, RawTrack):
                status = subprocess.run(
                    cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors
                ).returncode
            else:
                status = _encode_from_memory(cmd, samples, errors)
            if status != 0:
                errors.seek(0)
                message = _last_line(errors.read())
                for code in _STORAGE_ERRNOS:
                    # A full or read-only disk is the machine's problem, not the song's:
                    # raised as the OSError it is, so callers can tell the two apart.
                    if os.strerror(code) in message:
                        raise OSError(code, f"ffmpeg could not write {path.name}: {message}")
                raise RuntimeError(f"ffmpeg could not encode {path.name}: {message}")
        if fmt == "mp3":
            _fix_gapless_padding(tmp, track_frames(samples))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _encode_from_memory(cmd: list[str], samples: np.ndarray, errors: IO[bytes]) -> int:
    """Run the encoder ``cmd`` fed ``samples`` on its stdin; its exit status."""
    process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors)
    assert process.stdin is not None
    try:
        # Fed in blocks: interleaving a whole song at once would cost one more copy of it
        # per encoder running.
        for start in range(0, samples.shape[1], _ENCODE_BLOCK):
            block = samples[:, start : start + _ENCODE_BLOCK]
            process.stdin.write(np.ascontiguousarray(block.T, dtype=np.float32).data)
    except BrokenPipeError:
        pass  # ffmpeg stopped early; its status and message say why
    finally:
        with contextlib.suppress(BrokenPipeError):
            process.stdin.close()
    return process.wait()


# MPEG-1 Layer III, all ffmpeg writes at 44.1 kHz: kbit/s by bitrate index, Hz by rate index.
_MPEG1_L3_KBPS = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG1_RATES = (44100, 48000, 32000)
_MPEG1_FRAME_SAMPLES = 1152
# The LAME tag's CRC covers the first 190 bytes of the Info frame and is stored right after.
_LAME_CRC_AT = 190


def _mpeg1_l3_frame_size(header: bytes | bytearray) -> int:
    """The byte length of the MPEG-1 Layer III frame that ``header`` starts, 0 if it is none."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xFE != 0xFA:
        return 0
    bitrate, rate = header[2] >> 4, header[2] >> 2 & 3
    if not 0 < bitrate < 15 or rate == 3:
        return 0
    return 144_000 * _MPEG1_L3_KBPS[bitrate] // _MPEG1_RATES[rate] + (header[2] >> 1 & 1)


def _crc16(data: bytes | bytearray) -> int:
    """CRC-16 with the reflected polynomial 0x8005 (LAME's tag CRC, ffmpeg's CRC_16_ANSI_LE)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def _fix_gapless_padding(path: Path, n: int) -> None:
    """Set the end padding in the LAME tag of ffmpeg's mp3 at ``path`` so it plays ``n`` samples."""
    # ffmpeg (5.1) takes the padding from the last packet alone. When LAME's flush ends with
    # a frame of padding only (n % 1152 in 1..46), the padding of the frame before it is
    # lost and decoders play up to 46 samples past the end. The padding is recomputed from
    # what the file holds; a file laid out otherwise than expected is left as it is.
    with path.open("r+b") as file:
        id3 = file.read(10)
        start = 0
        if len(id3) == 10 and id3[:3] == b"ID3":
            start = 10 + sum((b & 0x7F) << 7 * (3 - i) for i, b in enumerate(id3[6:10]))
            start += 10 if id3[5] & 0x10 else 0  # a footer
        file.seek(start)
        frame = bytearray(file.read(_LAME_CRC_AT + 2))
        size = _mpeg1_l3_frame_size(frame)
        # Stereo (32 bytes of side information), no frame CRC: the layout ffmpeg writes.
        tag = 4 + 32
        if len(frame) < _LAME_CRC_AT + 2 or size < len(frame) or frame[1] & 1 == 0:
            return
        if frame[3] >> 6 == 3 or frame[tag : tag + 4] not in (b"Info", b"Xing"):
            return
        flags = int.from_bytes(frame[tag + 4 : tag + 8], "big")
        lame = tag + 16 + (100 if flags & 4 else 0) + (4 if flags & 8 else 0)
        stored_crc = int.from_bytes(frame[_LAME_CRC_AT:], "big")
        if (
            flags & 3 != 3
            or lame + 34 != _LAME_CRC_AT
            or _crc16(frame[:_LAME_CRC_AT]) != stored_crc
        ):
            return
        frames = int.from_bytes(frame[tag + 8 : tag + 12], "big")
        length = int.from_bytes(frame[tag + 12 : tag + 16], "big")
        # The frame count is trusted only if the file holds exactly that many frames, and
        # the byte count the tag declares.
        if file.seek(0, os.SEEK_END) != start + length:
            return
        count, position = 0, start + size
        while position < start + length:
            file.seek(position)
            if not (step := _mpeg1_l3_frame_size(file.read(4))):
                return
            count, position = count + 1, position + step
        if count != frames or position != start + length:
            return
        fields = int.from_bytes(frame[lame + 21 : lame + 24], "big")
        delay, padding = fields >> 12, fields & 0xFFF
        wanted = frames * _MPEG1_FRAME_SAMPLES - delay - n
        if wanted == padding or not 0 <= wanted < 1 << 12:
            return
        frame[lame + 21 : lame + 24] = ((delay << 12) | wanted).to_bytes(3, "big")
        frame[_LAME_CRC_AT:] = _crc16(frame[:_LAME_CRC_AT]).to_bytes(2, "big")
        file.seek(start)
        file.write(frame)
