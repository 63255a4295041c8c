"""Sending a job's results to the chat exactly once, even when arq runs the job again.

arq runs a job at least once: a worker killed mid-job (or a ``Retry`` after a transient
error) means the job starts over on some worker. Every send therefore goes through a
:class:`DeliveryLedger`, a Redis hash per job that records what the chat already has (each
album, each single track, the rating message, the final status). A send happens only when
its entry is missing, and its entry is written right after Telegram accepts it.

Telegram has no idempotency key for ``sendMediaGroup`` / ``sendAudio``, so what a worker
that dies mid-send (SIGKILL, OOM, a reclaimed machine) leaves behind decides what its re-run
does. The moment that matters is the end of the request's body: before it, Telegram has
nothing it can act on, and the re-run sends the item again; after it, Telegram acts on the
request whether or not anyone reads the answer. So the item is recorded as
:data:`UNCONFIRMED` as soon as the HTTP client has written the whole request
(:class:`LedgerTraceTransport`, through httpcore's ``trace`` extension), and again with the
message ids once Telegram answers. A re-run does not send an :data:`UNCONFIRMED` item again.
What is left: a death between the body's last byte and that ledger write (one Redis round
trip) repeats the item, and an item Telegram refused after receiving it whole is missing
(the done message then says a track may be missing).

A job cancelled during a send (worker shutdown, the deadline) lets that send finish and be
recorded (at most :data:`FINISH_SEND_S`) before it stops: a worker running several jobs
at once is often mid-upload for one of them when it is told to stop.

A send whose answer never comes (a read timeout: the request went out whole) is recorded
as :data:`UNCONFIRMED` and not repeated. Telegram has usually acted on it; the final status
then says that a track may be missing, rather than risk a second album.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
from redis.asyncio import Redis
from telegram import Bot, InputMediaAudio, Message, ReplyParameters
from telegram.error import TelegramError, TimedOut

from common.jobs import SeparationJob, delivered_key
from common.rating import rating_keyboard, rating_prompt
from separation.naming import safe_tag, track_title
from worker.policy import is_unanswered

logger = logging.getLogger(__name__)

# Longer than any job's life including all retries; the key only guards re-runs.
LEDGER_TTL_S = 7 * 24 * 3600
# Telegram's album size limits.
ALBUM_MIN, ALBUM_MAX = 2, 10

STARTED_AT = "started_at"
AUDIO_SECONDS = "audio_seconds"
RATING = "rating"
DONE = "done"
# The ledger field of a delivered track's Bot API file (JSON {"file_id", "file_size"}): the
# mixer (web/) fetches the track through it. Written with the send's own entry, at once.
FILE_PREFIX = "file:"
# The ledger value of a send that went out but was never answered.
UNCONFIRMED = "unconfirmed"
# How long a send under way may go on once its job is cancelled, to get its answer and its
# ledger entry (the compose file gives a worker 60 s to stop). Should arq's own timeout
# cancel the job again meanwhile, the send still finishes in the background.
FINISH_SEND_S = 20.0

# How long the "sent whole" ledger write may hold up reading Telegram's answer; without
# Redis the item is recorded only when the answer comes.
SENT_WHOLE_WRITE_S = 2.0

T = TypeVar("T")

# The ledger entry whose send is under way in this task (read by the HTTP trace below).
_SENDING: contextvars.ContextVar[tuple[DeliveryLedger, str] | None] = contextvars.ContextVar(
    "demix_sending", default=None
)


async def _on_http_event(name: str, info: dict[str, Any]) -> None:
    """httpcore's trace callback: once a send's whole request is written, record its item as
    unconfirmed (see the module docstring)."""
    if not name.endswith("send_request_body.complete"):
        return
    sending = _SENDING.get()
    if sending is None:
        return
    ledger, entry = sending
    try:
        await asyncio.wait_for(ledger.record_once(entry, UNCONFIRMED), SENT_WHOLE_WRITE_S)
    except Exception as exc:  # a failure here must not fail the send itself
        logger.warning("could not note %s as sent whole: %r", entry, exc)


def answered_with_error(exc: BaseException) -> bool:
    """Telegram answered the request with an error (a 429, 400, 403, 5xx): it did not act
    on it. Not so for a failure of the connection itself, which may come after the request
    left whole."""
    return (
        isinstance(exc, TelegramError)
        and not isinstance(exc, TimedOut)
        and not isinstance(exc.__cause__, httpx.HTTPError)
    )


class LedgerTraceTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with httpcore's ``trace`` hook on every request, so the delivery
    ledger learns when an upload's request has left whole."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.extensions = {**request.extensions, "trace": _on_http_event}
        return await super().handle_async_request(request)


async def finish_on_cancel(work: Awaitable[T], grace_s: float = FINISH_SEND_S) -> T:
    """Await ``work``; if the caller is cancelled meanwhile, let ``work`` go on for up to
    ``grace_s`` (a send and its ledger entry complete together), then re-raise."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        done, _ = await asyncio.wait([task], timeout=grace_s)
        if done:
            if not task.cancelled():
                task.exception()  # retrieved: the caller is cancelled either way
        else:
            task.cancel()
        raise


