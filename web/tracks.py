"""The delivered tracks, fetched from the Bot API by their ``file_id`` and kept on disk, and
their waveforms (``peaks``).

Workers share no disk with the web app: the tracks come from the chat itself (``getFile``
on the ``file_id`` the worker recorded, then the download). The public Bot API hands over at
most 20 MB per file; a bigger track is reported unavailable (with the reason), never waited
for. Files live under ``DEMIX_CACHE_DIR/mixer``, named by a hash of the file id, the least
recently used removed once the folder is over ``DEMIX_WEBAPP_CACHE_MB``.

Peaks: ffmpeg decodes a track to mono 16-bit at a low rate, and the largest absolute
sample of each of :data:`PEAK_BUCKETS` buckets (0..1) is kept, beside the file, as JSON.
No numpy here: :mod:`array` and the built-in ``max``/``min`` over slices.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from common.telegram import MB

logger = logging.getLogger(__name__)

PEAK_BUCKETS = 600
PEAK_RATE = 8000
# One track's fetch (getFile and the download) gives up after this long.
FETCH_TIMEOUT_S = 120.0
# Downloads from the Bot API at once, for the whole process.
MAX_DOWNLOADS = 4
# A file used this recently is never evicted (it may be playing or rendering).
IN_USE_S = 600.0

TOO_BIG = "too_big"
UNAVAILABLE = "unavailable"


class TrackUnavailable(Exception):
    """The Bot API did not hand the track over; ``reason`` is TOO_BIG or UNAVAILABLE."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Peaks:
    duration_s: float
    values: list[float]


def content_type(path: Path) -> str:
    """The audio's MIME type from its first bytes (a FLAC job may have sent some as mp3)."""
    with path.open("rb") as file:
        head = file.read(4)
    return "audio/flac" if head == b"fLaC" else "audio/mpeg"


def bucket_peaks(samples: array[int], buckets: int = PEAK_BUCKETS) -> list[float]:
    """The largest ``|sample|`` of each of ``buckets`` equal parts, scaled to 0..1."""
    n = len(samples)
    if n == 0:
        return []
    count = min(buckets, n)
    peaks = []
    for index in range(count):
        part = samples[index * n // count : (index + 1) * n // count]
        peak = max(max(part), -min(part))
        peaks.append(round(min(peak / 32768.0, 1.0), 4))
    return peaks


class TrackCache:
    """Tracks by file id on disk; one fetch at a time per file, at most MAX_DOWNLOADS."""

    def __init__(self, bot: Bot, root: Path, max_bytes: int) -> None:
        self.bot = bot
        self.root = root
        self.max_bytes = max_bytes
        self._locks: dict[str, asyncio.Lock] = {}
        self._downloads = asyncio.Semaphore(MAX_DOWNLOADS)
        # Fetches that failed: file id -> (reason, when); retried after a while.
        self._failed: dict[str, tuple[str, float]] = {}
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        return self.root / hashlib.sha256(file_id.encode()).hexdigest()[:40]

    async def fetch(self, file_id: str) -> Path:
        """The track's file, fetched through the Bot API unless it is on disk.

        Raises:
            TrackUnavailable: too big for the Bot API, or it failed (network, unknown file).
        """
        path = self.path(file_id)
        lock = self._locks.setdefault(file_id, asyncio.Lock())
        async with lock:
            if path.is_file():
                with contextlib.suppress(OSError):
                    os.utime(path)
                return path
            failed = self._failed.get(file_id)
            if failed is not None and failed[0] == TOO_BIG:
                raise TrackUnavailable(TOO_BIG)
            try:
                async with self._downloads, asyncio.timeout(FETCH_TIMEOUT_S):
                    await self._download(file_id, path)
            except TrackUnavailable as exc:
                self._failed[file_id] = (exc.reason, time.monotonic())
                raise
            except (TelegramError, OSError, TimeoutError) as exc:
                logger.warning("track fetch failed: %s", exc, extra={"file": path.name})
                raise TrackUnavailable(UNAVAILABLE, str(exc)) from exc
        self._evict(keep=path)
        return path

    async def _download(self, file_id: str, path: Path) -> None:
        try:
            file = await self.bot.get_file(file_id)
        except BadRequest as exc:
            if "too big" in exc.message.lower():
                raise TrackUnavailable(TOO_BIG, exc.message) from exc
            raise TrackUnavailable(UNAVAILABLE, exc.message) from exc
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            await file.download_to_drive(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        logger.info(
            "track fetched", extra={"file": path.name, "mb": round(path.stat().st_size / MB, 2)}
        )

    def _files(self) -> Iterator[tuple[Path, os.stat_result]]:
        for path in self.root.iterdir():
            if path.name.startswith(".") or not path.is_file():
                continue
            with contextlib.suppress(OSError):
                yield path, path.stat()

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used tracks (and their peaks) while over the cap."""
        files = sorted(self._files(), key=lambda item: item[1].st_mtime)
        total = sum(stat.st_size for _, stat in files)
        now = time.time()
        for path, stat in files:
            if total <= self.max_bytes:
                break
            if path == keep or path.suffix == ".json" or now - stat.st_mtime < IN_USE_S:
                continue
            path.unlink(missing_ok=True)
            path.with_suffix(".json").unlink(missing_ok=True)
            total -= stat.st_size
            logger.info("track evicted from the mixer cache", extra={"file": path.name})

    async def peaks(self, file_id: str, path: Path) -> Peaks:
        """The track's waveform, computed once and kept beside it."""
        stored = path.with_suffix(".json")
        with contextlib.suppress(OSError, ValueError, KeyError):
            data = json.loads(stored.read_text())
            return Peaks(float(data["duration_s"]), list(data["peaks"]))
        samples = await decode_mono(path, PEAK_RATE)
        peaks = Peaks(round(len(samples) / PEAK_RATE, 3), bucket_peaks(samples))
        tmp = stored.with_name(f".{stored.name}.{os.getpid()}.part")
        tmp.write_text(json.dumps({"duration_s": peaks.duration_s, "peaks": peaks.values}))
        os.replace(tmp, stored)
        return peaks


async def decode_mono(path: Path, rate: int) -> array[int]:
    """The audio of ``path`` as mono 16-bit samples at ``rate`` Hz (ffmpeg, off the loop)."""
    process = await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-v", "error", "-i", str(path),
        "-ac", "1", "-ar", str(rate), "-f", "s16le", "-",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"ffmpeg could not decode {path.name}: {err.decode()[-300:]}")
    samples = array("h")
    samples.frombytes(out[: len(out) - len(out) % 2])
    if sys.byteorder == "big":
        samples.byteswap()  # ffmpeg wrote little-endian (s16le)
    return samples
