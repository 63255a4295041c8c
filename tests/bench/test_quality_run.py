"""bench/quality.py end to end: MUSDB-format files in, the SDR table out, tiny models.

The synthetic input always runs; a cut of the real MUSDB sample joins it when the shared
test data is there (chosen at collection time, so nothing is skipped).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType

import musdb
import museval
import numpy as np
import pytest

from tests.support.stems import RATE, cut_real_file, write_stem_file

MUSDB7 = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "musdb7"
REAL = sorted(MUSDB7.glob("*.stem.mp4")) if MUSDB7.is_dir() else []
INPUTS = ["synthetic"] + (["musdb7"] if REAL else [])
SECONDS = 2
SYSTEMS = ("A alone", "B alone", "ensemble")


@pytest.mark.slow
@pytest.mark.parametrize("kind", INPUTS)
def test_quality_run_prints_a_museval_table(
    quality: ModuleType,
    model_repo: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
) -> None:
    folder = tmp_path / "songs"
    folder.mkdir()
    if kind == "synthetic":
        song = write_stem_file(folder / "Synthetic - Song.stem.mp4", SECONDS, tmp_path)
    else:
        song = cut_real_file(REAL[0], folder / REAL[0].name, SECONDS)
    streams = [quality.read_stream(song, k) for k in range(5)]
    assert all(abs(s.shape[1] - SECONDS * RATE) < 0.05 * RATE for s in streams)

    rc = quality.main([str(folder), "--models", str(model_repo), "--device", "cpu"])

    out = capsys.readouterr().out
    assert rc == 0
    assert "museval BSS Eval v4, median over 1 s frames" in out
    header = f"| system | source | {song.name.removesuffix('.stem.mp4')} | median |"
    assert header in out
    rows = [
        line
        for line in out.splitlines()
        if line.startswith("| ") and not line.startswith(("| system", "| ---"))
    ]
    assert [tuple(r.split(" | ")[:2]) for r in rows] == [
        (f"| {system}", source) for system in SYSTEMS for source in quality.EVALUATED
    ]
    for row in rows:
        song_sdr, median = (float(cell) for cell in row.strip(" |").split(" | ")[2:])
        assert math.isfinite(song_sdr)
        assert median == song_sdr  # one song: the median over songs is its figure


def test_no_songs_is_an_error(quality: ModuleType, tmp_path: Path) -> None:
    assert quality.main([str(tmp_path)]) == 2


def test_help_runs(quality: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        quality.main(["--help"])
    assert exit_.value.code == 0
    assert "--models" in capsys.readouterr().out


@pytest.mark.slow
def test_figures_are_museval_eval_mus_track(quality: ModuleType, tmp_path: Path) -> None:
    """The script's own path (its stream reading, then its scoring) gives the figures that
    museval's MUSDB18 evaluation of the same track and estimates publishes."""
    song = write_stem_file(tmp_path / "db" / "test" / "Synthetic - Song.stem.mp4", 3, tmp_path)
    track = musdb.DB(root=str(tmp_path / "db"), subsets="test").tracks[0]
    rng = np.random.default_rng(7)
    estimates = {}
    for k, source in enumerate(quality.EVALUATED):  # a different error level per source
        audio = track.targets[source].audio
        estimates[source] = audio + 0.02 * (k + 1) * rng.standard_normal(audio.shape)

    published = museval.eval_mus_track(track, estimates)  # museval's MUSDB18 defaults

    references = {name: quality.read_stream(song, k) for name, k in quality.STREAMS.items()}
    ours = quality.evaluate(references, {s: e.T for s, e in estimates.items()})
    assert list(ours) == list(quality.EVALUATED)
    for target in published.scores["targets"]:
        frames = [float(f["metrics"]["SDR"]) for f in target["frames"]]
        assert len(frames) == 3
        assert ours[target["name"]] == pytest.approx(np.nanmedian(frames), abs=1e-3)
    assert len({round(v) for v in ours.values()}) > 1  # the sources are told apart
