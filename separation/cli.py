"""``demix separate``: the whole pipeline on local files, no Telegram or Redis.

torch and the engine are imported inside :func:`run_separate`, after the arguments that
need neither are checked: their import is about a second on one core, and the first song
decodes (an ffmpeg process, on the other core) in the meantime.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import shutil
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from separation.audio import Audio, decode_audio, encode_tracks
from separation.config import SeparatorConfig
from separation.errors import InvalidAudioError, SeparationError, UnknownStemError
from separation.formats import DEFAULT_OUTPUT_FORMAT, FILE_FORMATS, FileFormat
from separation.naming import safe_song_name
from separation.tracks import plan_tracks

if TYPE_CHECKING:
    import torch

    from separation.ensemble import EnsembleSeparator

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
    still separated; the exit status is then 2. Unknown stems or format, or two files whose
    tracks would have the same names, give one line on stderr and exit status 2 before any
    file is read; an unknown or unavailable device, or a precision the device cannot run,
    the same once torch is imported, with nothing written (the first file, decoding
    meanwhile, is thrown away). A model that cannot be loaded gives 3 at once. A progress
    bar is drawn only when stderr is a terminal.

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
    clash = _same_names(files)
    if clash:
        return _error(clash, 2)
    try:
        config = dataclasses.replace(
            config, device=device or config.device, precision=precision or config.precision
        )
    except ValueError as exc:  # an unknown precision
        return _error(str(exc), 2)
    first = next((file for file in files if file.is_file()), None)
    with _Decoding(out) as decoding:
        if first is not None:
            decoding.start(first)
        try:
            separator = _separator(config)
        except ValueError as exc:  # an unknown device or precision, or one the device lacks
            return _error(str(exc), 2)
        return _separate_all(files, picked, out, separator, fmt, decoding)


def _separator(config: SeparatorConfig) -> EnsembleSeparator:
    """The separator for ``config``, torch imported here; ValueError for a device or
    precision that cannot run."""
    # The collector would walk torch's import-time objects over and over while they are
    # made, and none of them is garbage: 0.1 s of the 1 s import on this project's 2-core
    # machine. Frozen (kept out of every later collection, for the process's life), they
    # cost the first full collection after it nothing either: 0.08 s more.
    collecting = gc.isenabled()
    gc.disable()
    try:
        from separation.ensemble import EnsembleSeparator, resolve_device
    finally:
        gc.freeze()
        if collecting:
            gc.enable()

    unavailable = _unavailable(resolve_device(config.device))
    if unavailable:
        raise ValueError(unavailable)
    return EnsembleSeparator(config)


class _Decoding:
    """One file decoding on a thread into its work folder in ``out``, ahead of its turn;
    on exit, a decoding no file took is waited for and its folder removed (with ``out``
    when it was made for it and is empty)."""

    def __init__(self, out: Path) -> None:
        self._out = out
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="decode")
        self.file: Path | None = None
        self._made_out = False
        self._work: tempfile.TemporaryDirectory[str] | None = None
        self._audio: Future[Audio] | None = None

    def __enter__(self) -> _Decoding:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
        self._pool.shutdown()

    def start(self, file: Path) -> None:
        """Decode ``file`` from now on, into a new work folder."""
        self._made_out = not self._out.exists()
        self._out.mkdir(parents=True, exist_ok=True)
        self._work = tempfile.TemporaryDirectory(prefix=".demix-", dir=self._out)
        self.file = file
        self._audio = self._pool.submit(decode_audio, file, spool_dir=Path(self._work.name))

    def take(self) -> tuple[Audio, tempfile.TemporaryDirectory[str], bool]:
        """The decoded song (or its decoding's error), its work folder (the caller's to
        remove now; the song's samples are files in it) and whether ``out`` was made for
        it."""
        assert self._audio is not None and self._work is not None
        audio, work, made_out = self._audio, self._work, self._made_out
        self._audio, self._work, self.file = None, None, None
        try:
            return audio.result(), work, made_out
        except BaseException:
            _remove(work, self._out if made_out else None)
            raise

    def discard(self) -> None:
        """Wait for a decoding nobody took and remove what it wrote."""
        if self._audio is None or self._work is None:
            return
        with contextlib.suppress(Exception):
            self._audio.result()
        _remove(self._work, self._out if self._made_out else None)
        self._audio, self._work, self.file = None, None, None


def _remove(work: tempfile.TemporaryDirectory[str], out: Path | None) -> None:
    """Remove a work folder, and ``out`` too when given and empty."""
    work.cleanup()
    if out is not None:
        with contextlib.suppress(OSError):
            out.rmdir()


def _separate_all(
    files: Sequence[Path],
    picked: list[str],
    out: Path,
    separator: EnsembleSeparator,
    fmt: FileFormat,
    decoding: _Decoding,
) -> int:
    failed = False
    for index, file in enumerate(files, 1):
        label = "separating" if len(files) == 1 else f"separating {index}/{len(files)}"
        try:
            if not file.is_file() and decoding.file != file:
                _error(f"no such file: {file}", 2)
                failed = True
                continue
            if decoding.file != file:
                decoding.start(file)
            # The song and its tracks go through raw files beside the output, so a long
            # song need not fit in memory.
            audio, work, made_out = decoding.take()
            try:
                tracks = separator.separate_to_files(
                    audio, picked, Path(work.name) / "raw", progress=_progress_bar(label)
                )
                written = encode_tracks(
                    tracks, out, safe_song_name(file.name), artist=audio.info.artist, fmt=fmt
                )
            except BaseException:
                # Nothing written: the folder is not left behind.
                _remove(work, out if made_out else None)
                raise
            work.cleanup()
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
    import torch

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
