"""`demix models fetch` / `check` and separation.model_store, offline with tiny models.

Downloads go to a real HTTP server on loopback that serves a tiny model folder and honours
range requests, so resuming, checksums and atomic writes are exercised for real.
"""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from demix.models import run_models_check, run_models_fetch
from separation.model_store import (
    ModelStoreError,
    RemoteIndex,
    WeightFile,
    check_model_repo,
    fetch_models,
)
from tests.support.processes import child_env, run_demix
from tests.support.redis_server import free_port

NAMES = ("htdemucs_ft", "htdemucs_6s")


@pytest.fixture
def repo_copy(tmp_path: Path, model_repo: Path) -> Path:
    """A private copy of the tiny model folder that a test may damage."""
    return Path(shutil.copytree(model_repo, tmp_path / "repo"))


def _weights(repo: Path) -> list[Path]:
    return sorted(repo.glob("*.th"))


def _sig_of(path: Path) -> str:
    return path.stem.split("-")[0]


def _bag_sigs(repo: Path, name: str) -> list[str]:
    import yaml

    return list(yaml.safe_load((repo / f"{name}.yaml").read_text())["models"])


# --------------------------------------------------------------------------------- check


def test_check_good_folder(
    make_settings: Callable[..., Settings], model_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_models_check(make_settings(), None) == 0
    out = capsys.readouterr().out
    assert "complete" in out
    assert "PROBLEM" not in out
    for path in _weights(model_repo):
        assert f"ok       {path.name}" in out
    assert "loaded   htdemucs_6s: drums, bass, other, vocals, guitar, piano" in out

    report = check_model_repo(model_repo, NAMES)
    assert report.ok
    assert len(report.files_ok) == 5


def test_check_missing_weight_file_names_it(
    make_settings: Callable[..., Settings],
    repo_copy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sig = _bag_sigs(repo_copy, "htdemucs_ft")[2]
    next(repo_copy.glob(f"{sig}-*.th")).unlink()

    assert run_models_check(make_settings(), repo_copy) == 1
    captured = capsys.readouterr()
    assert f"htdemucs_ft: missing-weights: {sig}-<sha8>.th" in captured.out
    assert "demix models fetch --to" in captured.err
    # The other model is still checked and reported fine.
    assert "loaded   htdemucs_6s" in captured.out


def test_check_missing_yaml(
    make_settings: Callable[..., Settings],
    repo_copy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (repo_copy / "htdemucs_6s.yaml").unlink()

    assert run_models_check(make_settings(), repo_copy) == 1
    out = capsys.readouterr().out
    assert "htdemucs_6s: missing-yaml: htdemucs_6s.yaml" in out
    assert "loaded   htdemucs_ft" in out


def test_check_corrupt_file_fails_checksum(
    make_settings: Callable[..., Settings],
    repo_copy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = next(repo_copy.glob(f"{_bag_sigs(repo_copy, 'htdemucs_6s')[0]}-*.th"))
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))

    assert run_models_check(make_settings(), repo_copy) == 1
    out = capsys.readouterr().out
    assert f"htdemucs_6s: checksum: {victim.name}" in out


def test_check_unloadable_file_with_matching_checksum(
    make_settings: Callable[..., Settings],
    repo_copy: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    victim = next(repo_copy.glob(f"{_bag_sigs(repo_copy, 'htdemucs_6s')[0]}-*.th"))
    garbage = b"this is not a torch package" * 100
    sha8 = hashlib.sha256(garbage).hexdigest()[:8]
    victim.unlink()
    (repo_copy / f"{_sig_of(victim)}-{sha8}.th").write_bytes(garbage)

    assert run_models_check(make_settings(), repo_copy) == 1
    out = capsys.readouterr().out
    assert "htdemucs_6s: load: htdemucs_6s.yaml" in out
    assert "loaded   htdemucs_ft" in out


def test_check_truncated_file(repo_copy: Path) -> None:
    victim = _weights(repo_copy)[0]
    victim.write_bytes(victim.read_bytes()[:1000])

    report = check_model_repo(repo_copy, NAMES)
    assert [p.kind for p in report.problems] == ["checksum"]
    assert report.problems[0].path == victim.name


def test_check_models_in_the_wrong_roles(repo_copy: Path) -> None:
    # Model B must be 6-source; the 4-source bag lacks guitar and piano.
    report = check_model_repo(repo_copy, ("htdemucs_6s", "htdemucs_ft"))
    assert [(p.model, p.kind) for p in report.problems] == [("htdemucs_ft", "sources")]
    assert "lacks guitar, piano" in report.problems[0].detail


def test_check_without_folder_says_how_to_give_one(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_models_check(make_settings(model_repo=None), None) == 2
    assert "--repo DIR or set DEMIX_MODEL_REPO" in capsys.readouterr().err


def test_check_nonexistent_folder(tmp_path: Path) -> None:
    report = check_model_repo(tmp_path / "nowhere", NAMES)
    assert not report.ok
    assert {p.kind for p in report.problems} == {"missing-folder"}


def test_check_from_the_command_line(tmp_path: Path, model_repo: Path, repo_copy: Path) -> None:
    good = _demix(tmp_path, "models", "check", "--repo", str(model_repo))
    assert good.returncode == 0, good.stderr
    assert "complete" in good.stdout

    (repo_copy / "htdemucs_ft.yaml").unlink()
    bad = _demix(tmp_path, "models", "check", "--repo", str(repo_copy))
    assert bad.returncode == 1
    assert "htdemucs_ft: missing-yaml" in bad.stdout


# --------------------------------------------------------------------------------- fetch


class _FileServer:
    """Serves a folder over HTTP with range support; records requests; can corrupt a file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str | None]] = []
        self.corrupt: set[str] = set()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                server.requests.append((name, self.headers.get("Range")))
                path = server.root / name
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                if name in server.corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 1])
                start = 0
                range_header = self.headers.get("Range")
                if range_header:
                    start = int(range_header.removeprefix("bytes=").split("-")[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def index(self) -> RemoteIndex:
        urls = {_sig_of(p): self.url + p.name for p in _weights(self.root)}
        return RemoteIndex(self.root, urls)

    def weight_requests(self) -> list[tuple[str, str | None]]:
        return [r for r in self.requests if r[0].endswith(".th")]


@pytest.fixture
def file_server(model_repo: Path) -> Iterator[_FileServer]:
    server = _FileServer(model_repo)
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_fetch_writes_a_loadable_folder_and_skips_present_files(
    tmp_path: Path, file_server: _FileServer
) -> None:
    dest = tmp_path / "fetched"
    seen: list[tuple[str, int, int | None]] = []
    paths = fetch_models(NAMES, dest, index=file_server.index(), progress=lambda *a: seen.append(a))

    assert sorted(p.name for p in paths) == sorted(
        p.name for p in file_server.root.iterdir() if p.suffix in {".th", ".yaml"}
    )
    assert check_model_repo(dest, NAMES).ok
    assert len(file_server.weight_requests()) == 5
    assert not list(dest.glob("*.part"))
    # Progress reaches the full size of every file.
    finished = {name for name, done, total in seen if done == total}
    assert finished == {p.name for p in _weights(dest)}

    fetch_models(NAMES, dest, index=file_server.index())
    assert len(file_server.weight_requests()) == 5, "present files were downloaded again"


def test_fetch_resumes_a_partial_download(tmp_path: Path, file_server: _FileServer) -> None:
    dest = tmp_path / "fetched"
    dest.mkdir()
    source = _weights(file_server.root)[0]
    half = len(source.read_bytes()) // 2
    (dest / f"{source.name}.part").write_bytes(source.read_bytes()[:half])

    fetch_models(NAMES, dest, index=file_server.index())

    assert (source.name, f"bytes={half}-") in file_server.requests
    assert (dest / source.name).read_bytes() == source.read_bytes()
    assert check_model_repo(dest, NAMES).ok


def test_fetch_replaces_a_corrupt_present_file(tmp_path: Path, file_server: _FileServer) -> None:
    dest = tmp_path / "fetched"
    fetch_models(NAMES, dest, index=file_server.index())
    victim = _weights(dest)[1]
    victim.write_bytes(b"broken")

    fetch_models(NAMES, dest, index=file_server.index())

    assert check_model_repo(dest, NAMES).ok
    assert file_server.weight_requests()[-1] == (victim.name, None)


def test_fetch_rejects_a_download_with_the_wrong_checksum(
    tmp_path: Path, file_server: _FileServer
) -> None:
    dest = tmp_path / "fetched"
    bad = next(file_server.root.glob(f"{_bag_sigs(file_server.root, 'htdemucs_6s')[0]}-*.th"))
    file_server.corrupt.add(bad.name)

    with pytest.raises(ModelStoreError, match="checksum"):
        fetch_models(NAMES, dest, index=file_server.index())

    assert not (dest / bad.name).exists()
    assert not (dest / f"{bad.name}.part").exists()
    # The bag whose weights failed is not written, so the folder never claims it is whole.
    assert not (dest / "htdemucs_6s.yaml").exists()
    assert (dest / "htdemucs_ft.yaml").exists()


def test_fetch_unknown_model(tmp_path: Path, file_server: _FileServer) -> None:
    with pytest.raises(ModelStoreError, match="unknown model 'nope'"):
        fetch_models(["nope"], tmp_path / "fetched", index=file_server.index())


def test_demucs_index_names_the_legacy_files() -> None:
    index = RemoteIndex.demucs()
    ft = index.weight_files("htdemucs_ft")
    assert [w.sig for w in ft] == ["f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d"]
    assert ft[0] == WeightFile(
        "f7e0c4bc",
        "f7e0c4bc-ba3fe64a.th",
        "https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/f7e0c4bc-ba3fe64a.th",
    )
    assert ft[0].checksum == "ba3fe64a"
    six = RemoteIndex.demucs("http://mirror.example/demucs").weight_files("htdemucs_6s")
    assert six[0].url == "http://mirror.example/demucs/hybrid_transformer/5c90dfd2-34c22ccb.th"


def test_fetch_offline_fails_with_a_clear_message(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Nothing listens on this port: the same failure as a machine without network.
    mirror = f"http://127.0.0.1:{free_port()}/"
    dest = tmp_path / "fetched"

    assert run_models_fetch(make_settings(), dest, mirror=mirror) == 1

    err = capsys.readouterr().err
    assert f"could not download {mirror}hybrid_transformer/f7e0c4bc-ba3fe64a.th" in err
    assert "Connection refused" in err
    assert "No network?" in err
    assert not list(dest.glob("*.yaml"))


def test_fetch_without_folder_says_how_to_give_one(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_models_fetch(make_settings(model_repo=None), None) == 2
    assert "--to DIR or set DEMIX_MODEL_REPO" in capsys.readouterr().err


def test_fetch_from_the_command_line_offline(tmp_path: Path) -> None:
    mirror = f"http://127.0.0.1:{free_port()}/"
    result = _demix(tmp_path, "models", "fetch", "--to", str(tmp_path / "m"), "--mirror", mirror)
    assert result.returncode == 1
    assert "demix models fetch failed: could not download" in result.stderr


# A bare environment: no DEMIX_* variable (or anything else of the shell) leaks in.
BARE = child_env(inherit=False, HOME="/nonexistent")


def _demix(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # And an empty folder: no `.env` file is read.
    return run_demix(*args, env=BARE, cwd=cwd)


def test_models_commands_without_the_worker_extra_say_what_to_install(tmp_path: Path) -> None:
    # As in the bot's image: numpy (and torch, demucs) are not installed.
    script = (
        "import sys; sys.modules['numpy'] = None; from demix.cli import main; "
        f"sys.exit(main(['models', 'check', '--repo', {str(tmp_path)!r}]))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=BARE,
    )
    assert result.returncode == 2
    assert "pip install 'neural-music-demixing[worker]'" in result.stderr
    assert "Traceback" not in result.stderr
