"""bench/quality.py's figures: museval's BSS Eval v4 SDR, median over 1 s frames.

In BSS Eval v4's images version a frame's SDR is the reference's energy over the energy of
(estimate - reference), so an estimate made of the reference plus noise scaled to a chosen
SNR in each frame has a known answer, frame by frame.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import museval
import numpy as np
import pytest

RATE = 44100
ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ("separation", "bot", "storage", "demix", "worker", "common")


def noisy(reference: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """``reference`` (channels, n) plus white noise at exactly ``snr_db`` over its length."""
    noise = rng.standard_normal(reference.shape)
    noise *= np.sqrt(np.sum(reference**2) / np.sum(noise**2) / 10 ** (snr_db / 10))
    return reference + noise


def framewise(reference: np.ndarray, snrs: list[float], seed: int) -> np.ndarray:
    """An estimate whose k-th 1 s frame is the reference at ``snrs[k]`` dB SNR."""
    rng = np.random.default_rng(seed)
    frames = [
        noisy(reference[:, k * RATE : (k + 1) * RATE], snr, rng) for k, snr in enumerate(snrs)
    ]
    return np.concatenate(frames, axis=1)


@pytest.fixture(scope="module")
def known_case() -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """4 s of two stereo sources; frames 0-2 of each estimate at chosen SNRs; frame 3
    has a silent vocals reference, which makes that frame NaN for every source."""
    rng = np.random.default_rng(1)
    references = {"vocals": rng.standard_normal((2, 4 * RATE)) * [[0.5], [0.3]]}
    references["drums"] = rng.standard_normal((2, 4 * RATE)) * 0.2
    references["vocals"][:, 3 * RATE :] = 0.0
    estimates = {
        "vocals": framewise(references["vocals"][:, : 3 * RATE], [0.0, 10.0, 30.0], seed=2),
        "drums": framewise(references["drums"][:, : 3 * RATE], [20.0, 5.0, 25.0], seed=3),
    }
    tail = rng.standard_normal((2, 2, RATE)) * 0.1
    estimates = {
        s: np.concatenate([e, t], axis=1) for (s, e), t in zip(estimates.items(), tail, strict=True)
    }
    return references, estimates


def test_frames_are_one_second_with_the_known_sdr(quality: ModuleType, known_case) -> None:
    references, estimates = known_case
    frames = quality.frame_sdrs(references, estimates)
    assert list(frames) == ["vocals", "drums"]
    for source, expected in (("vocals", [0.0, 10.0, 30.0]), ("drums", [20.0, 5.0, 25.0])):
        assert frames[source].shape == (4,)
        np.testing.assert_allclose(frames[source][:3], expected, atol=0.01)
        assert np.isnan(frames[source][3])


def test_track_figure_is_the_median_over_frames_without_nan(
    quality: ModuleType, known_case
) -> None:
    references, estimates = known_case
    figures = quality.evaluate(references, estimates)
    # The median of the three defined frames; their mean would be 13.3 and 16.7 dB.
    assert figures["vocals"] == pytest.approx(10.0, abs=0.05)
    assert figures["drums"] == pytest.approx(20.0, abs=0.05)


def test_perfect_estimate_scores_far_higher_than_a_noisy_one(quality: ModuleType) -> None:
    rng = np.random.default_rng(4)
    references = {s: rng.standard_normal((2, 3 * RATE)) * 0.3 for s in ("bass", "other")}
    estimates = {
        "bass": references["bass"].copy(),
        "other": noisy(references["other"], 10.0, rng),
    }
    figures = quality.evaluate(references, estimates)
    assert figures["other"] == pytest.approx(10.0, abs=0.5)
    assert figures["bass"] > figures["other"] + 40


def test_estimates_are_fitted_to_the_reference_length(quality: ModuleType) -> None:
    rng = np.random.default_rng(5)
    references = {s: rng.standard_normal((2, 2 * RATE)) for s in ("drums", "bass")}
    long = {
        s: np.concatenate([noisy(r, 15.0, rng), r[:, :100]], axis=1) for s, r in references.items()
    }
    figures = quality.evaluate(references, long)
    assert figures["drums"] == pytest.approx(15.0, abs=0.5)
    assert figures["bass"] == pytest.approx(15.0, abs=0.5)


def test_aggregation_matches_museval_stores(quality: ModuleType) -> None:
    """Median over frames and then over tracks, NaN left out: as museval's own stores."""
    nan = float("nan")
    tracks = {
        "one": {"vocals": [1.5, nan, 3.25, 10.0], "drums": [nan, nan, 2.0, 4.5]},
        "two": {"vocals": [-2.0, 0.5, nan, 7.0], "drums": [nan, nan, nan, nan]},
        "three": {"vocals": [4.0, 4.0, 6.0, nan], "drums": [1.0, 8.0, nan, 3.0]},
    }
    store = museval.EvalStore(frames_agg="median", tracks_agg="median")
    ours: dict[str, dict[str, float]] = {}
    for name, targets in tracks.items():
        track = museval.TrackStore(track_name=name, win=1, hop=1)
        for target, sdrs in targets.items():
            track.add_target(target, {m: sdrs for m in ("SDR", "SIR", "ISR", "SAR")})
            ours.setdefault(target, {})[name] = quality.nan_median(sdrs)
        store.add_track(track.df)
    per_track = store.agg_frames_scores()
    over_tracks = store.agg_frames_tracks_scores()
    for target, by_track in ours.items():
        for name, value in by_track.items():
            np.testing.assert_allclose(value, per_track[(name, target, "SDR")], equal_nan=True)
        expected = over_tracks[(target, "SDR")]
        assert quality.nan_median(list(by_track.values())) == pytest.approx(expected)


def test_production_packages_do_not_import_museval() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+museval\b", re.MULTILINE)
    checked = 0
    for package in PRODUCTION:
        for path in (ROOT / package).rglob("*.py"):
            checked += 1
            assert not pattern.search(path.read_text()), f"{path} imports museval"
    assert checked > 0
    assert pattern.search((ROOT / "bench" / "quality.py").read_text())  # the probe can match
