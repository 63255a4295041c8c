"""The queue contract between bot and worker: job name, job id, payload, outcome.

Payloads carry ids and small values only, never audio. This module imports neither torch
nor Telegram, so both sides (and tests) can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

# arq function name of the separation task.
SEPARATE_JOB = "separate"


def separation_job_id(request_id: int, stems: Iterable[str]) -> str:
    """Deterministic arq job id for one request and stem set: a double press runs one job."""
    return f"sep:{request_id}:{'+'.join(sorted(set(stems)))}"


@dataclass(frozen=True)
class SeparationJob:
    """What the worker needs to serve one request; passed to arq as keyword arguments."""

    request_id: int
    chat_id: int
    user_id: int
    file_id: str
    song_name: str
    stems: tuple[str, ...]
    status_message_id: int
    reply_to_message_id: int | None = None
    file_size: int | None = None
    artist: str | None = None

    def to_kwargs(self) -> dict[str, Any]:
        data = asdict(self)
        data["stems"] = list(self.stems)
        return data

    @classmethod
    def from_kwargs(cls, data: Mapping[str, Any]) -> SeparationJob:
        values = dict(data)
        values["stems"] = tuple(values["stems"])
        return cls(**values)


@dataclass(frozen=True)
class JobOutcome:
    """The worker's return value for a successful job (arq stores it as the job result)."""

    tracks: tuple[str, ...]
    audio_seconds: float
    timings: dict[str, float] = field(default_factory=dict)

    def to_result(self) -> dict[str, Any]:
        return {
            "tracks": list(self.tracks),
            "audio_seconds": self.audio_seconds,
            "timings": dict(self.timings),
        }

    @classmethod
    def from_result(cls, data: Mapping[str, Any]) -> JobOutcome:
        return cls(tuple(data["tracks"]), float(data["audio_seconds"]), dict(data["timings"]))


# JobFailed reasons that say nothing about the song: pressing Separate again may succeed.
# Every other reason (undecodable, too long, too big, ...) would fail the same way again.
RETRYABLE_REASONS = frozenset({"unavailable", "timeout"})


class JobFailed(Exception):
    """A job failed for a reason the user should read (bad input, limits); not retried.

    Raised by the worker; arq pickles it as the job result, and the bot reads
    ``user_message`` from it.
    """

    def __init__(self, user_message: str, reason: str = "failed") -> None:
        super().__init__(user_message, reason)
        self.user_message = user_message
        self.reason = reason
