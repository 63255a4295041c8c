"""bench/versus_cli.py end to end, tiny models: every figure measured, and every run's files
(the demucs CLI's wavs, our mp3s) really written; a run that writes nothing stops it.

The end-to-end run leaves out ``--bf16`` (two more requests and a second set of models) to
stay near a minute on the 2-core development machine; those rows go through the same code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from separation import decode_audio

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "versus_cli.py"
SECONDS = 3
RATE = 44100
FOUR = ("drums", "bass", "other", "vocals")
SIX = (*FOUR, "guitar", "piano")
OURS_SIX = ("drums", "bass", "vocals", "guitar", "piano", "other")
OURS_VOCALS = ("vocals", "no_vocals")
FIGURES = {
    "cli_six",
    "cli_ft",
    "cli_6s",
    "cli_vocals",
    "ours_six_cold",
    "ours_six_warm",
    "ours_vocals_cold",
    "ours_vocals_warm",
}
# Ratio -> (ours, demucs's figure, target).
RATIOS = {
    "six_cold": ("ours_six_cold", "cli_six", 0.75),
    "six_warm": ("ours_six_warm", "cli_six", 0.75),
    "vocals_cold": ("ours_vocals_cold", "cli_vocals", 0.30),
    "vocals_warm": ("ours_vocals_warm", "cli_vocals", 0.30),
}
# What each run must have left in the work folder, relative to it.
EXPECTED_FILES = {
    "cli_ft": [f"runs/cli_six/htdemucs_ft/song/{s}.wav" for s in FOUR],
    "cli_6s": [f"runs/cli_six/htdemucs_6s/song/{s}.wav" for s in SIX],
    "cli_vocals": [f"runs/cli_vocals/htdemucs_ft/song/{s}.wav" for s in ("vocals", "no_vocals")],
    **{
        f"ours_six_{mode}": [f"runs/ours_six_{mode}/song - {t}.mp3" for t in OURS_SIX]
        for mode in ("cold", "warm")
    },
    **{
        f"ours_vocals_{mode}": [f"runs/ours_vocals_{mode}/song - {t}.mp3" for t in OURS_VOCALS]
        for mode in ("cold", "warm")
    },
}


def wav_seconds(path: Path) -> float:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate(), wav.getsampwidth()) == (2, RATE, 2)
        return wav.getnframes() / RATE


@pytest.mark.slow
def test_versus_cli_measures_every_figure_from_real_runs(tmp_path: Path) -> None:
    work, report = tmp_path / "work", tmp_path / "figures.json"
    done = subprocess.run(
        [
            *(sys.executable, str(SCRIPT), "--size", "tiny", "--seconds", str(SECONDS)),
            *("--repeat", "1", "--json", str(report), "--keep", str(work)),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    result: dict[str, Any] = json.loads(report.read_text())
    assert result["clip_seconds"] == pytest.approx(SECONDS, abs=0.01)
    figures = result["figures"]
    assert set(figures) == FIGURES
    for name, figure in figures.items():
        assert figure["seconds"] > 0, name
        assert figure["seconds"] == min(figure["all_runs"]), name
        assert figure["per_audio_second"] == pytest.approx(figure["seconds"] / SECONDS, rel=0.01)
    assert figures["cli_six"]["seconds"] == pytest.approx(
        figures["cli_ft"]["seconds"] + figures["cli_6s"]["seconds"]
    )
    assert set(result["ratios"]) == set(RATIOS)
    for name, (ours, theirs, target) in RATIOS.items():
        ratio = result["ratios"][name]
        value = figures[ours]["seconds"] / figures[theirs]["seconds"]
        assert ratio["value"] == pytest.approx(value), name
        assert ratio["target"] == target
        assert ratio["ok"] is (value <= target)
        assert ratio["default"] is True
    verdicts = [line for line in done.stdout.splitlines() if line.endswith((" ok |", "MISSED |"))]
    assert len(verdicts) == len(RATIOS)

    for name, expected in EXPECTED_FILES.items():
        assert result["files"][name] == expected, name
        for relative in expected:
            path = work / relative
            seconds = wav_seconds(path) if path.suffix == ".wav" else decode_audio(path).duration_s
            # demucs keeps the mp3's encoder delay and padding: its wavs run a little longer.
            assert SECONDS - 0.01 <= seconds <= SECONDS + 0.1, relative


def test_a_run_that_wrote_nothing_or_too_little_stops_the_benchmark(
    versus_cli: ModuleType, tmp_path: Path
) -> None:
    ctx = versus_cli.Context(
        song=tmp_path / "song.mp3",
        repo=tmp_path,
        runs=tmp_path,
        duration_s=SECONDS,
        demucs_env={},
        ours_env={},
    )
    with pytest.raises(RuntimeError, match=r"did not write .*drums\.wav"):
        versus_cli.check_wavs(tmp_path, ["drums"], ctx)
    with wave.open(str(tmp_path / "drums.wav"), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(RATE)
        wav.writeframes(bytes(4 * RATE))
    with pytest.raises(RuntimeError, match=r"holds 1\.00 s, not 3\.00"):
        versus_cli.check_wavs(tmp_path, ["drums"], ctx)
    with pytest.raises(RuntimeError, match=r"ours did not write .*song - vocals\.mp3"):
        versus_cli.check_ours(tmp_path, ["vocals"], ctx)


def test_a_failing_command_stops_the_benchmark_with_its_error(
    versus_cli: ModuleType, tmp_path: Path
) -> None:
    command = [sys.executable, "-c", "import sys; sys.exit('no such model')"]
    with pytest.raises(RuntimeError, match=r"exited 1:\nno such model"):
        versus_cli.timed_process(command, {}, tmp_path)
