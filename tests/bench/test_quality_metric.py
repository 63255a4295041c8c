"""bench/quality.py's figures: museval's BSS Eval v4 SDR, median over 1 s frames.

In BSS Eval v4's images version a frame's SDR is the reference's energy over the energy of
(estimate - reference), so an estimate made of the reference plus noise scaled to a chosen
SNR in each frame has a known answer, frame by frame.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from types import ModuleType
from typing import Any

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


def test_sources_scored_alone_then_blanked_equal_museval_scoring_them_together(
    quality: ModuleType, known_case
) -> None:
    """frame_sdrs runs museval per source and blanks a frame silent in any: museval's own
    joint figures, frame by frame, NaN frames included."""
    references, estimates = known_case
    sources = list(estimates)
    n = references["vocals"].shape[1]
    refs = np.stack([references[s].T for s in sources])
    ests = np.stack([estimates[s][:, :n].T for s in sources])
    joint, _isr, _sir, _sar = museval.evaluate(refs, ests, win=RATE, hop=RATE, mode="v4")
    ours = quality.frame_sdrs(references, estimates)
    assert np.isnan(joint[:, 3]).all()  # the case does test the blanking
    for k, source in enumerate(sources):
        np.testing.assert_allclose(ours[source], joint[k], atol=1e-6, equal_nan=True)


def test_a_wholly_silent_estimate_blanks_its_group(quality: ModuleType) -> None:
    """museval refuses a silent source outright; here it has no frame, nor has any source
    scored with it."""
    rng = np.random.default_rng(6)
    references = {s: rng.standard_normal((2, 2 * RATE)) for s in ("drums", "bass")}
    estimates = {"drums": noisy(references["drums"], 10.0, rng), "bass": np.zeros((2, 2 * RATE))}
    together = quality.frame_sdrs(references, estimates)
    assert together["drums"].shape == (2,) and np.isnan(together["drums"]).all()
    assert np.isnan(together["bass"]).all()
    alone = quality.frame_sdrs(references, {"drums": estimates["drums"]})
    np.testing.assert_allclose(alone["drums"], 10.0, atol=0.5)


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


# -- song folders (<song>/mixture.wav + <source>.wav) --------------------------------------

SIX = ("drums", "bass", "vocals", "guitar", "piano", "other")


def sources_of(names: tuple[str, ...], seconds: int, seed: int) -> dict[str, np.ndarray]:
    """Stereo noise per source at different levels: no frame silent unless made so."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal((2, seconds * RATE)) * (0.05 + 0.02 * k)
        for k, name in enumerate(names)
    }


def silent_tail(estimate: np.ndarray, seconds: int) -> np.ndarray:
    """``estimate`` followed by ``seconds`` of silence."""
    return np.concatenate([estimate, np.zeros((2, seconds * RATE))], axis=1)


def test_six_source_folder_scores_each_track_on_its_own(
    quality: ModuleType, folder_song, tmp_path: Path
) -> None:
    """All six picked; each track's figure is the SNR it was made with; an exact track is
    +inf; guitar's silent last frame blanks that frame of guitar only (scored jointly,
    drums would lose it too and read 7.5 dB, the median of 5 and 10)."""
    sources = sources_of(SIX, 3, seed=10)
    sources["guitar"][:, 2 * RATE :] = 0.0
    song = quality.read_song(folder_song(tmp_path, "Six", sources))
    assert song.pick == SIX
    assert song.remainder_track == "other"
    assert not song.scored_jointly
    refs = song.references
    tracks = {
        "drums": framewise(refs["drums"], [5.0, 10.0, 30.0], seed=11),
        "bass": framewise(refs["bass"], [12.0, 12.0, 12.0], seed=12),
        "vocals": framewise(refs["vocals"], [0.0, 20.0, 25.0], seed=13),
        "guitar": silent_tail(framewise(refs["guitar"][:, : 2 * RATE], [15.0, 15.0], 14), 1),
        "piano": refs["piano"].copy(),
        "other": framewise(refs["other"], [3.0, 3.0, 3.0], seed=15),
    }

    figures = quality.score_song(song, tracks)

    assert list(figures) == list(SIX)
    expected = {"drums": 10.0, "bass": 12.0, "vocals": 20.0, "guitar": 15.0, "other": 3.0}
    for row, sdr in expected.items():
        assert figures[row] == pytest.approx(sdr, abs=0.05), row
    assert figures["piano"] == math.inf


