"""Inline-button callback data: a short prefix grammar that fits Telegram's 64 bytes.

    t:<request_id>:<source>   toggle one source in the picker
    a:<request_id>            pick all six sources
    s:<request_id>            separate the picked sources
    v:<request_id>:<pick>:up|down   rate one delivered set of tracks (one job)
    v:<request_id>:up|down    a rating button from before ratings were per job: rates the
                              request's latest job (a done one first)
    o:<user_id>:<name>.<value>   choose one of a user's /settings, e.g. ``o:42:format.flac``,
                                 ``o:42:language.ru``

A rating's ``<pick>`` names its job compactly, since arq job ids
(``sep:7:drums+vocals:flac``) would not fit: the picked sources as a bitmask over
:data:`SOURCES` in decimal (drums 1, bass 2, vocals 4, guitar 8, piano 16, other 32), then
the output format's letter unless it is the default mp3 (``f``: flac). ``v:7:5f:up`` is
👍 on drums + vocals in FLAC; :attr:`CallbackData.rated_job_id` rebuilds the job id with
:func:`common.jobs.separation_job_id`.

The number is a request's id, except in ``o:``, where it is the id of the user whose
settings the message shows (only that user may press its buttons); :data:`SETTINGS` lists
each setting's values (the output format, the language), so a new setting is one more
entry there.
:data:`PATTERNS` holds one regular expression per action: the bot routes presses with them
(``CallbackQueryHandler(pattern=...)``) and :func:`parse` reads data with the same ones, so
anything else (stale, forged, garbage) matches no action.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from common.i18n import LANGUAGES
from common.jobs import separation_job_id
from separation.formats import DEFAULT_OUTPUT_FORMAT, OUTPUT_FORMATS, OutputFormat
from separation.tracks import SOURCES

MAX_BYTES = 64
VOTES = ("up", "down")
# /settings: each setting's name and the values it takes.
FORMAT_SETTING = "format"
LANGUAGE_SETTING = "language"
SETTINGS: dict[str, tuple[str, ...]] = {
    FORMAT_SETTING: OUTPUT_FORMATS,
    LANGUAGE_SETTING: LANGUAGES,
}


# A rated pick's format: one letter per format but the default (which has none).
FORMAT_LETTERS: dict[str, OutputFormat] = {
    fmt[0]: fmt for fmt in OUTPUT_FORMATS if fmt != DEFAULT_OUTPUT_FORMAT
}
assert len(FORMAT_LETTERS) == len(OUTPUT_FORMATS) - 1, "formats need distinct first letters"
_ALL_PICKED = (1 << len(SOURCES)) - 1


def encode_pick(stems: Iterable[str], output_format: OutputFormat = DEFAULT_OUTPUT_FORMAT) -> str:
    """A pick in a rating button: the sources' bitmask, then the format's letter (not mp3's).

    Raises:
        ValueError: an unknown source, or nothing picked.
    """
    mask = 0
    for stem in stems:
        if stem not in SOURCES:
            raise ValueError(f"not a source: {stem!r}")
        mask |= 1 << SOURCES.index(stem)
    if not mask:
        raise ValueError("a pick has at least one source")
    letter = "" if output_format == DEFAULT_OUTPUT_FORMAT else output_format[0]
    return f"{mask}{letter}"


def decode_pick(pick: str) -> tuple[tuple[str, ...], OutputFormat]:
    """The sources (in :data:`SOURCES` order) and format of an :func:`encode_pick` string.

    Raises:
        ValueError: not of that form.
    """
    digits = pick.rstrip("".join(FORMAT_LETTERS))
    letter = pick[len(digits) :]
    if not digits.isdigit() or not 0 < int(digits) <= _ALL_PICKED or len(letter) > 1:
        raise ValueError(f"not a pick: {pick!r}")
    mask = int(digits)
    stems = tuple(source for bit, source in enumerate(SOURCES) if mask & (1 << bit))
    return stems, FORMAT_LETTERS[letter] if letter else DEFAULT_OUTPUT_FORMAT


class Action(StrEnum):
    """A button's action; the value is its prefix in the callback data."""

    TOGGLE = "t"
    ALL = "a"
    SEPARATE = "s"
    VOTE = "v"
    SETTING = "o"


_REQUEST_ID = r"(?P<request_id>[0-9]{1,18})"
# A bitmask without leading zeros (its range is checked by :func:`parse`), then an
# optional format letter.
_PICK = rf"(?P<pick>[1-9][0-9]?[{''.join(FORMAT_LETTERS)}]?)"
PATTERNS: dict[Action, re.Pattern[str]] = {
    Action.TOGGLE: re.compile(rf"^t:{_REQUEST_ID}:(?P<arg>{'|'.join(SOURCES)})\Z"),
    Action.ALL: re.compile(rf"^a:{_REQUEST_ID}\Z"),
    Action.SEPARATE: re.compile(rf"^s:{_REQUEST_ID}\Z"),
    Action.VOTE: re.compile(rf"^v:{_REQUEST_ID}(?::{_PICK})?:(?P<arg>{'|'.join(VOTES)})\Z"),
    Action.SETTING: re.compile(
        rf"^o:{_REQUEST_ID}:(?P<arg>"
        + "|".join(
            rf"{re.escape(name)}\.(?:{'|'.join(map(re.escape, values))})"
            for name, values in SETTINGS.items()
        )
        + r")\Z"
    ),
}


@dataclass(frozen=True)
class CallbackData:
    """One parsed button press; ``request_id`` is the user's id for :attr:`Action.SETTING`;
    ``pick`` is a rating's job (:func:`encode_pick`), None on a rating button from before
    ratings were per job."""

    action: Action
    request_id: int
    arg: str | None = None
    pick: str | None = None

    @property
    def rated_job_id(self) -> str | None:
        """A rating press's job id; None for an old button (it rates the latest job)."""
        if self.action is not Action.VOTE or self.pick is None:
            return None
        stems, fmt = decode_pick(self.pick)
        return separation_job_id(self.request_id, stems, fmt)

    @property
    def setting(self) -> tuple[str, str]:
        """A settings press's ``(name, value)``, e.g. ``("format", "flac")``."""
        if self.action is not Action.SETTING or self.arg is None:
            raise ValueError(f"not a settings press: {self}")
        name, _, value = self.arg.partition(".")
        return name, value

    def encode(self) -> str:
        """The callback data string; raises ValueError past Telegram's 64 bytes."""
        parts = [self.action.value, str(self.request_id)]
        if self.pick is not None:
            parts.append(self.pick)
        if self.arg is not None:
            parts.append(self.arg)
        data = ":".join(parts)
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
        return data


def toggle(request_id: int, source: str) -> str:
    return CallbackData(Action.TOGGLE, request_id, source).encode()


def pick_all(request_id: int) -> str:
    return CallbackData(Action.ALL, request_id).encode()


def separate(request_id: int) -> str:
    return CallbackData(Action.SEPARATE, request_id).encode()


def vote(
    request_id: int,
    value: str,
    stems: Iterable[str] | None = None,
    output_format: OutputFormat = DEFAULT_OUTPUT_FORMAT,
) -> str:
    """A rating button: ``value`` (up, down) on the job of ``stems`` in ``output_format``.

    Without ``stems`` it is the button from before ratings were per job (still parsed, for
    the messages already in chats): new buttons always name their pick.
    """
    pick = None if stems is None else encode_pick(stems, output_format)
    return CallbackData(Action.VOTE, request_id, value, pick).encode()


def setting(user_id: int, name: str, value: str) -> str:
    """A /settings button: set ``name`` to ``value`` for ``user_id``."""
    if value not in SETTINGS.get(name, ()):
        raise ValueError(f"not a setting and value: {name!r}, {value!r}")
    return CallbackData(Action.SETTING, user_id, f"{name}.{value}").encode()


def parse(data: str | None) -> CallbackData | None:
    """Parse callback data; ``None`` for anything not of the grammar above."""
    if not data or len(data.encode()) > MAX_BYTES:
        return None
    for action, pattern in PATTERNS.items():
        match = pattern.match(data)
        if match is not None:
            groups = match.groupdict()
            pick = groups.get("pick")
            if pick is not None:
                try:
                    decode_pick(pick)
                except ValueError:
                    return None
            return CallbackData(action, int(match["request_id"]), groups.get("arg"), pick)
    return None
