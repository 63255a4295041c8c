"""Inline-button callback data: a short prefix grammar that fits Telegram's 64 bytes.

    t:<request_id>:<source>   toggle one source in the picker
    a:<request_id>            pick all six sources
    s:<request_id>            separate the picked sources
    v:<request_id>:up|down    rate the delivered tracks

:data:`PATTERNS` holds one regular expression per action: the bot routes presses with them
(``CallbackQueryHandler(pattern=...)``) and :func:`parse` reads data with the same ones, so
anything else (stale, forged, garbage) matches no action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from separation.tracks import SOURCES

MAX_BYTES = 64
VOTES = ("up", "down")


class Action(StrEnum):
    """A button's action; the value is its prefix in the callback data."""

    TOGGLE = "t"
    ALL = "a"
    SEPARATE = "s"
    VOTE = "v"


_REQUEST_ID = r"(?P<request_id>[0-9]{1,18})"
PATTERNS: dict[Action, re.Pattern[str]] = {
    Action.TOGGLE: re.compile(rf"^t:{_REQUEST_ID}:(?P<arg>{'|'.join(SOURCES)})\Z"),
    Action.ALL: re.compile(rf"^a:{_REQUEST_ID}\Z"),
    Action.SEPARATE: re.compile(rf"^s:{_REQUEST_ID}\Z"),
    Action.VOTE: re.compile(rf"^v:{_REQUEST_ID}:(?P<arg>{'|'.join(VOTES)})\Z"),
}


@dataclass(frozen=True)
class CallbackData:
    """One parsed button press."""

    action: Action
    request_id: int
    arg: str | None = None

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


def parse(data: str | None) -> CallbackData | None:
    """Parse callback data; ``None`` for anything not of the grammar above."""
    if not data or len(data.encode()) > MAX_BYTES:
        return None
    for action, pattern in PATTERNS.items():
        match = pattern.match(data)
        if match is not None:
            return CallbackData(action, int(match["request_id"]), match.groupdict().get("arg"))
    return None
