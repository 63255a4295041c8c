"""Inline-button callback data: a short prefix grammar that fits Telegram's 64 bytes.

    t:<request_id>:<source>   toggle one source in the picker
    a:<request_id>            pick all six sources
    s:<request_id>            separate the picked sources
    v:<request_id>:up|down    rate the delivered tracks

Anything else (stale, forged, garbage) parses to ``None``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SOURCES = ("drums", "bass", "vocals", "guitar", "piano", "other")
MAX_BYTES = 64

Action = Literal["toggle", "all", "separate", "vote"]
_PREFIX: dict[Action, str] = {"toggle": "t", "all": "a", "separate": "s", "vote": "v"}
_ACTION = {prefix: action for action, prefix in _PREFIX.items()}
VOTES = ("up", "down")
_REQUEST_ID = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True)
class CallbackData:
    """One parsed button press."""

    action: Action
    request_id: int
    arg: str | None = None

    def encode(self) -> str:
        parts = [_PREFIX[self.action], str(self.request_id)]
        if self.arg is not None:
            parts.append(self.arg)
        data = ":".join(parts)
        if len(data.encode()) > MAX_BYTES:
            raise ValueError(f"callback data over {MAX_BYTES} bytes: {data!r}")
        return data


def toggle(request_id: int, source: str) -> str:
    return CallbackData("toggle", request_id, source).encode()


def pick_all(request_id: int) -> str:
    return CallbackData("all", request_id).encode()


def separate(request_id: int) -> str:
    return CallbackData("separate", request_id).encode()


def vote(request_id: int, value: str) -> str:
    return CallbackData("vote", request_id, value).encode()


def parse(data: str | None) -> CallbackData | None:
    """Parse callback data; ``None`` for anything not of the grammar above."""
    if not data or len(data.encode()) > MAX_BYTES:
        return None
    parts = data.split(":")
    action = _ACTION.get(parts[0])
    if action is None or len(parts) < 2 or not _REQUEST_ID.fullmatch(parts[1]):
        return None
    request_id = int(parts[1])
    if action in ("all", "separate"):
        return CallbackData(action, request_id) if len(parts) == 2 else None
    if len(parts) != 3:
        return None
    if action == "toggle" and parts[2] in SOURCES:
        return CallbackData(action, request_id, parts[2])
    if action == "vote" and parts[2] in VOTES:
        return CallbackData(action, request_id, parts[2])
    return None
