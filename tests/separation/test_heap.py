"""Forward passes on the heap (separation/heap.py): glibc's mmap off inside, on outside."""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from separation import EnsembleSeparator, decode_audio
from separation.heap import activations_on_heap
from tests.separation.conftest import audio_of
from tests.support.audio import make_song, music_like

BLOCK_BYTES = 96 << 20  # above glibc's largest mmap threshold (32 MiB)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _mallinfo2() -> Any:
    try:
        function = ctypes.CDLL(None).mallinfo2
    except AttributeError:
        pytest.skip("not glibc 2.33 or later: no mallinfo2 to read the allocator with")
    function.restype = _MallInfo2
    return function


def _mapped_by_malloc() -> int:
    """Bytes glibc's malloc holds in blocks of their own mapping."""
    return int(_mallinfo2()().hblkhd)


def _block_is_mapped() -> bool:
    """Whether a large new array that the heap's free space cannot hold gets its own
    mapping from malloc (one the heap can hold is served from it either way)."""
    info = _mallinfo2()()
    size = BLOCK_BYTES + int(info.fordblks)
    before = int(info.hblkhd)
    block = np.empty(size // 8)  # never written: malloc maps or extends, nothing resident
    mapped = _mapped_by_malloc() - before >= size
    del block
    return mapped


def test_large_blocks_come_from_the_heap_only_inside() -> None:
    _mallinfo2()
    assert _block_is_mapped(), "outside: glibc maps a large block of its own"
    with activations_on_heap():
        assert not _block_is_mapped()
        with activations_on_heap():
            assert not _block_is_mapped()
        assert not _block_is_mapped(), "still off while the outer block runs"
    assert _block_is_mapped(), "mmap back on after the last block"


def test_concurrent_blocks_share_one_switch() -> None:
    _mallinfo2()
    entered, release = threading.Event(), threading.Event()

    def other_pass() -> None:
        with activations_on_heap():
            entered.set()
            release.wait(timeout=30)

    thread = threading.Thread(target=other_pass)
    thread.start()
    try:
        assert entered.wait(timeout=30)
        with activations_on_heap():
            pass
        assert not _block_is_mapped(), "the other thread's pass still runs"
    finally:
        release.set()
        thread.join(timeout=30)
    assert _block_is_mapped()


def test_cpu_passes_run_on_the_heap(separator: EnsembleSeparator) -> None:
    _mallinfo2()
    seen: list[bool] = []
    loaded = separator._model("htdemucs_ft")
    (index,) = loaded.contributors("vocals")
    handle = loaded.sub_model(index).register_forward_pre_hook(
        lambda _module, _args: seen.append(_block_is_mapped())
    )
    try:
        separator.separate(audio_of(music_like(2.0)), ["vocals"])
    finally:
        handle.remove()
    assert seen and not any(seen), "every forward pass ran with mmap off"
    assert _block_is_mapped(), "and mmap is back on after the request"


def test_a_song_decoded_while_a_pass_runs_stays_out_of_the_heap(tmp_path: Path) -> None:
    mallinfo2 = _mallinfo2()
    path = make_song(tmp_path / "minute.wav", seconds=60.0)
    song_bytes = 2 * 60 * 44100 * 4
    with activations_on_heap():  # as when a worker decodes the next job during a pass
        before = int(mallinfo2().uordblks)
        audio = decode_audio(path)
        in_heap = int(mallinfo2().uordblks) - before
    assert audio.samples.nbytes == song_bytes
    assert in_heap < song_bytes // 4, f"{in_heap} bytes of a {song_bytes}-byte song in the heap"
