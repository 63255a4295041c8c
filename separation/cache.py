"""On-disk cache of separated sources: one ``.npy`` per (song, model, settings, source).

An entry is a float32 ``(2, n)`` array stored column-major (Fortran order), that is as
interleaved stereo frames, so it is written and read a span at a time while a song streams
through the engine, and never held whole in memory. Writes are atomic (temporary file +
rename); a file that does not hold the expected array is dropped and counts as a miss; the
folder is kept under a size cap by evicting the least recently used entries (reads refresh
an entry's mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy_format

from separation.audio import Samples, SpooledSamples

logger = logging.getLogger(__name__)

_SUFFIX = ".npy"
# Disk a cache entry never takes: the cache and the jobs' work folders often share a disk,
# and a job whose tracks cannot be written fails where a missing entry costs nothing.
MIN_FREE_BYTES = 1 << 30
_FRAME_BYTES = 8  # a float32 stereo frame
# A temporary entry untouched this long was left by a process that died while writing it.
_STALE_TEMPORARY_S = 6 * 3600
# Frames per read while an entry is checked (about 1.5 s of audio).
_CHECK_BLOCK = 1 << 16
# Bytes per read while a song on disk is hashed.
_DIGEST_BLOCK_BYTES = 4 << 20


def audio_digest(samples: Samples) -> str:
    """The sha256 of a decoded song's PCM (float32, channel-major), hex: the same for a
    song in memory and on disk."""
    digest = hashlib.sha256()
    digest.update(str(samples.shape).encode())
    if isinstance(samples, SpooledSamples):
        for channel in samples.channels:  # the channel files are channel-major already
            with open(channel, "rb") as file:
                left = 4 * samples.frames
                while left and (block := file.read(min(left, _DIGEST_BLOCK_BYTES))):
                    digest.update(block)
                    left -= len(block)
        return digest.hexdigest()
    digest.update(np.ascontiguousarray(samples, dtype=np.float32).data.cast("B"))
    return digest.hexdigest()


class SourceCache:
    """Source estimates on disk under ``root``, at most ``max_bytes`` in total."""

    def __init__(self, root: Path, max_bytes: int, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self.root = root
        self.max_bytes = max_bytes
        # An entry is not started when it would leave less than this free on the disk.
        self.min_free_bytes = min_free_bytes
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(*parts: str) -> str:
        """A file-safe key for the given identifying parts."""
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str, shape: tuple[int, ...]) -> np.ndarray | None:
        """The stored float32 array of ``shape`` for ``key``, or None (missing or corrupt)."""
        reader = self.open(key, shape)
        if reader is None:
            return None
        with reader:
            return reader.read(0, reader.frames)

    def open(self, key: str, shape: tuple[int, ...]) -> CacheReader | None:
        """A reader of the stored ``(2, n)`` entry for ``key``, or None (missing or
        corrupt: a corrupt entry is dropped). The whole entry is checked (header, size,
        finite samples) before it is returned, a block at a time."""
        path = self._path(key)
        try:
            reader = CacheReader(path)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("dropping unreadable cache entry %s: %s", path.name, exc)
            self._drop(path)
            self.misses += 1
            return None
        problem = reader.problem(shape)
        if problem is not None:
            reader.close()
            logger.warning("dropping cache entry %s: %s", path.name, problem)
            self._drop(path)
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recency for the LRU eviction
        self.hits += 1
        return reader

    @staticmethod
    def _drop(path: Path) -> None:
        # A cache that cannot even be cleaned (unwritable, not a folder) is only a cache.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def put(self, key: str, array: np.ndarray) -> None:
        """Store the ``(2, n)`` ``array`` for ``key`` atomically, then evict down to the
        size cap."""
        writer = self.writer(key, array.shape[1])
        try:
            writer.write(array)
            writer.commit()
        finally:
            writer.abort()

    def writer(self, key: str, frames: int) -> CacheWriter:
        """A writer of the ``(2, frames)`` entry for ``key``, filled a span at a time; it
        becomes visible on :meth:`CacheWriter.commit`. An entry over the size cap, or a
        disk that refuses it, makes a writer that stores nothing."""
        return CacheWriter(self, self._path(key), frames)

    def _drop_stale_temporaries(self) -> None:
        if not self.root.is_dir():
            return
        # A writer lives as long as one separation; older temporaries have no writer left.
        cutoff = time.time() - _STALE_TEMPORARY_S
        for path in self.root.glob(f"*/.tmp-*{_SUFFIX}"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    logger.info("removed a stale cache temporary %s", path.name)

    def entries(self) -> list[Path]:
        """The stored entry files (not temporaries)."""
        if not self.root.is_dir():
            return []
        return [
            path for path in self.root.glob(f"*/*{_SUFFIX}") if not path.name.startswith(".tmp-")
        ]

    def size_bytes(self) -> int:
        """The total size of the stored entries."""
        total = 0
        for path in self.entries():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue
        return total

    def evict(self) -> None:
        """Remove least recently used entries until the total is within ``max_bytes``, and
        temporaries left by a process that died while writing."""
        self._drop_stale_temporaries()
        stats: list[tuple[float, int, Path]] = []
        for path in self.entries():
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            stats.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in stats)
        if total <= self.max_bytes:
            return
        for _, size, path in sorted(stats):
            self._drop(path)
            total -= size
            logger.info("evicted cache entry %s (%d bytes)", path.name, size)
            if total <= self.max_bytes:
                break


class CacheReader:
    """Spans of one stored entry, read from disk on demand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO = path.open("rb")
        try:
            version = npy_format.read_magic(self._file)
            if version == (1, 0):
                shape, fortran_order, dtype = npy_format.read_array_header_1_0(self._file)
            elif version == (2, 0):
                shape, fortran_order, dtype = npy_format.read_array_header_2_0(self._file)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            self._data_at = self._file.tell()
        except BaseException:
            self._file.close()
            raise
        self.shape: tuple[int, ...] = tuple(shape)
        self.frames = int(shape[1]) if len(shape) == 2 else 0
        self._layout_ok = fortran_order and dtype == np.dtype("<f4") and len(shape) == 2

    def problem(self, shape: tuple[int, ...]) -> str | None:
        """Why this entry is not a finite float32 array of ``shape`` stored frame by
        frame, or None."""
        if not self._layout_ok or self.shape != shape or shape[0] != 2:
            return f"not a float32 (2, n) array of shape {shape}: {self.shape}"
        size = os.fstat(self._file.fileno()).st_size
        if size != self._data_at + self.frames * _FRAME_BYTES:
            return f"{size} bytes, not {self._data_at + self.frames * _FRAME_BYTES}"
        for start in range(0, self.frames, _CHECK_BLOCK):
            if not np.isfinite(self.read(start, min(start + _CHECK_BLOCK, self.frames))).all():
                return "samples that are not finite"
        return None

    def read(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as a float32 ``(2, stop - start)`` array."""
        self._file.seek(self._data_at + start * _FRAME_BYTES)
        count = 2 * (stop - start)
        interleaved = np.fromfile(self._file, dtype=np.float32, count=count)
        if interleaved.size != count:
            raise EOFError(f"{self.path.name} ends before frame {stop}")
        return interleaved.reshape(stop - start, 2).T

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> CacheReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class CacheWriter:
    """One entry being written a span at a time, under a temporary name until committed.

    A disk error does not fail the caller: the entry is abandoned, with a warning, and
    later spans are ignored (a full disk costs a recomputation later, not this request).
    """

    def __init__(self, cache: SourceCache, path: Path, frames: int) -> None:
        self._cache = cache
        self._path = path
        self.frames = frames
        self._written = 0
        self._file: BinaryIO | None = None
        self._tmp: Path | None = None
        if cache.max_bytes <= 0 or frames * _FRAME_BYTES > cache.max_bytes:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(path.parent).free
            if free - frames * _FRAME_BYTES < cache.min_free_bytes:
                # The cache is only a cache: it yields a nearly full disk to the jobs' files.
                logger.warning(
                    "not caching %s: %d bytes free on its disk, %d kept for the jobs",
                    path.name,
                    free,
                    cache.min_free_bytes,
                )
                return
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=_SUFFIX, dir=path.parent)
            self._tmp = Path(tmp_name)
            self._file = os.fdopen(fd, "wb")
            header = {"descr": "<f4", "fortran_order": True, "shape": (2, frames)}
            npy_format.write_array_header_1_0(self._file, header)
        except OSError as exc:
            self._give_up(exc)

    def write(self, span: np.ndarray) -> None:
        """Append the next ``(2, m)`` span of the entry."""
        if self._file is None:
            return
        try:
            self._file.write(np.ascontiguousarray(span.T, dtype=np.float32).data)
            self._written += span.shape[1]
        except OSError as exc:
            self._give_up(exc)

    def commit(self) -> None:
        """Make the entry visible (when it was written whole), then evict down to the cap."""
        if self._file is None or self._tmp is None:
            return
        if self._written != self.frames:
            raise ValueError(f"{self._written} frames written of {self.frames}")
        try:
            self._file.close()
            self._file = None
            os.replace(self._tmp, self._path)
            self._tmp = None
        except OSError as exc:
            self._give_up(exc)
            return
        self._cache.evict()

    def abort(self) -> None:
        """Drop what was written, unless committed."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def _give_up(self, exc: OSError) -> None:
        logger.warning("could not write cache entry %s: %s", self._path.name, exc)
        self.abort()