def test_musdb_shaped_folder_is_scored_as_eval_mus_track(
    quality: ModuleType, folder_song, tmp_path: Path
) -> None:
    """Drums, bass, vocals and other: the pick is drums + bass + vocals, ``rest`` is the
    ``other`` row, and the four are scored together: vocals' silent last frame blanks
    that frame of every source, as in MUSDB18's published figures (scored one by one,
    drums would read 7.5 dB, the median of 5 and 10)."""
    sources = sources_of(("drums", "bass", "vocals", "other"), 2, seed=20)
    sources["vocals"][:, RATE:] = 0.0
    song = quality.read_song(folder_song(tmp_path, "Musdb HQ", sources))
    assert song.pick == ("drums", "bass", "vocals")
    assert song.remainder_track == "rest"
    assert song.scored_jointly
    refs = song.references
    tracks = {
        "drums": framewise(refs["drums"], [5.0, 10.0], seed=21),
        "bass": framewise(refs["bass"], [6.0, 40.0], seed=22),
        "vocals": silent_tail(framewise(refs["vocals"][:, :RATE], [8.0], 23), 1),
        "rest": framewise(refs["other"], [1.0, 50.0], seed=24),
    }

    figures = quality.score_song(song, tracks)

    assert list(figures) == ["drums", "bass", "vocals", "other"]
    expected = {"drums": 5.0, "bass": 6.0, "vocals": 8.0, "other": 1.0}
    for row, sdr in expected.items():
        assert figures[row] == pytest.approx(sdr, abs=0.05), row


@pytest.mark.parametrize(
    ("present", "pick", "remainder"),
    [
        (("vocals", "guitar", "other"), ("vocals", "guitar"), "rest"),
        (("piano", "other"), ("piano",), "no_piano"),
    ],
)
def test_subset_folder_scores_the_remainder_against_other(
    quality: ModuleType,
    folder_song,
    tmp_path: Path,
    present: tuple[str, ...],
    pick: tuple[str, ...],
    remainder: str,
) -> None:
    """The pick is what the folder has but ``other``; the remainder track (``rest`` or
    ``no_x``) is scored against ``other.wav``, the one reference not picked."""
    song = quality.read_song(folder_song(tmp_path, "Subset", sources_of(present, 2, seed=30)))
    assert song.pick == pick
    assert song.remainder_track == remainder
    assert list(song.targets) == [*pick, "other"]
    np.testing.assert_array_equal(song.targets["other"], song.references["other"])
    snrs = {source: 7.0 + 4.0 * k for k, source in enumerate(pick)}
    tracks = {
        s: framewise(song.references[s], [snrs[s]] * 2, seed=31 + k) for k, s in enumerate(pick)
    }
    tracks[remainder] = framewise(song.references["other"], [-2.0, -2.0], seed=39)

    figures = quality.score_song(song, tracks)

    assert list(figures) == [*pick, "other"]
    for source in pick:
        assert figures[source] == pytest.approx(snrs[source], abs=0.05)
    assert figures["other"] == pytest.approx(-2.0, abs=0.05)


