"""The one way tests build a separator: the tiny random models, on CPU."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from separation import EnsembleSeparator, RawTrack, SeparatorConfig


def make_separator(model_repo: Path, **config: Any) -> EnsembleSeparator:
    """An :class:`EnsembleSeparator` over ``model_repo`` on CPU, in fp32, without a cache
    unless ``cache_dir=`` is given; other keywords are :class:`SeparatorConfig` fields.

    fp32 unless ``precision=`` says otherwise: ``auto`` is bf16 on a CPU with AVX-512 BF16
    or AMX, and tests that compare estimates bit for bit or within 1e-5 (with demucs's
    ``apply_model``, across batch sizes, strategies, the cache, streaming) must not depend
    on the machine's CPU. Tests of bf16 and of ``auto`` name them.

    It holds no open resources (models live in memory), so there is nothing to close: a
    fixture of any scope may build one and drop it.
    """
    config.setdefault("precision", "fp32")
    return EnsembleSeparator(SeparatorConfig(model_repo=model_repo, device="cpu", **config))


class RecordingSeparator:
    """A real separator, with the wall-clock interval (``time.time()``) of every separation
    call and the most calls ever running at once, counted outside the separator's own lock
    (so two overlapping calls show even though the separator would serialise them)."""

    def __init__(self, real: EnsembleSeparator) -> None:
        self.real = real
        self.intervals: list[tuple[float, float]] = []
        self.max_running = 0
        self._running = 0
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        self.real.warm_up()

    def separate(self, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
        with self._recorded():
            return self.real.separate(*args, **kwargs)

    def separate_to_files(self, *args: Any, **kwargs: Any) -> dict[str, RawTrack]:
        with self._recorded():
            return self.real.separate_to_files(*args, **kwargs)

    @contextlib.contextmanager
    def _recorded(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
            self.max_running = max(self.max_running, self._running)
            start = time.time()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                self.intervals.append((start, time.time()))
