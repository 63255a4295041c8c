"""bench/quality.py end to end, tiny models: one run over a folder holding a MUSDB ``.stem.mp4``
(a cut of the real sample when the shared test data is there, else a synthetic one) and two
song folders (all six sources; vocals, piano and other), its table and its JSON.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import musdb
import museval
import numpy as np
import pytest

from tests.support.stems import RATE, cut_real_file, synthetic_stems, write_stem_file

if TYPE_CHECKING:
    from tests.bench.conftest import FolderSongWriter

MUSDB7 = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "musdb7"
REAL = sorted(MUSDB7.glob("*.stem.mp4")) if MUSDB7.is_dir() else []
SECONDS = 2
SYSTEMS = ("A alone", "B alone", "route", "blend", "refine")
SIX = ("drums", "bass", "vocals", "guitar", "piano", "other")
A_SOURCES = ("drums", "bass", "vocals")
BLEND_VOCALS = 0.5  # the run's --blend override (the default is 10/18)


def six_sources(seconds: float, shift: float) -> dict[str, np.ndarray]:
    """Six stereo sources, none silent in any 1 s frame: the synthetic MUSDB stems and a
    square-wave guitar and a decaying piano tone (``shift`` varies the tones per song)."""
    stems = synthetic_stems(seconds)
    del stems["mixture"]
    t = np.arange(round(seconds * RATE)) / RATE
    pan = np.array([[0.9], [1.0]])
    stems["guitar"] = 0.08 * np.sign(np.sin(2 * np.pi * (196 + shift) * t)) * pan
    envelope = 0.2 + np.exp(-3 * (t % 0.5))
    stems["piano"] = 0.1 * envelope * np.sin(2 * np.pi * (262 + shift) * t) * pan[::-1]
    return {source: stems[source] for source in SIX}


@dataclass(frozen=True)
class Run:
    """What ``quality.main`` returned, printed and wrote."""

    rc: int
    out: str
    err: str
    data: dict[str, Any]
    musdb_song: str

    def table(self) -> dict[str, dict[str, str]]:
        """The printed table: row to column to cell text."""
        lines = [line for line in self.out.splitlines() if line.startswith("| ")]
        header = [cell.strip() for cell in lines[0].strip("|").split("|")]
        return {
            cells[0]: dict(zip(header, cells, strict=True))
            for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
        }


@pytest.fixture(scope="module")
def bench_run(
    quality: ModuleType,
    model_repo: Path,
    folder_song: FolderSongWriter,
    tmp_path_factory: pytest.TempPathFactory,
) -> Run:
    """One run of the whole benchmark over the three songs (models load once)."""
    work = tmp_path_factory.mktemp("quality-run")
    folder = work / "songs"
    folder.mkdir()
    if REAL:
        musdb_file = cut_real_file(REAL[0], folder / REAL[0].name, SECONDS)
    else:
        musdb_file = write_stem_file(folder / "Synthetic - Song.stem.mp4", SECONDS, work)
    folder_song(folder, "Six", six_sources(SECONDS, 0.0))
    subset = six_sources(SECONDS, 7.0)
    folder_song(folder, "Vocals and piano", {s: subset[s] for s in ("vocals", "piano", "other")})
    out, err = io.StringIO(), io.StringIO()
    argv = [str(folder), "--models", str(model_repo), "--device", "cpu"]
    argv += ["--blend", f"vocals={BLEND_VOCALS}", "--json", str(work / "quality.json")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = quality.main(argv)
    data = json.loads((work / "quality.json").read_text()) if rc == 0 else {}
    name = musdb_file.name.removesuffix(".stem.mp4")
    return Run(rc, out.getvalue(), err.getvalue(), data, name)


@pytest.mark.slow
def test_one_table_has_a_column_per_system_and_a_row_per_source(bench_run: Run) -> None:
    assert bench_run.rc == 0, bench_run.err
    assert "museval BSS Eval v4, median over 1 s frames per song" in bench_run.out
    table = bench_run.table()
    assert list(table) == list(SIX)
    assert all(list(cells) == ["source", "songs", *SYSTEMS] for cells in table.values())
    # MUSDB: drums, bass, vocals, other; Six: all; the subset: vocals, piano, other.
    songs = {"drums": 2, "bass": 2, "vocals": 3, "guitar": 1, "piano": 2, "other": 3}
    assert {row: int(cells["songs"]) for row, cells in table.items()} == songs
    # A has no guitar or piano; its remainder is its own on the MUSDB song only.
    assert table["guitar"]["A alone"] == table["piano"]["A alone"] == "—"
    assert table["other"]["A alone"].endswith(" (1)")
    for row, cells in table.items():
        for system in SYSTEMS:
            if cells[system] != "—":
                assert math.isfinite(float(cells[system].split(" (")[0])), (row, system)


@pytest.mark.slow
def test_json_holds_the_table_and_each_song(quality: ModuleType, bench_run: Run) -> None:
    data = bench_run.data
    assert list(data["songs"]) == [bench_run.musdb_song, "Six", "Vocals and piano"]
    assert data["songs"]["Six"]["pick"] == list(SIX)
    assert data["songs"]["Vocals and piano"]["pick"] == ["vocals", "piano"]
    assert data["songs"][bench_run.musdb_song]["pick"] == list(A_SOURCES)
    assert data["systems"]["blend"]["blend_weights"]["vocals"] == BLEND_VOCALS
    assert f"vocals={BLEND_VOCALS:.3g}" in bench_run.out  # the blend line says so too
    printed = bench_run.table()
    for row, by_system in data["table"].items():
        for system, median in by_system.items():
            figures = [
                song["sdr"][system][row]
                for song in data["songs"].values()
                if row in song["sdr"][system]
            ]
            if not figures:
                assert median is None
                continue
            assert median == pytest.approx(float(np.median(figures)))
            assert printed[row][system].split(" (")[0] == f"{median:.2f}"


@pytest.mark.slow
def test_route_is_a_alone_on_as_sources_and_blend_is_neither(bench_run: Run) -> None:
    """Route takes drums, bass and vocals from A and the rest from B: its figures are
    A alone's and B alone's to the last digit (the same cached estimates); blend, with
    weights strictly between 0 and 1, differs from both."""
    for name, song in bench_run.data["songs"].items():
        sdr = song["sdr"]
        for source in A_SOURCES:
            if source not in sdr["route"]:
                continue
            assert sdr["route"][source] == sdr["A alone"][source], (name, source)
            assert sdr["refine"][source] == sdr["A alone"][source], (name, source)
            for model in ("A alone", "B alone"):
                assert abs(sdr["blend"][source] - sdr[model][source]) > 1e-3, (name, source)
        for source in ("guitar", "piano"):
            if source in sdr["route"]:
                assert sdr["route"][source] == sdr["B alone"][source], (name, source)
    checked = [song["sdr"]["route"] for song in bench_run.data["songs"].values()]
    assert sum(source in figures for figures in checked for source in A_SOURCES) == 7


@pytest.mark.slow
def test_strategies_run_on_the_cached_estimates(bench_run: Run) -> None:
    """A alone and B alone run the models; route and blend use only estimates those two
    computed, so they run no model pass: every system saw the same estimates."""
    passes = bench_run.data["model_passes"]
    assert passes["A alone"] > 0 and passes["B alone"] > 0
    assert passes["route"] == passes["blend"] == 0
    musdb_song = bench_run.data["songs"][bench_run.musdb_song]
    # Blend applies (always); refine has nothing to split on drums + bass + vocals.
    assert musdb_song["in_effect"] == {
        "A alone": "route",
        "B alone": "blend",
        "route": "route",
        "blend": "blend",
        "refine": "route",
    }
    assert bench_run.data["songs"]["Six"]["in_effect"]["refine"] == "refine"


def test_no_songs_is_an_error(
    quality: ModuleType,
    model_repo: Path,
    folder_song: FolderSongWriter,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert quality.main([str(tmp_path)]) == 2
    assert "no .stem.mp4 files or song folders" in capsys.readouterr().err
    # A song with only `other` has nothing to pick: skipped, and then there is no song.
    folder_song(tmp_path, "Only other", {"other": synthetic_stems(1.0)["other"]})
    assert quality.main([str(tmp_path), "--models", str(model_repo), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "skipped Only other: no source to pick" in err
    assert "has a source to pick" in err


def test_bad_blend_weights_are_refused(
    quality: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("vocals", "vocals=2", "kazoo=0.5"):
        with pytest.raises(SystemExit) as exit_:
            quality.main([str(tmp_path), "--blend", bad])
        assert exit_.value.code == 2
        assert "error:" in capsys.readouterr().err


def test_help_runs(quality: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        quality.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--models" in out and "--json" in out and "--blend" in out


@pytest.mark.slow
def test_figures_are_museval_eval_mus_track(quality: ModuleType, tmp_path: Path) -> None:
    """The script's own path (reading the song, mapping the tracks to rows, scoring) gives
    the figures that museval's MUSDB18 evaluation of the same track and estimates
    publishes."""
    song = write_stem_file(tmp_path / "db" / "test" / "Synthetic - Song.stem.mp4", 3, tmp_path)
    track = musdb.DB(root=str(tmp_path / "db"), subsets="test").tracks[0]
    rng = np.random.default_rng(7)
    estimates = {}
    for k, source in enumerate(quality.EVALUATED):  # a different error level per source
        audio = track.targets[source].audio
        estimates[source] = audio + 0.02 * (k + 1) * rng.standard_normal(audio.shape)

    published = museval.eval_mus_track(track, estimates)  # museval's MUSDB18 defaults

    ours_song = quality.read_song(song)
    assert ours_song.scored_jointly
    tracks = {("rest" if s == "other" else s): e.T for s, e in estimates.items()}
    ours = quality.score_song(ours_song, tracks)
    assert sorted(ours) == sorted(quality.EVALUATED)
    for target in published.scores["targets"]:
        frames = [float(f["metrics"]["SDR"]) for f in target["frames"]]
        assert len(frames) == 3
        assert ours[target["name"]] == pytest.approx(np.nanmedian(frames), abs=1e-3)
    assert len({round(v) for v in ours.values()}) > 1  # the sources are told apart
