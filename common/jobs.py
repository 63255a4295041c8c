"""The queue contract between bot and worker: job name, job id, payload, outcome, failure.

Payloads carry ids and small values only, never audio. This module imports neither torch
nor Telegram, so both sides (and tests) can use it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from common.i18n import DEFAULT_LANGUAGE, Language, language
from separation.formats import DEFAULT_OUTPUT_FORMAT, OutputFormat, output_format

# arq function name of the separation task.
SEPARATE_JOB = "separate"


def separation_job_id(
    request_id: int, stems: Iterable[str], output_format: OutputFormat = DEFAULT_OUTPUT_FORMAT
) -> str:
    """Deterministic arq job id for one request, stem set and output format: a double press
    runs one job, and the same stems in another format are another job.

    The default format (mp3) adds nothing, so mp3 ids are those from before formats existed
    (``sep:7:drums+vocals``); another format is a suffix (``sep:7:drums+vocals:flac``).
    """
    job_id = f"sep:{request_id}:{'+'.join(sorted(set(stems)))}"
    return job_id if output_format == DEFAULT_OUTPUT_FORMAT else f"{job_id}:{output_format}"


def delivered_key(job_id: str) -> str:
    """The Redis key the worker sets once every track of ``job_id`` is in the chat, before
    it sends the rating message: from then on the job no longer counts against its user's
    limit of jobs in progress, although arq stores its result, and the bot's watcher records
    it, a moment later. The bot deletes it before enqueueing the same job id again."""
    return f"demix:delivered:{job_id}"


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
    # What the user chose in /settings; payloads from before formats existed lack it.
    output_format: OutputFormat = DEFAULT_OUTPUT_FORMAT
    # The language the worker speaks in the status message (the user's, resolved by the
    # bot); payloads from before languages existed lack it: English.
    language: Language = DEFAULT_LANGUAGE
    # How the ensemble combines for this job (``Ensemble.to_dict()``): the experiment's
    # variant the bot assigned; None (and payloads from before experiments): the worker's
    # configured ensemble.
    ensemble: Mapping[str, Any] | None = None

    @property
    def private_chat(self) -> bool:
        """Whether the chat is the user's private chat with the bot: Telegram gives a private
        chat the user's own id (groups have negative ids), so no payload field is needed and
        payloads of every age answer it."""
        return self.chat_id == self.user_id

    @property
    def job_id(self) -> str:
        """This job's deterministic arq job id."""
        return separation_job_id(self.request_id, self.stems, self.output_format)

    def to_kwargs(self) -> dict[str, Any]:
        data = asdict(self)
        data["stems"] = list(self.stems)
        return data

    @classmethod
    def from_kwargs(cls, data: Mapping[str, Any]) -> SeparationJob:
        values = dict(data)
        values["stems"] = tuple(values["stems"])
        values["output_format"] = output_format(values.get("output_format"))
        values["language"] = language(values.get("language"))
        return cls(**values)


@dataclass(frozen=True)
class JobOutcome:
    """The worker's return value for a successful job (arq stores it as the job result)."""

    tracks: tuple[str, ...]
    audio_seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    # The mixer's record of the delivered tracks (common.mixes.MixRecord.to_dict()) when the
    # job offered the Mix button; the bot stores it. Results of older workers lack it.
    mix: Mapping[str, Any] | None = None

    def to_result(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "tracks": list(self.tracks),
            "audio_seconds": self.audio_seconds,
            "timings": dict(self.timings),
        }
        if self.mix is not None:
            result["mix"] = dict(self.mix)
        return result

    @classmethod
    def from_result(cls, data: Mapping[str, Any]) -> JobOutcome:
        mix = data.get("mix")
        return cls(
            tuple(data["tracks"]),
            float(data["audio_seconds"]),
            dict(data["timings"]),
            mix if isinstance(mix, Mapping) else None,
        )


class FailureReason(StrEnum):
    """Why a job failed, as the worker reports it and the bot records it."""

    UNKNOWN_STEMS = "unknown_stems"
    INVALID_AUDIO = "invalid_audio"
    TOO_LONG = "too_long"
    FILE_TOO_BIG = "file_too_big"
    TELEGRAM_FILE_TOO_BIG = "telegram_file_too_big"
    FILE_UNAVAILABLE = "file_unavailable"
    FORBIDDEN = "forbidden"
    UPLOAD_REFUSED = "upload_refused"
    UPLOAD_TOO_LARGE = "upload_too_large"
    UNAVAILABLE = "unavailable"
    TIMEOUT = "timeout"
    STORAGE = "storage"  # the worker's disk is full or unwritable

    @property
    def retryable(self) -> bool:
        """True when the failure says nothing about the song: Separate again may succeed.

        Every other reason (undecodable, too long, too big, ...) would fail the same way.
        """
        return self in (FailureReason.UNAVAILABLE, FailureReason.TIMEOUT, FailureReason.STORAGE)


class JobFailed(Exception):
    """A job failed for a reason the user should read (bad input, limits); not retried.

    Raised by the worker; arq pickles it as the job result, and the bot reads ``reason`` and
    ``user_message`` from it.
    """

    def __init__(self, reason: FailureReason, user_message: str) -> None:
        super().__init__(reason, user_message)
        self.reason = reason
        self.user_message = user_message
