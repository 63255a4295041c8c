"""Names of songs and tracks: one definition for the worker, the bot and ``demix separate``.

A sent file's name, and the title and artist tags a file or a Telegram client carries, are
user input: they may carry directories, control characters, bidi overrides, zero-width
characters, characters file systems refuse, markup, or thousands of characters. They become
file names on disk, audio tags, chat texts and database rows, so they are made safe once,
here: :func:`clean_text` for any text shown or stored, :func:`safe_song_name` for the part
of a file name that comes from the user.
"""

from __future__ import annotations

import re
import unicodedata

MAX_SONG_NAME_CHARS = 100
# File systems cap a name at 255 bytes; the track suffix (" - no_vocals.flac") needs room.
MAX_SONG_NAME_BYTES = 200
# Telegram documents no limit on an audio's title or performer; an ID3 tag may hold
# megabytes. The song name's rule keeps them short enough for any message or file name.
MAX_TAG_CHARS = MAX_SONG_NAME_CHARS
# Marks a cut, so a user can tell a shortened name from their own.
ELLIPSIS = "…"

_UNSAFE = re.compile(r'[\\/:*?"<>|]+')
_SPACES = re.compile(r"\s+")
# Extensions dropped from a sent file's name ("My Song.mp3" -> "My Song").
_EXTENSION = re.compile(r"(?<=.)\.[A-Za-z0-9]{1,5}$")
# Our own parts of a track's file name: a track name and an extension, never user text.
_OUR_PART = re.compile(r"[A-Za-z0-9_]+")
_ZWJ = "\u200d"
# Controls (NUL, CR, LF, ESC...), format characters (bidi overrides and isolates, zero-width
# spaces and joiners, BOM, tag characters), lone surrogates (which cannot be encoded) and
# unassigned code points: invisible, or able to reorder or hide what is shown around them.
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Cn"})
# Around a zero-width joiner these make one emoji ("👨‍👩‍👧", "🏳️‍🌈"), so it stays there.
_EMOJI_PARTS = frozenset({"So", "Sk", "Mn"})


def _visible(text: str) -> str:
    """``text`` in NFC on one line: whitespace runs become one space, invisibles go."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", text))
    kept = []
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if category not in _INVISIBLE:
            kept.append(ch)
        elif ch == _ZWJ and 0 < i < len(text) - 1:
            before, after = unicodedata.category(text[i - 1]), unicodedata.category(text[i + 1])
            if before in _EMOJI_PARTS and after == "So":
                kept.append(ch)
    # Removing an invisible between two spaces leaves a double space.
    return _SPACES.sub(" ", "".join(kept)).strip()


def _bounded(text: str, max_chars: int, max_bytes: int | None = None) -> str:
    """``text`` cut to ``max_chars`` (and ``max_bytes`` of UTF-8), ending in an ellipsis
    when cut; whole characters only."""

    def fits(candidate: str) -> bool:
        return len(candidate) <= max_chars and (
            max_bytes is None or len(candidate.encode()) <= max_bytes
        )

    if fits(text):
        return text
    cut = text[: max_chars - len(ELLIPSIS)]
    while cut and not fits(cut + ELLIPSIS):
        cut = cut[:-1]
    # A joiner or a space left dangling before the ellipsis would show as a gap.
    return cut.rstrip(" " + _ZWJ) + ELLIPSIS


def clean_text(text: str | None, max_chars: int = MAX_TAG_CHARS) -> str:
    """User text (a title, an artist, a name) made safe to show, tag and store.

    One line, in NFC, without control or format characters (bidi overrides, zero-width
    characters) except the joiners inside an emoji; at most ``max_chars`` characters, cut
    with an ellipsis. Letters of any script and emoji are kept; markup is left as text:
    escaping it is the job of whatever puts the text into markup.

    Returns:
        The cleaned text; empty when nothing visible is left.
    """
    return _bounded(_visible(text), max_chars) if text else ""


def safe_tag(text: str | None) -> str | None:
    """A title or artist tag (from a file or from Telegram) made safe, or ``None`` if none."""
    return clean_text(text, MAX_TAG_CHARS) or None


def _file_safe(name: str, *, file_name: bool) -> str:
    """``name`` as the user part of a file name; a sent ``file_name`` also loses its
    directories and extension, other text (a tag, a stored name) keeps every word."""
    name = _visible(name)
    if file_name:
        name = _EXTENSION.sub("", re.split(r"[\\/]", name)[-1])
    name = _SPACES.sub(" ", _UNSAFE.sub(" ", name)).strip(" .")
    # Stripped again after the cut: a name ending in dots or spaces is no better there.
    return _bounded(name, MAX_SONG_NAME_CHARS, MAX_SONG_NAME_BYTES).strip(" .")


def safe_song_name(file_name: str | None, fallback: str = "song") -> str:
    """Turn a user-supplied file name into a safe base name for output files.

    Only the last path component counts (either separator); the extension is dropped;
    whitespace runs become one space; control and format characters (bidi overrides and
    zero-width characters included) and characters that common file systems refuse are
    removed; leading and trailing dots and spaces go (no hidden files, no ``..``); the
    length is capped in characters and in UTF-8 bytes, a cut shown by an ellipsis.

    Args:
        file_name: what the user's client called the file; may be None or hostile.
        fallback: the name used when nothing safe is left.

    Returns:
        A non-empty name without directory parts or extension.
    """
    return (_file_safe(file_name, file_name=True) if file_name else "") or fallback


def song_name_from_tags(title: str | None, artist: str | None, fallback: str = "song") -> str:
    """A song's name from its title and artist tags, when no file name came with it.

    Tags are not paths: ``AC/DC`` keeps both its parts, ``Vol.2`` its number.
    """
    name = f"{artist} - {title}" if artist and title else title
    return (_file_safe(name, file_name=False) if name else "") or fallback


def track_file_name(song_name: str, track: str, ext: str = "mp3") -> str:
    """The delivered file name of one track: ``"<song_name> - <track>.<ext>"``.

    ``song_name`` should come from :func:`safe_song_name`; it is made safe again (that is a
    no-op for such a name) so that no payload can name a file outside its folder.
    """
    if not (_OUR_PART.fullmatch(track) and _OUR_PART.fullmatch(ext)):
        raise ValueError(f"not a track name and extension: {track!r}, {ext!r}")
    # Separators become spaces and outer dots go: no ".." or "/" survives to make a path.
    name = _file_safe(song_name, file_name=False) or "song"
    return f"{name} - {track}.{ext}"


def track_title(song_name: str, track: str) -> str:
    """The title tag of a track, also shown by Telegram's player: ``"<song> (<track>)"``."""
    return f"{clean_text(song_name, MAX_SONG_NAME_CHARS) or 'song'} ({track})"
