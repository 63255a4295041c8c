"""`demix separate`: in-process through demix.cli.main and as the installed console script."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from demix.cli import main
from separation import decode_audio, probe_audio
from tests.support.audio import decode
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

    bad = subprocess.run(
        [str(DEMIX), "separate", str(song), "--stems", "flute"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert bad.returncode == 2
    assert "flute" in bad.stderr
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
