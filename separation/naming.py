"""Names of songs and tracks: one definition for the worker, the bot and ``demix separate``.

A sent file's name is user input: it may carry directories, control characters, bidi
overrides, characters file systems refuse, or hundreds of characters. It becomes part of
file names on disk and in the chat, so it is made safe once, here.
"""

from __future__ import annotations

import re
import unicodedata

MAX_SONG_NAME_CHARS = 100
# File systems cap a name at 255 bytes; the track suffix (" - no_vocals.flac") needs room.
MAX_SONG_NAME_BYTES = 200

_UNSAFE = re.compile(r'[\\/:*?"<>|]+')
_SPACES = re.compile(r"\s+")
# Extensions dropped from a sent file's name ("My Song.mp3" -> "My Song").
_EXTENSION = re.compile(r"(?<=.)\.[A-Za-z0-9]{1,5}$")


def safe_song_name(file_name: str | None, fallback: str = "song") -> str:
    """Turn a user-supplied file name into a safe base name for output files.

    Only the last path component counts (either separator); the extension is dropped;
    whitespace runs become one space; control and format characters (bidi overrides
    included) and characters that common file systems refuse are removed; leading and
    trailing dots and spaces go (no hidden files, no ``..``); the length is capped in
    characters and in UTF-8 bytes.

    Args:
        file_name: what the user's client called the file; may be None or hostile.
        fallback: the name used when nothing safe is left.

    Returns:
        A non-empty name without directory parts or extension.
    """
    if not file_name:
        return fallback
    name = unicodedata.normalize("NFC", file_name)
    name = re.split(r"[\\/]", name)[-1]
    name = _EXTENSION.sub("", name)
    name = _SPACES.sub(" ", name)
    name = "".join(ch for ch in name if unicodedata.category(ch)[0] != "C")
    name = _UNSAFE.sub(" ", name)
    name = _SPACES.sub(" ", name).strip(" .")
    name = name[:MAX_SONG_NAME_CHARS]
    while len(name.encode()) > MAX_SONG_NAME_BYTES:
        name = name[:-1]
    name = name.rstrip(" .")
    return name or fallback


def track_file_name(song_name: str, track: str, ext: str = "mp3") -> str:
    """The delivered file name of one track: ``"<song_name> - <track>.<ext>"``."""
    return f"{song_name} - {track}.{ext}"


def track_title(song_name: str, track: str) -> str:
    """The title tag of a track, also shown by Telegram's player: ``"<song> (<track>)"``."""
    return f"{song_name} ({track})"
