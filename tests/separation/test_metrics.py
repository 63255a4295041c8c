"""The SDR code against mir_eval's reference figures (its bss_eval test vectors)."""

from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from separation.metrics import bss_eval_sources, signal_to_distortion

CASES = ["01", "02", "03", "05", "06", "07", "08", "09"]


def read_wav(path: Path) -> np.ndarray:
    """A 16-bit PCM wav as float64 in [-1, 1), channels averaged: as mir_eval's tests load
    it (``mir_eval.io.load_wav(mono=True)``) for the ``Sources`` figures."""
    with wave.open(str(path)) as file:
        assert file.getsampwidth() == 2
        channels = file.getnchannels()
        frames = file.readframes(file.getnframes())
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0
    return samples.reshape(-1, channels).mean(axis=1)


def load_sources(folder: Path) -> np.ndarray:
    return np.stack([read_wav(path) for path in sorted(folder.glob("*.wav"))])


@pytest.mark.parametrize("case", CASES)
def test_bss_eval_sources_matches_mir_eval(testdata: Path, case: str) -> None:
    folder = testdata / "bss_eval"
    references = load_sources(folder / f"ref{case}")
    estimates = load_sources(folder / f"est{case}")
    expected = json.loads((folder / f"output{case}.json").read_text())["Sources"]
    result = bss_eval_sources(references, estimates)
    np.testing.assert_allclose(result.sdr, expected["Source to Distortion"], atol=1e-6)
    np.testing.assert_allclose(result.sir, expected["Source to Interference"], atol=1e-6)
    np.testing.assert_allclose(result.sar, expected["Source to Artifact"], atol=1e-6)
    assert list(result.permutation) == expected["Source permutation"]


def test_without_permutation_keeps_the_given_order(testdata: Path) -> None:
    folder = testdata / "bss_eval"
    references = load_sources(folder / "ref01")
    estimates = load_sources(folder / "est01")
    expected = json.loads((folder / "output01.json").read_text())["Sources"]
    labelled = bss_eval_sources(references, estimates, compute_permutation=False)
    np.testing.assert_allclose(labelled.sdr, expected["Source to Distortion"], atol=1e-6)
    swapped = bss_eval_sources(references, estimates[::-1], compute_permutation=False)
    assert list(swapped.permutation) == [0, 1]
    assert np.all(swapped.sdr < labelled.sdr)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(ValueError):
        bss_eval_sources(np.zeros((2, 10)), np.zeros((2, 11)))


def test_plain_sdr() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal(1000)
    assert signal_to_distortion(reference, reference * 0.9) == pytest.approx(20.0, abs=1e-6)
    assert signal_to_distortion(reference, reference) > 100
