"""`demix separate`: in-process through demix.cli.main and as the installed console script."""

from __future__ import annotations

import logging
import os
import pty
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from demix.cli import main
from separation import decode_audio, probe_audio
from separation.config import PRECISIONS
from separation.formats import FILE_FORMATS
from tests.support.audio import decode, make_song
from tests.support.processes import child_env

DEMIX = Path(sys.executable).parent / "demix"


@pytest.fixture
def cli_env(
    bare_environment: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_repo: Path
) -> dict[str, str]:
    """Environment of a CLI run, in this process and for a child: tiny models, CPU, a tmp
    cache; no stray `.env` file or settings variable."""
    settings = {
        "DEMIX_MODEL_REPO": str(model_repo),
        "DEMIX_DEVICE": "cpu",
        "DEMIX_CACHE_DIR": str(tmp_path / "cache"),
    }
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    return child_env(settings)


def test_separate_writes_named_tracks_and_prints_them(
    cli_env: dict[str, str], song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(["separate", str(song), "--stems", "vocals,drums", "--out", str(out)])
    assert status == 0
    printed = capsys.readouterr().out.splitlines()
    expected = [out / f"Test Song - {track}.mp3" for track in ("drums", "vocals", "rest")]
    assert printed == [str(path) for path in expected]
    length = decode_audio(song).samples.shape[1]
    for path in expected:
        assert decode(path).shape == (2, length)
        assert probe_audio(path).artist == "Test Artist"
    assert probe_audio(expected[0]).title == "Test Song (drums)"


@pytest.mark.parametrize("stems", ["kazoo", "vocals,kazoo", ",", ""])
def test_unknown_stems_exit_non_zero_with_one_line(
    cli_env: dict[str, str],
    song: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    stems: str,
) -> None:
    status = main(["separate", str(song), "--stems", stems, "--out", str(tmp_path / "out")])
    assert status == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1
    assert "pick" in captured.err.lower()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"just text\n", b""], ids=["text", "empty"])
def test_bad_input_exits_non_zero_with_one_line(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes
) -> None:
    bad = tmp_path / "fake.mp3"
    bad.write_bytes(content)
    status = main(["separate", str(bad), "--out", str(tmp_path / "out")])
    assert status == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "mp3" in err


