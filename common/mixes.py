"""The mixer's record of one delivered set of tracks: what the worker writes, the bot stores
and ``demix web`` reads.

A mix id names one delivered set of tracks (one enqueued job): base64url of an HMAC-SHA256,
keyed with a secret derived from the bot token, over the job's delivery ledger key (its job
id and enqueue time). So it is opaque and not guessable or enumerable from anything a user
sees, needs no state to stay the same across the job's re-runs, and a re-enqueued job (a new
delivery) gets a new one. 22 characters, 128 bits.

The record travels twice: the worker writes it to Redis (:func:`redis_key`) before it sends
the rating message, since the user may open the mixer at once; and in the job's result, from
which the bot's watcher stores it in SQLite for good. ``demix web`` reads SQLite first and
falls back to Redis, so a Redis flush loses no mix that SQLite has.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from common.i18n import Language, language
from separation.formats import OutputFormat, output_format

# Redis keeps a record this long (SQLite keeps it for good once the bot has recorded the job).
REDIS_TTL_S = 7 * 24 * 3600
MIX_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
# Track names are the planner's (``vocals``, ``no_vocals``, ``rest``, ...).
TRACK_NAME_PATTERN = re.compile(r"^[a-z][a-z_]{0,31}$")


def _derived_key(bot_token: str, purpose: str) -> bytes:
    """A key of its own for ``purpose``, derived from the bot token (never the token)."""
    return hmac.new(bot_token.encode(), f"demix:{purpose}".encode(), hashlib.sha256).digest()


def mix_id(bot_token: str, ledger_key: str) -> str:
    """The mix id of the delivery whose ledger is ``ledger_key``."""
    digest = hmac.new(_derived_key(bot_token, "mix-id"), ledger_key.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:16]).rstrip(b"=").decode()


def is_mix_id(value: str) -> bool:
    return MIX_ID_PATTERN.fullmatch(value) is not None


def redis_key(mix: str) -> str:
    return f"demix:mix:{mix}"


def mix_url(webapp_url: str, mix: str) -> str:
    """The Mix button's URL: the page of ``mix`` under the web app's public base."""
    return f"{webapp_url.rstrip('/')}/mix/{mix}"


@dataclass(frozen=True)
class MixTrack:
    """One delivered track: its name and the Bot API file that holds it."""

    name: str
    file_id: str
    file_size: int | None = None


@dataclass(frozen=True)
class MixRecord:
    """One delivered set of tracks, in delivery order, and whom it belongs to."""

    mix_id: str
    job_id: str
    request_id: int
    user_id: int
    chat_id: int
    song_name: str
    output_format: OutputFormat
    language: Language
    tracks: tuple[MixTrack, ...]
    duration_s: float | None
    created_at: float
    artist: str | None = None

    def track(self, name: str) -> MixTrack | None:
        return next((track for track in self.tracks if track.name == name), None)

    @property
    def track_names(self) -> tuple[str, ...]:
        return tuple(track.name for track in self.tracks)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["tracks"] = [asdict(track) for track in self.tracks]
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MixRecord:
        tracks = tuple(
            MixTrack(
                str(track["name"]),
                str(track["file_id"]),
                None if track.get("file_size") is None else int(track["file_size"]),
            )
            for track in data["tracks"]
        )
        duration = data.get("duration_s")
        return cls(
            mix_id=str(data["mix_id"]),
            job_id=str(data["job_id"]),
            request_id=int(data["request_id"]),
            user_id=int(data["user_id"]),
            chat_id=int(data["chat_id"]),
            song_name=str(data["song_name"]),
            output_format=output_format(data.get("output_format")),
            language=language(data.get("language")),
            tracks=tracks,
            duration_s=None if duration is None else float(duration),
            created_at=float(data["created_at"]),
            artist=None if data.get("artist") is None else str(data["artist"]),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> MixRecord:
        return cls.from_dict(json.loads(text))
