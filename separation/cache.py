"""On-disk cache of separated sources: one ``.npy`` per (song, model, settings, source).

Writes are atomic (temporary file + rename); a file that does not load as the expected
array is dropped and counts as a miss; the folder is kept under a size cap by evicting
the least recently used entries (reads refresh an entry's mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_SUFFIX = ".npy"


def audio_digest(samples: np.ndarray) -> str:
    """The sha256 of a decoded song's PCM (float32, channel-major), hex."""
    digest = hashlib.sha256()
    digest.update(str(samples.shape).encode())
    digest.update(np.ascontiguousarray(samples, dtype=np.float32).data.cast("B"))
    return digest.hexdigest()


class SourceCache:
    """Source estimates on disk under ``root``, at most ``max_bytes`` in total."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
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
        path = self._path(key)
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError, EOFError) as exc:
            logger.warning("dropping unreadable cache entry %s: %s", path.name, exc)
            self._drop(path)
            self.misses += 1
            return None
        if array.dtype != np.float32 or array.shape != shape or not np.isfinite(array).all():
            logger.warning("dropping cache entry %s: %s %s", path.name, array.dtype, array.shape)
            self._drop(path)
            self.misses += 1
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recency for the LRU eviction
        self.hits += 1
        return array

    @staticmethod
    def _drop(path: Path) -> None:
        # A cache that cannot even be cleaned (unwritable, not a folder) is only a cache.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def put(self, key: str, array: np.ndarray) -> None:
        """Store ``array`` for ``key`` atomically, then evict down to the size cap."""
        if self.max_bytes <= 0 or array.nbytes > self.max_bytes:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=_SUFFIX, dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as file:
                    np.save(file, np.ascontiguousarray(array, dtype=np.float32))
                os.replace(tmp_name, path)
            finally:
                Path(tmp_name).unlink(missing_ok=True)
        except OSError as exc:
            # A full or read-only disk costs a recomputation later, not this request.
            logger.warning("could not write cache entry %s: %s", path.name, exc)
            return
        self.evict()

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
        """Remove least recently used entries until the total is within ``max_bytes``."""
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
