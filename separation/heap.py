"""Forward passes whose freed activations are reused from the heap, not unmapped (glibc).

glibc's malloc serves every block of 32 MiB or more (the ceiling of its dynamic threshold)
with a fresh ``mmap`` and unmaps it when freed, and trims the heap's free top, so each
forward pass faults in its large activations again: the pretrained HTDemucs shapes have
tens of them per chunk (one 48-channel frequency-layer activation is 66 MB in bf16). In one
run of ``python bench/heap.py`` on this project's 2-core machine (each setting in its own
process, in turn), one 7.8 s chunk of the htdemucs_ft sub-model shape in bf16 took 1.40 s
with this module's settings against 1.56 s without (0.90x) with the passes on the main
thread, as ``demix separate`` runs them, and 1.54 s against 1.64 s (0.94x) on a thread of
their own, as the worker runs them (glibc gives that thread an arena of its own, whose
blocks over 64 MiB are mapped anyway). Earlier one-off runs: tcmalloc 1.50 s, jemalloc's
defaults 2.8 s (``LD_PRELOAD``), and a fixed 8 MiB threshold, which returns more memory,
2.5 s.

:func:`activations_on_heap` turns ``mmap`` off only while a pass runs. Outside the passes,
a large buffer (a track read whole) is served from the heap's free space when it fits
there, else by a mapping of its own, returned when freed; a decoded song always has its
own (:mod:`separation.audio`), so a long song does not grow the heap. The heap keeps the
largest working set of the passes between them, for the next: with the tiny test models
about 460 MB over the loaded models after a 10-second six-track request, twice the
tensors' peak, since glibc splits the freed blocks of one sub-model's shapes for the
other's. Process-wide, since malloc is; where the C library has no ``mallopt`` (macOS,
Windows) nothing changes.

Importing this module does not import torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Callable, Iterator

# mallopt's parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
# glibc's default M_MMAP_MAX, restored after the passes.
DEFAULT_MMAP_MAX = 65536
# Outside the passes: blocks this large or larger get their own mapping, as glibc's dynamic
# threshold settles (it stops adjusting once any parameter is set).
MMAP_THRESHOLD = 32 << 20
# The heap's free top is kept up to this size: a pass's working set is not given back to
# the system only to be faulted in again by the next chunk.
TRIM_THRESHOLD = 1 << 30

_lock = threading.Lock()
_inside = 0


@functools.cache
def _mallopt() -> Callable[[int, int], int] | None:
    """The C library's ``mallopt``, with the thresholds that hold for good set once; None
    where the library has no ``mallopt``."""
    try:
        # The process's own symbols: its C library's on Linux and macOS.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # no mallopt (macOS), or no CDLL(None)
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return mallopt


@contextlib.contextmanager
def activations_on_heap() -> Iterator[None]:
    """Run the block with glibc's ``mmap`` off, so its large allocations come from (and go
    back to) the heap; nested or concurrent blocks share one switch, turned back on when
    the last ends.

    The first block also sets, for good, a fixed 32 MiB mmap threshold and a 1 GiB trim
    threshold (the heap keeps what the passes freed, for the next pass).

    Yields:
        Nothing; ``mmap`` is on again when the last block exits.
    """
    global _inside
    with _lock:
        mallopt = _mallopt()  # under the lock: the thresholds are set once
    if mallopt is None:
        yield
        return
    with _lock:
        if _inside == 0:
            mallopt(M_MMAP_MAX, 0)
        _inside += 1
    try:
        yield
    finally:
        with _lock:
            _inside -= 1
            if _inside == 0:
                mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX)
