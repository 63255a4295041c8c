"""``demix separate``: the whole pipeline on local files, no Telegram or Redis."""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from separation.audio import decode_audio, encode_tracks
from separation.ensemble import EnsembleSeparator, SeparatorConfig, resolve_device
from separation.errors import InvalidAudioError, SeparationError, UnknownStemError
from separation.formats import DEFAULT_OUTPUT_FORMAT, FILE_FORMATS, FileFormat
from separation.naming import safe_song_name
from separation.tracks import plan_tracks

_PROG = "demix separate"


def run_separate(
    files: Sequence[Path],
    stems: str,
    out: Path,
    config: SeparatorConfig,
    *,
    fmt: FileFormat = DEFAULT_OUTPUT_FORMAT,
    device: str | None = None,
    precision: str | None = None,
) -> int:
    """Separate each of ``files`` into the tracks for ``stems`` (comma-separated) and write
    them to ``out`` as ``<name> - <track>.<fmt>``; print each written path.

    One separator serves every file, so the models load once, on the first file that needs
    them. A file that is missing or not audio gets one line on stderr and the others are
    still separated; the exit status is then 2. Unknown stems, an unknown or unavailable
    device, a precision the device cannot run, or two files whose tracks would have the
    same names give one line on stderr and exit status 2 before any file is read; a model
    that cannot be loaded gives 3 at once. A progress bar is drawn only when stderr is a
    terminal.

    Args:
        files: the songs, any format ffmpeg decodes.
        stems: the pick, e.g. ``"vocals,drums"``.
        out: the folder for the tracks; created for the first file that exists (and removed
            again when that file fails and nothing was written there).
        config: the separator's configuration (from the settings).
        fmt: ``mp3`` (320 kbps), ``flac`` (24-bit) or ``wav`` (32-bit float).
        device: replaces ``config.device`` when given.
        precision: replaces ``config.precision`` when given.

    Returns:
        The process exit status.
    """
    picked = [name for name in stems.split(",") if name.strip()]
    try:
        plan_tracks(picked)
    except UnknownStemError as exc:
        return _error(f"{exc.user_message} ({exc})", 2)
    if fmt not in FILE_FORMATS:
        return _error(f"the format is one of {', '.join(FILE_FORMATS)}, not {fmt!r}", 2)
    try:
        config = dataclasses.replace(
            config, device=device or config.device, precision=precision or config.precision
        )
        unavailable = _unavailable(resolve_device(config.device))
        if unavailable:
            return _error(unavailable, 2)
        separator = EnsembleSeparator(config)
    except ValueError as exc:  # an unknown device or precision, or one the device lacks
        return _error(str(exc), 2)
    clash = _same_names(files)
    if clash:
        return _error(clash, 2)

    failed = False
    for index, file in enumerate(files, 1):
        label = "separating" if len(files) == 1 else f"separating {index}/{len(files)}"
        try:
            if not file.is_file():
                _error(f"no such file: {file}", 2)
                failed = True
                continue
            made_out = not out.exists()
            out.mkdir(parents=True, exist_ok=True)
            try:
                # The song and its tracks go through raw files beside the output, so a long
                # song need not fit in memory.
                with tempfile.TemporaryDirectory(prefix=".demix-", dir=out) as work:
                    audio = decode_audio(file, spool_dir=Path(work))
                    tracks = separator.separate_to_files(
                        audio, picked, Path(work) / "raw", progress=_progress_bar(label)
                    )
                    written = encode_tracks(
                        tracks, out, safe_song_name(file.name), artist=audio.info.artist, fmt=fmt
                    )
            except BaseException:
                if made_out:  # nothing written: the folder is not left behind
                    with contextlib.suppress(OSError):
                        out.rmdir()
                raise
        except InvalidAudioError as exc:
            _error(f"{exc.user_message} ({exc})", 2)
            failed = True
            continue
        except SeparationError as exc:  # the models: no other file can be separated either
            return _error(str(exc), 3)
        for path in written:
            print(path, flush=True)
    return 2 if failed else 0


def _error(message: str, status: int) -> int:
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return status


def _unavailable(device: torch.device) -> str | None:
    """Why ``device`` cannot run here, or None: said before any model is loaded, instead
    of torch's error from deep inside the first load."""
    if device.type == "cuda" and not torch.cuda.is_available():
        return f"device {device} is not available here (no CUDA device or no CUDA build)"
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        return f"device {device} is not available here ({torch.cuda.device_count()} CUDA devices)"
    if device.type == "mps" and not torch.backends.mps.is_available():
        return f"device {device} is not available here"
    return None


def _same_names(files: Sequence[Path]) -> str | None:
    """Files whose tracks would write the same names (``a.mp3`` and ``a.flac``, or one
    file twice), as a message; None when every file has names of its own."""
    seen: dict[str, Path] = {}
    for file in files:
        name = safe_song_name(file.name)
        if name in seen:
            return (
                f"{seen[name]} and {file} would write the same files ({name} - <track>); "
                "separate them into different --out folders"
            )
        seen[name] = file
    return None


class _Bar:
    """A tqdm bar fed with fractions 0..1."""

    def __init__(self, label: str) -> None:
        from tqdm import tqdm

        # A pseudo-terminal may report a 0x0 size, on which tqdm hides its bar.
        size = shutil.get_terminal_size()
        self._bar = tqdm(
            total=1000,
            unit="‰",
            desc=label,
            file=sys.stderr,
            leave=False,
            ncols=size.columns,
            nrows=size.lines,
        )
        self._done = 0

    def __call__(self, fraction: float) -> None:
        target = int(fraction * 1000)
        if target > self._done:
            self._bar.update(target - self._done)
            self._done = target
        if fraction >= 1.0:
            self._bar.close()


def _progress_bar(label: str) -> _Bar | None:
    return _Bar(label) if sys.stderr.isatty() else None
