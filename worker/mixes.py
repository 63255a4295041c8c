"""The mixer's record of a delivered job (issue 18), published before the rating message.

When ``DEMIX_WEBAPP_URL`` is set and the chat is the user's private chat (Telegram allows no
Web App button in groups), the worker builds the :class:`common.mixes.MixRecord` of the
tracks it delivered (each track's Bot API ``file_id``, which the ledger recorded with the
send) and writes it to Redis, so the mixer can open it as soon as the Mix button is there.
The job's result carries it too, and the bot stores it in SQLite for good.

A track whose upload went unanswered (no ``file_id``) leaves the job without a mixer: a mix
without one of the tracks would not sum to the song.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis

from common.jobs import SeparationJob
from common.mixes import REDIS_TTL_S, MixRecord, MixTrack, mix_id, mix_url, redis_key
from common.settings import Settings
from worker.delivery import delivered_files

logger = logging.getLogger(__name__)


def mix_record(
    settings: Settings,
    job: SeparationJob,
    ledger_key: str,
    tracks: Sequence[str],
    sent: Mapping[str, str],
    audio_seconds: float | None,
) -> MixRecord | None:
    """The job's mix record, or None when it gets no Mix button."""
    if settings.webapp_url is None or not job.private_chat:
        return None
    files = delivered_files(sent)
    missing = [track for track in tracks if track not in files]
    if missing:
        logger.warning("no mixer: no file id for %s", ",".join(missing))
        return None
    return MixRecord(
        mix_id=mix_id(settings.require_token(), ledger_key),
        job_id=job.job_id,
        request_id=job.request_id,
        user_id=job.user_id,
        chat_id=job.chat_id,
        song_name=job.song_name,
        output_format=job.output_format,
        language=job.language,
        tracks=tuple(
            MixTrack(track, str(files[track]["file_id"]), _size(files[track])) for track in tracks
        ),
        duration_s=audio_seconds,
        created_at=time.time(),
        artist=job.artist,
    )


def _size(file: Mapping[str, Any]) -> int | None:
    size = file.get("file_size")
    return size if isinstance(size, int) else None


async def publish_mix(
    redis: Redis,
    settings: Settings,
    job: SeparationJob,
    ledger_key: str,
    tracks: Sequence[str],
    sent: Mapping[str, str],
    audio_seconds: float | None,
) -> tuple[MixRecord, str] | None:
    """Write the job's mix record to Redis; return it and its page's URL (the Mix button's),
    or None when the job gets no Mix button."""
    record = mix_record(settings, job, ledger_key, tracks, sent, audio_seconds)
    if record is None or settings.webapp_url is None:
        return None
    await redis.set(redis_key(record.mix_id), record.to_json(), ex=REDIS_TTL_S)
    logger.info("mix published", extra={"job_id": job.job_id, "mix_id": record.mix_id})
    return record, mix_url(settings.webapp_url, record.mix_id)
