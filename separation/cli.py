"""``demix separate``: the whole pipeline on a local file, no Telegram or Redis."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from separation.audio import decode_audio, encode_tracks
from separation.ensemble import EnsembleSeparator, SeparatorConfig
from separation.errors import InvalidAudioError, SeparationError, UnknownStemError
from separation.naming import safe_song_name
from separation.tracks import plan_tracks


def run_separate(file: Path, stems: str, out: Path, config: SeparatorConfig) -> int:
    """Separate ``file`` into the tracks for ``stems`` (comma-separated) and write them to
    ``out`` as ``<name> - <track>.mp3``; print each written path.

    A progress bar is drawn only when stderr is a terminal. Bad input or unknown stems
    give one line on stderr and exit status 2; a model that cannot be loaded gives 3.

    Returns:
        The process exit status.
    """
    picked = [name for name in stems.split(",") if name.strip()]
    try:
        plan_tracks(picked)
        if not file.is_file():
            print(f"demix separate: error: no such file: {file}", file=sys.stderr)
            return 2
        audio = decode_audio(file)
        separator = EnsembleSeparator(config)
        song_name = safe_song_name(file.name)
        out.mkdir(parents=True, exist_ok=True)
        # The tracks go through raw files beside the output, so a long song's tracks need
        # not fit in memory.
        with tempfile.TemporaryDirectory(prefix=".demix-", dir=out) as raw_dir:
            tracks = separator.separate_to_files(
                audio, picked, Path(raw_dir), progress=_progress_bar()
            )
            written = encode_tracks(tracks, out, song_name, artist=audio.info.artist)
    except (InvalidAudioError, UnknownStemError) as exc:
        print(f"demix separate: error: {exc.user_message} ({exc})", file=sys.stderr)
        return 2
    except SeparationError as exc:
        print(f"demix separate: error: {exc}", file=sys.stderr)
        return 3
    for path in written:
        print(path)
    return 0


class _Bar:
    """A tqdm bar fed with fractions 0..1."""

    def __init__(self) -> None:
        from tqdm import tqdm

        # A pseudo-terminal may report a 0x0 size, on which tqdm hides its bar.
        size = shutil.get_terminal_size()
        self._bar = tqdm(
            total=1000,
            unit="‰",
            desc="separating",
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


def _progress_bar() -> _Bar | None:
    return _Bar() if sys.stderr.isatty() else None