def ledger_key(job_id: str, enqueue_time: datetime) -> str:
    """The ledger of one enqueued job.

    The enqueue time is part of the key because job ids are deterministic per request and
    stem set: once arq forgets a finished job, the same request may be enqueued again
    under the same id, and that new job must deliver again. A re-run of the same enqueued
    job (``Retry``, a killed worker) keeps its enqueue time, so it finds the same ledger.
    """
    return f"demix:delivery:{job_id}:{round(enqueue_time.timestamp() * 1000)}"


class DeliveryLedger:
    """What one job has already sent to its chat, kept in a Redis hash."""

    def __init__(self, redis: Redis, key: str, ttl_s: int = LEDGER_TTL_S) -> None:
        self.redis = redis
        self.key = key
        self.ttl_s = ttl_s

    async def load(self) -> dict[str, str]:
        """Every entry recorded so far."""
        raw: dict[Any, Any] = await self.redis.hgetall(self.key)  # type: ignore[misc]
        return {_text(field): _text(value) for field, value in raw.items()}

    async def record(self, field: str, value: str) -> None:
        """Record ``field`` (overwriting) and keep the ledger alive."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, field, value)
            pipe.expire(self.key, self.ttl_s)
            await pipe.execute()

    async def record_many(self, fields: Mapping[str, str]) -> None:
        """Record several fields at once (overwriting), and keep the ledger alive."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.key, mapping=dict(fields))
            pipe.expire(self.key, self.ttl_s)
            await pipe.execute()

    async def forget_unconfirmed(self, field: str) -> None:
        """Drop ``field`` if it says only that its send left whole (Telegram then answered
        with an error: it did not act on the send)."""
        if _text(await self.redis.hget(self.key, field) or b"") == UNCONFIRMED:  # type: ignore[misc]
            await self.redis.hdel(self.key, field)  # type: ignore[misc]

    async def record_once(self, field: str, value: str) -> str:
        """Record ``field`` unless present; return the value that is stored."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hsetnx(self.key, field, value)
            pipe.hget(self.key, field)
            pipe.expire(self.key, self.ttl_s)
            _, stored, _ = await pipe.execute()
        return _text(stored)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _chunks(tracks: Sequence[str]) -> list[list[str]]:
    return [list(tracks[i : i + ALBUM_MAX]) for i in range(0, len(tracks), ALBUM_MAX)]


def _entry(chunk: Sequence[str]) -> str:
    return f"album:{chunk[0]}" if len(chunk) >= ALBUM_MIN else f"track:{chunk[0]}"


def delivered_all(tracks: Sequence[str], sent: Mapping[str, str]) -> bool:
    """Whether the ledger ``sent`` shows every track of ``tracks`` delivered."""
    return all(_entry(chunk) in sent for chunk in _chunks(tracks))


def _reply_to(job: SeparationJob) -> ReplyParameters | None:
    if job.reply_to_message_id is None:
        return None
    return ReplyParameters(job.reply_to_message_id, allow_sending_without_reply=True)


async def deliver_tracks(
    bot: Bot,
    ledger: DeliveryLedger,
    job: SeparationJob,
    files: Mapping[str, Path],
    sent: Mapping[str, str],
    log_extra: Mapping[str, Any] | None = None,
    before_send: Callable[[], None] | None = None,
) -> int:
    """Send ``files`` (track name -> mp3) not yet in ``sent``: albums of 2-10 audios
    (``sendMediaGroup``), ``sendAudio`` for a lone track. Return how many messages were sent.

    ``before_send`` is called before each send and may raise to stop (a lost lease).
    """
    extra = dict(log_extra or {})
    messages = 0
    for chunk in _chunks(list(files)):
        entry = _entry(chunk)
        if entry in sent:
            logger.info("already delivered, skipping %s", entry, extra=extra)
            continue
        if before_send is not None:
            before_send()
        messages += await finish_on_cancel(_deliver_chunk(bot, ledger, job, chunk, files, extra))
    return messages


async def _deliver_chunk(
    bot: Bot,
    ledger: DeliveryLedger,
    job: SeparationJob,
    chunk: Sequence[str],
    files: Mapping[str, Path],
    extra: Mapping[str, Any],
) -> int:
    """Send one chunk and record it in the ledger; return how many messages were sent."""
    entry = _entry(chunk)
    sending = _SENDING.set((ledger, entry))
    try:
        messages = await _send_chunk(bot, job, chunk, files)
    except Exception as exc:
        if not is_unanswered(exc):
            if answered_with_error(exc):
                await ledger.forget_unconfirmed(entry)
            raise
        logger.warning("no answer to the upload of %s: not sent again", entry, extra=extra)
        await ledger.record(entry, UNCONFIRMED)
        return 0
    finally:
        _SENDING.reset(sending)
    message_ids = [message.message_id for message in messages]
    # Right after Telegram's answer: the window described in the module docstring.
    await ledger.record_many({entry: json.dumps(message_ids), **_file_entries(chunk, messages)})
    logger.info("delivered %s", entry, extra={**extra, "messages": len(message_ids)})
    return len(message_ids)


def _file_entries(chunk: Sequence[str], messages: Sequence[Message]) -> dict[str, str]:
    """The ledger's ``file:<track>`` entries of a sent chunk (an album's messages come back in
    the order of its tracks)."""
    entries = {}
    for track, message in zip(chunk, messages, strict=False):
        audio = message.audio or message.document
        if audio is not None:
            entries[FILE_PREFIX + track] = json.dumps(
                {"file_id": audio.file_id, "file_size": audio.file_size}
            )
    return entries


def delivered_files(sent: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Track -> ``{"file_id", "file_size"}`` of the tracks the ledger ``sent`` records."""
    files = {}
    for field, value in sent.items():
        if field.startswith(FILE_PREFIX):
            try:
                files[field.removeprefix(FILE_PREFIX)] = dict(json.loads(value))
            except (ValueError, TypeError):
                continue
    return files


