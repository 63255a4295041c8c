"""Inline-button callback data: a short prefix grammar that fits Telegram's 64 bytes.

    t:<request_id>:<source>   toggle one source in the picker
    a:<request_id>            pick all six sources
    s:<request_id>            separate the picked sources
    v:<request_id>:up|down    rate the delivered tracks
    o:<user_id>:<name>.<value>   choose one of a user's /settings, e.g. ``o:42:format.flac``,
                                 ``o:42:language.ru``

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
from dataclasses import dataclass
from enum import StrEnum

from common.i18n import LANGUAGES
from separation.formats import OUTPUT_FORMATS
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


class Action(StrEnum):
    """A button's action; the value is its prefix in the callback data."""

    TOGGLE = "t"
    ALL = "a"
    SEPARATE = "s"
    VOTE = "v"
    SETTING = "o"


_REQUEST_ID = r"(?P<request_id>[0-9]{1,18})"
PATTERNS: dict[Action, re.Pattern[str]] = {
    Action.TOGGLE: re.compile(rf"^t:{_REQUEST_ID}:(?P<arg>{'|'.join(SOURCES)})\Z"),
    Action.ALL: re.compile(rf"^a:{_REQUEST_ID}\Z"),
    Action.SEPARATE: re.compile(rf"^s:{_REQUEST_ID}\Z"),
    Action.VOTE: re.compile(rf"^v:{_REQUEST_ID}:(?P<arg>{'|'.join(VOTES)})\Z"),
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
    """One parsed button press; ``request_id`` is the user's id for :attr:`Action.SETTING`."""

    action: Action
    request_id: int
    arg: str | None = None

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


def vote(request_id: int, value: str) -> str:
    return CallbackData(Action.VOTE, request_id, value).encode()


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
            return CallbackData(action, int(match["request_id"]), match.groupdict().get("arg"))
    return None