def test_folder_without_other_has_no_other_row(
    quality: ModuleType, folder_song, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sources = sources_of(("drums", "guitar", "percussion"), 2, seed=40)
    song = quality.read_song(folder_song(tmp_path, "No other", sources))
    assert "No other: ignored percussion.wav" in capsys.readouterr().err
    assert list(song.references) == ["drums", "guitar"]
    assert song.pick == ("drums", "guitar")
    assert list(song.targets) == ["drums", "guitar"]
    tracks = {
        "drums": song.references["drums"].copy(),
        "guitar": framewise(song.references["guitar"], [9.0, 9.0], seed=41),
        "rest": np.zeros_like(song.mixture),  # no reference: never scored
    }
    figures = quality.score_song(song, tracks)
    assert figures == {"drums": math.inf, "guitar": pytest.approx(9.0, abs=0.05)}


def test_score_memo_reuses_figures_of_identical_tracks(
    quality: ModuleType, folder_song, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A track bit for bit equal to one already scored for the song is not scored again;
    a different one is."""
    song = quality.read_song(
        folder_song(tmp_path, "Memo", sources_of(("vocals", "piano", "other"), 2, seed=50))
    )
    refs = song.references
    first = {
        "vocals": framewise(refs["vocals"], [10.0, 10.0], seed=51),
        "piano": framewise(refs["piano"], [4.0, 4.0], seed=52),
        "rest": framewise(refs["other"], [6.0, 6.0], seed=53),
    }
    second = {**first, "piano": framewise(refs["piano"], [14.0, 14.0], seed=54)}
    calls: list[float] = []
    real = quality._source_frame_sdrs

    def counting(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
        calls.append(float(np.sum(reference**2)))
        return real(reference, estimate)

    monkeypatch.setattr(quality, "_source_frame_sdrs", counting)
    memo: dict = {}
    one = quality.score_song(song, first, memo=memo)
    two = quality.score_song(song, second, memo=memo)

    energy = {s: float(np.sum(r**2)) for s, r in song.targets.items()}
    assert calls == [energy["vocals"], energy["piano"], energy["other"], energy["piano"]]
    assert two["vocals"] == one["vocals"] and two["other"] == one["other"]
    assert one["piano"] == pytest.approx(4.0, abs=0.05)
    assert two["piano"] == pytest.approx(14.0, abs=0.05)


def test_find_songs_takes_stem_files_and_song_folders(quality: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "b.stem.mp4").write_bytes(b"")
    (tmp_path / "a.stem.mp4").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    for name in ("Zed", "Alpha", "No mixture"):
        (tmp_path / name).mkdir()
    (tmp_path / "Zed" / "mixture.wav").write_bytes(b"")
    (tmp_path / "Alpha" / "mixture.wav").write_bytes(b"")
    (tmp_path / "No mixture" / "vocals.wav").write_bytes(b"")
    found = quality.find_songs(tmp_path)
    assert [p.name for p in found] == ["a.stem.mp4", "b.stem.mp4", "Alpha", "Zed"]
    assert quality.find_songs(tmp_path / "missing") == []


# -- systems ---------------------------------------------------------------------------------


def bare_song(quality: ModuleType, present: tuple[str, ...]) -> Any:
    """A :class:`Song` of silence with references for ``present`` (no audio files)."""
    zeros = np.zeros((2, 8), dtype=np.float32)
    return quality.Song("bare", zeros, {s: zeros for s in present})


def test_systems_are_a_b_and_each_strategy_always(quality: ModuleType) -> None:
    from separation.config import DEFAULT_BLEND_WEIGHTS, STRATEGIES

    systems = quality.make_systems({"vocals": 0.25})
    assert [s.name for s in systems] == ["A alone", "B alone", *STRATEGIES]
    by_name = {s.name: s.ensemble for s in systems}
    assert all(e.always for e in by_name.values())
    assert [by_name[s].strategy for s in STRATEGIES] == list(STRATEGIES)
    assert dict(by_name["A alone"].blend_weights) == {
        "drums": 1.0,
        "bass": 1.0,
        "vocals": 1.0,
        "guitar": 0.0,
        "piano": 0.0,
        "other": 1.0,
    }
    assert set(by_name["B alone"].blend_weights.values()) == {0.0}
    assert by_name["blend"].blend_weights["vocals"] == 0.25
    assert by_name["blend"].blend_weights["drums"] == DEFAULT_BLEND_WEIGHTS["drums"]
    assert dict(by_name["route"].blend_weights) == dict(DEFAULT_BLEND_WEIGHTS)
    with pytest.raises(ValueError, match="unknown sources"):
        quality.make_systems({"kazoo": 0.5})
    with pytest.raises(ValueError, match="SOURCE=WEIGHT_A"):
        quality.parse_blend(["vocals"])
    assert quality.parse_blend(["vocals=0.5", " bass =1"]) == {"vocals": 0.5, "bass": 1.0}


@pytest.mark.parametrize(
    ("present", "a_rows"),
    [
        (SIX, ["drums", "bass", "vocals"]),  # guitar, piano, other: B's
        (("drums", "bass", "vocals", "other"), ["drums", "bass", "vocals", "other"]),
        (("vocals", "piano", "other"), ["vocals"]),  # the rest holds B's piano
        (("vocals", "other"), ["vocals", "other"]),
        (("piano", "other"), []),
    ],
)
def test_a_alone_has_only_rows_of_its_own(
    quality: ModuleType, present: tuple[str, ...], a_rows: list[str]
) -> None:
    song = bare_song(quality, present)
    systems = {s.name: s for s in quality.make_systems()}
    assert systems["A alone"].rows(song) == a_rows
    for name in ("B alone", "route", "blend", "refine"):
        assert systems[name].rows(song) == list(song.targets)


# -- the table and the JSON ------------------------------------------------------------------


def test_table_cells_are_medians_over_the_songs_with_the_row(quality: ModuleType) -> None:
    systems = quality.make_systems()
    names = [s.name for s in systems]
    sdr: dict[str, dict[str, dict[str, float]]] = {name: {} for name in names}
    sdr["A alone"] = {"one": {"vocals": 1.0, "other": 2.0}, "two": {"vocals": 3.0}}
    sdr["B alone"] = {"one": {"vocals": 5.0, "other": math.inf}, "two": {"vocals": 7.0}}
    sdr["B alone"]["three"] = {"vocals": 9.0, "piano": -1.5, "other": math.inf}
    results = quality.Results(
        songs={"one": ("vocals",), "two": ("vocals",), "three": ("vocals", "piano")},
        sdr=sdr,
        model_passes=dict.fromkeys(names, 0),
        in_effect={name: dict.fromkeys(("one", "two", "three"), "route") for name in names},
    )
    lines = quality.table(results, systems)
    assert lines[0] == "| source | songs | A alone | B alone | route | blend | refine |"
    assert lines[2:] == [
        "| vocals | 3 | 2.00 (2) | 7.00 | — | — | — |",
        "| piano | 1 | — | -1.50 | — | — | — |",
        "| other | 2 | 2.00 (1) | +inf | — | — | — |",
    ]
    data = quality.to_json(results, systems, "tiny")
    assert data["table"]["vocals"]["A alone"] == 2.0
    assert data["table"]["other"]["B alone"] == "+inf"
    assert data["table"]["piano"]["A alone"] is None
    assert data["songs"]["three"]["sdr"]["B alone"] == {
        "vocals": 9.0,
        "piano": -1.5,
        "other": "+inf",
    }
    assert data["songs"]["three"]["pick"] == ["vocals", "piano"]
    json.dumps(data, allow_nan=False)  # strict JSON: no NaN, no Infinity
