"""Fixtures of the benchmark tests: the ``bench/`` scripts loaded as modules, and song
folders in the layout ``bench/quality.py`` reads."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from tests.support.audio import write_audio

BENCH = Path(__file__).resolve().parents[2] / "bench"
RATE = 44100

# Writes <folder>/<song>/mixture.wav and <source>.wav per given source; returns the song folder.
FolderSongWriter = Callable[[Path, str, Mapping[str, np.ndarray]], Path]


def load_bench_script(name: str) -> ModuleType:
    """``bench/<name>.py`` (a script, not a package module) imported from its file, with
    ``bench/`` on the path while it loads, as when it runs as a script (some import
    ``songs`` or ``throughput`` from beside them)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up by name.
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture(scope="session")
def quality() -> ModuleType:
    """``bench/quality.py``."""
    return load_bench_script("quality")


@pytest.fixture(scope="session")
def versus_cli() -> ModuleType:
    """``bench/versus_cli.py``."""
    return load_bench_script("versus_cli")


@pytest.fixture(scope="session")
def gpu_bench() -> ModuleType:
    """``bench/gpu.py``."""
    return load_bench_script("gpu")


def write_folder_song(folder: Path, name: str, sources: Mapping[str, np.ndarray]) -> Path:
    """``folder/name/`` holding ``<source>.wav`` for each of ``sources`` (``(2, n)`` at
    44.1 kHz, written as float32 so they read back bit for bit) and their sum as
    ``mixture.wav``, as MoisesDB's converter and MUSDB18-HQ lay a song out."""
    song = folder / name
    song.mkdir(parents=True)
    for source, samples in sources.items():
        write_audio(song / f"{source}.wav", samples.astype(np.float32), RATE, codec="pcm_f32le")
    mixture = np.sum([s.astype(np.float32) for s in sources.values()], axis=0)
    write_audio(song / "mixture.wav", mixture.astype(np.float32), RATE, codec="pcm_f32le")
    return song


@pytest.fixture(scope="session")
def folder_song() -> FolderSongWriter:
    """:func:`write_folder_song`, for tests of any scope."""
    return write_folder_song