async def _send_chunk(
    bot: Bot, job: SeparationJob, chunk: Sequence[str], files: Mapping[str, Path]
) -> list[Message]:
    """Send one album (2-10 tracks) or one lone track; return the new messages."""
    # Open file objects, not paths: with a local Bot API server PTB would otherwise send a
    # file:// URI that only works when the server shares this machine's disk.
    with ExitStack() as stack:
        if len(chunk) >= ALBUM_MIN:
            media = [
                InputMediaAudio(
                    stack.enter_context(files[track].open("rb")),
                    filename=files[track].name,
                    title=track_title(job.song_name, track),
                    performer=safe_tag(job.artist),
                )
                for track in chunk
            ]
            sent_messages = await bot.send_media_group(
                job.chat_id, media, reply_parameters=_reply_to(job)
            )
            return list(sent_messages)
        track = chunk[0]
        message = await bot.send_audio(
            job.chat_id,
            stack.enter_context(files[track].open("rb")),
            filename=files[track].name,
            title=track_title(job.song_name, track),
            performer=safe_tag(job.artist),
            reply_parameters=_reply_to(job),
        )
        return [message]


async def mark_delivered(redis: Redis, job_id: str, ttl_s: int) -> None:
    """Tell the bot that every track of ``job_id`` is in the chat (:func:`delivered_key`):
    the job no longer counts against its user's limit of jobs in progress. Kept ``ttl_s``
    (as long as arq keeps the job's result)."""
    await redis.set(delivered_key(job_id), "1", ex=ttl_s)


def unconfirmed(sent: Mapping[str, str]) -> bool:
    """Whether any upload in the ledger ``sent`` went unanswered."""
    return any(
        value == UNCONFIRMED and field.startswith(("album:", "track:"))
        for field, value in sent.items()
    )


async def send_rating(
    bot: Bot,
    ledger: DeliveryLedger,
    job: SeparationJob,
    sent: Mapping[str, str],
    log_extra: Mapping[str, Any] | None = None,
    mix_url: str | None = None,
) -> bool:
    """Send the 👍 / 👎 message unless the ledger has it (with the ``🎚 Mix`` button when
    ``mix_url`` is given); return whether it was sent now."""
    if RATING in sent:
        return False
    return await finish_on_cancel(_send_rating(bot, ledger, job, dict(log_extra or {}), mix_url))


async def _send_rating(
    bot: Bot,
    ledger: DeliveryLedger,
    job: SeparationJob,
    extra: Mapping[str, Any],
    mix_url: str | None,
) -> bool:
    sending = _SENDING.set((ledger, RATING))
    try:
        message = await bot.send_message(
            job.chat_id,
            rating_prompt(job.language),
            reply_markup=rating_keyboard(
                job.request_id, job.stems, job.output_format, mix_url=mix_url
            ),
        )
    except Exception as exc:
        if not is_unanswered(exc):
            if answered_with_error(exc):
                await ledger.forget_unconfirmed(RATING)
            raise
        logger.warning("no answer to the rating message: not sent again", extra=extra)
        await ledger.record(RATING, UNCONFIRMED)
        return False
    finally:
        _SENDING.reset(sending)
    await ledger.record(RATING, str(message.message_id))
    logger.info("rating message sent", extra=extra)
    return True
