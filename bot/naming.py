"""Torch-free name helpers for the bot process: safe song names and the tracks a pick gives.

`separation` has the same rules, but importing it loads torch; the bot must stay light.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

from bot.callback_data import SOURCES

MAX_SONG_NAME_CHARS = 80
_UNSAFE = re.compile(r'[\\/:*?"<>|\x00-\x1f\x7f]+')
_SPACES = re.compile(r"\s+")
# Extensions dropped from a sent file's name ("My Song.mp3" -> "My Song").
_EXTENSION = re.compile(r"\.[A-Za-z0-9]{1,5}$")


def safe_song_name(file_name: str | None, fallback: str = "song") -> str:
    """A user-supplied file name as a safe base name for output files.

    Drops the extension and any directory part, removes path separators, control and
    format characters and characters that file systems refuse, and caps the length.
    """
    if not file_name:
        return fallback
    text = unicodedata.normalize("NFC", file_name)
    text = text.replace("\\", "/").rsplit("/", 1)[-1]
    text = _EXTENSION.sub("", text)
    text = _SPACES.sub(" ", text)
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = _UNSAFE.sub(" ", text)
    text = _SPACES.sub(" ", text).strip(" .")
    text = text[:MAX_SONG_NAME_CHARS].rstrip(" .")
    return text or fallback


def planned_tracks(stems: Iterable[str]) -> tuple[str, ...]:
    """The tracks a pick delivers (DESIGN.md's table); empty for an empty pick."""
    picked = [source for source in SOURCES if source in set(stems)]
    if not picked:
        return ()
    if len(picked) == 1:
        return (picked[0], f"no_{picked[0]}")
    if len(picked) == len(SOURCES):
        return tuple(picked)
    return (*picked, "rest")