def test_missing_file_exits_non_zero(
    cli_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["separate", str(tmp_path / "nope.mp3")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_missing_models_exit_non_zero(
    cli_env: dict[str, str],
    song: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DEMIX_MODEL_REPO", str(tmp_path / "no-models"))
    assert main(["separate", str(song), "--stems", "vocals"]) == 3
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_console_script_success_and_failure(
    cli_env: dict[str, str], song: Path, tmp_path: Path
) -> None:
    ok = subprocess.run(
        [str(DEMIX), "separate", str(song), "--stems", "guitar", "--out", str(tmp_path / "o")],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines() == [
        str(tmp_path / "o" / "Test Song - guitar.mp3"),
        str(tmp_path / "o" / "Test Song - no_guitar.mp3"),
    ]
    # Not a terminal: no progress bar in the captured stderr.
    assert "separating" not in ok.stderr

    for args, named in (
        (["--stems", "flute"], "flute"),
        (["--format", "aiff"], "invalid choice: 'aiff'"),
    ):
        bad = subprocess.run(
            [str(DEMIX), "separate", str(song), *args],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert bad.returncode == 2, args
        assert named in bad.stderr
        assert "Traceback" not in bad.stderr


def test_progress_bar_on_a_terminal(cli_env: dict[str, str], song: Path, tmp_path: Path) -> None:
    leader, follower = pty.openpty()
    try:
        process = subprocess.run(
            [str(DEMIX), "separate", str(song), "--stems", "bass", "--out", str(tmp_path / "o")],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=follower,
            timeout=240,
        )
        os.close(follower)
        follower = -1
        terminal = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the pty's writer end is closed: all read
                break
            if not chunk:
                break
            terminal += chunk
    finally:
        if follower >= 0:
            os.close(follower)
        os.close(leader)
    assert process.returncode == 0
    assert b"separating" in terminal


def _model_loads(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The separator's "loading model" log lines (one per model it loads)."""
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("loading model")]


def test_several_files_in_one_call_load_the_models_once(
    cli_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    songs = [
        make_song(tmp_path / "One.mp3", seconds=2.0, seed=1),
        make_song(tmp_path / "Two.flac", seconds=2.5, seed=2),
    ]
    # A device that exists nowhere: only --device makes the run possible.
    monkeypatch.setenv("DEMIX_DEVICE", "cuda:99")
    caplog.set_level(logging.INFO, logger="separation.ensemble")
    out = tmp_path / "out"
    command = ["separate", *map(str, songs), "--stems", "vocals", "--out", str(out)]
    assert main([*command, "--device", "cpu", "--precision", "bf16"]) == 0
    expected = [out / f"{s} - {t}.mp3" for s in ("One", "Two") for t in ("vocals", "no_vocals")]
    assert capsys.readouterr().out.splitlines() == [str(path) for path in expected]
    for song, paths in zip(songs, (expected[:2], expected[2:]), strict=True):
        length = decode_audio(song).samples.shape[1]
        for path in paths:
            assert decode(path).shape == (2, length)
    # One separator for both files: htdemucs_ft loaded once, on the device and in the
    # precision the options named.
    assert _model_loads(caplog) == [
        f"loading model htdemucs_ft from {cli_env['DEMIX_MODEL_REPO']} on cpu (bf16)"
    ]

    assert main(command) == 2
    assert "cuda:99 is not available" in capsys.readouterr().err


def test_a_bad_file_among_several_is_reported_and_the_others_separated(
    cli_env: dict[str, str], song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "notes.mp3"
    bad.write_text("not a song\n")
    out = tmp_path / "out"
    files = [str(bad), str(tmp_path / "missing.wav"), str(song)]
    assert main(["separate", *files, "--stems", "bass", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        str(out / f"Test Song - {track}.mp3") for track in ("bass", "no_bass")
    ]
    errors = captured.err.strip().splitlines()
    assert len(errors) == 2
    assert "notes.mp3" in errors[0] and "mp3" in errors[0]
    assert "no such file" in errors[1] and "missing.wav" in errors[1]


def test_files_that_would_write_the_same_names_are_refused(
    cli_env: dict[str, str], song: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    twin = make_song(tmp_path / "Test Song.flac", seconds=1.0)
    out = tmp_path / "out"
    assert main(["separate", str(song), str(twin), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "same files" in err and "Test Song.flac" in err
    assert not out.exists()


@pytest.mark.parametrize(("fmt", "codec"), [("wav", "pcm_f32le"), ("flac", "flac")])
def test_wav_and_flac_tracks_have_the_song_length_and_sum_to_the_mix(
    cli_env: dict[str, str],
    song: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fmt: str,
    codec: str,
) -> None:
    out = tmp_path / "out"
    command = ["separate", str(song), "--stems", "vocals,drums", "--out", str(out)]
    assert main([*command, "--format", fmt]) == 0
    paths = [out / f"Test Song - {track}.{fmt}" for track in ("drums", "vocals", "rest")]
    assert capsys.readouterr().out.splitlines() == [str(path) for path in paths]
    mix = decode_audio(song).samples
    decoded = []
    for path in paths:
        assert probe_audio(path).codec == codec
        assert probe_audio(path).artist == "Test Artist"
        decoded.append(decode(path))
        assert decoded[-1].shape == mix.shape, "the song's length, sample-aligned"
    total = np.sum(decoded, axis=0)
    # Float WAV keeps the float32 tracks as they are, above full scale too; 24-bit FLAC
    # adds ~1e-7 per track and clips at full scale (this song's mix peaks just above it).
    kept = np.ones(mix.shape, dtype=bool)
    if fmt == "flac":
        kept = np.all([np.abs(track) < 0.999 for track in decoded], axis=0)
        assert kept.mean() > 0.99
    np.testing.assert_allclose(total[kept], mix[kept], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("option", "choices"),
    [(["--format", "ogg"], FILE_FORMATS), (["--precision", "fp8"], PRECISIONS)],
)
def test_an_unknown_format_or_precision_exits_non_zero_with_the_choices(
    cli_env: dict[str, str],
    song: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: list[str],
    choices: tuple[str, ...],
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["separate", str(song), *option, "--out", str(tmp_path / "out")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option[0]}: invalid choice: '{option[1]}'" in err
    assert all(choice in err for choice in choices)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--device", "cpu", "--precision", "fp16"], "fp16 is not supported on cpu"),
        (["--device", "gpu"], "device is one of auto, cpu, cuda, cuda:N, mps, not 'gpu'"),
        # Known once torch is imported, while the song decodes: that work is thrown away.
        pytest.param(
            ["--device", "cuda"],
            "device cuda is not available here",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here"),
        ),
    ],
)
def test_a_precision_or_device_that_cannot_run_exits_non_zero_with_one_line(
    cli_env: dict[str, str],
    song: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    option: list[str],
    expected: str,
) -> None:
    assert main(["separate", str(song), *option, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert expected in err
    assert not (tmp_path / "out").exists()
