"""`demix models fetch` and `demix models check`: fill and verify the local model folder."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TextIO

from common.settings import Settings

WORKER_EXTRA_MISSING = (
    "demix models needs the separation engine: pip install 'neural-music-demixing[worker]' "
    "(the bot's install leaves it out)"
)


def _engine_installed() -> bool:
    try:
        import demucs.pretrained  # noqa: F401
        import numpy  # noqa: F401
    except ModuleNotFoundError:
        print(WORKER_EXTRA_MISSING, file=sys.stderr)
        return False
    return True


def _folder(given: Path | None, settings: Settings, flag: str) -> Path | None:
    folder = given or settings.model_repo
    if folder is None:
        print(
            f"demix models: no model folder; pass {flag} DIR or set DEMIX_MODEL_REPO",
            file=sys.stderr,
        )
    return folder


class _Progress:
    """Download progress on stderr: a live line on a terminal, a few lines in a log."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.current = ""
        self.last_step = -1
        self.last_draw = 0.0

    def __call__(self, file_name: str, done: int, total: int | None) -> None:
        if file_name != self.current:
            self.current, self.last_step = file_name, -1
            if total is not None and done == total:
                print(f"{file_name}: present, checksum ok", file=self.stream)
                return
            resumed = f" (resuming at {done / 1e6:.1f} MB)" if done else ""
            size = f"{total / 1e6:.1f} MB" if total else "size unknown"
            print(f"{file_name}: downloading, {size}{resumed}", file=self.stream)
        if total is None or not total:
            return
        percent = 100 * done // total
        if self.live:
            now = time.monotonic()
            if now - self.last_draw > 0.2 or done == total:
                self.last_draw = now
                end = "\n" if done == total else ""
                print(f"\r  {percent:3d}% {done / 1e6:8.1f} MB", end=end, file=self.stream)
                self.stream.flush()
        elif percent // 25 > self.last_step:
            self.last_step = percent // 25
            print(f"  {percent:3d}% {done / 1e6:8.1f} MB", file=self.stream)


def run_models_fetch(settings: Settings, to: Path | None, *, mirror: str | None = None) -> int:
    """Download the configured ensemble (DEMIX_MODELS) into a local model folder."""
    dest = _folder(to, settings, "--to")
    if dest is None or not _engine_installed():
        return 2
    from separation.model_store import DEMUCS_ROOT_URL, ModelStoreError, RemoteIndex, fetch_models

    source = mirror or DEMUCS_ROOT_URL
    print(f"fetching {', '.join(settings.models)} into {dest} from {source}", file=sys.stderr)
    try:
        paths = fetch_models(
            settings.models,
            dest,
            index=RemoteIndex.demucs(mirror),
            progress=_Progress(sys.stderr),
        )
    except ModelStoreError as exc:
        print(
            f"demix models fetch failed: {exc}\n"
            "No network? Fetch on a connected machine and copy the folder, or pass "
            "--mirror URL (a copy of the server's layout). Finished files are kept; "
            "running fetch again resumes.",
            file=sys.stderr,
        )
        return 1
    size = sum(p.stat().st_size for p in paths) / 1e6
    print(f"ok: {len(paths)} files, {size:.0f} MB in {dest}", file=sys.stderr)
    print(f"use it with DEMIX_MODEL_REPO={dest.resolve()}", file=sys.stderr)
    return 0


def run_models_check(settings: Settings, repo: Path | None) -> int:
    """Verify the local model folder: files present, checksums, loadable; say what is wrong."""
    root = _folder(repo, settings, "--repo")
    if root is None or not _engine_installed():
        return 2
    from separation.model_store import check_model_repo

    report = check_model_repo(root, settings.models)
    for file_name in report.files_ok:
        print(f"ok       {file_name}")
    for name, sources in report.sources.items():
        print(f"loaded   {name}: {', '.join(sources)}")
    for problem in report.problems:
        print(f"PROBLEM  {problem}")
    if report.ok:
        print(f"model folder {root} is complete: {', '.join(settings.models)}")
        return 0
    print(
        f"model folder {root} is not usable: {len(report.problems)} problem(s); "
        f"`demix models fetch --to {root}` downloads what is missing",
        file=sys.stderr,
    )
    return 1
