"""Worker test harness: a cached separator, settings and an arq pool, and :func:`submit`,
which does what the bot does before a job (the user's song, a status message, the enqueue).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobResult

from common.jobs import SEPARATE_JOB, SeparationJob, separation_job_id
from common.settings import Settings
from separation import EnsembleSeparator
from tests.support.fake_bot_api import ApiCall, ChatMessage, FakeBotApi
from tests.support.processes import child_env
from tests.support.separators import make_separator

USER = 501
_request_ids = itertools.count(1000)


@pytest.fixture(scope="module")
def separator(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> EnsembleSeparator:
    """This module's separator has a source cache, as a worker process's does: the tiny
    models load once, and a retried job finds what an earlier try separated."""
    return make_separator(model_repo, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture
def settings(service_settings: Callable[..., Settings]) -> Settings:
    return service_settings()


@pytest.fixture
async def pool(redis_url: str) -> AsyncIterator[ArqRedis]:
    redis = await create_pool(RedisSettings.from_dsn(redis_url))
    yield redis
    await redis.aclose()


@dataclass
class Submitted:
    job: SeparationJob
    job_id: str
    song_message: ChatMessage


async def submit(
    api: FakeBotApi,
    pool: ArqRedis,
    song: Path | bytes,
    stems: tuple[str, ...],
    *,
    user_id: int = USER,
    send_as: str = "audio",
    song_name: str = "Test Song",
    file_name: str = "song.mp3",
    artist: str | None = "Test Artist",
    declared_size: int | None = None,
    ensemble: Mapping[str, Any] | None = None,
) -> Submitted:
    """Do what the bot does before a job: the user's song, a status message, the enqueue."""
    if send_as == "audio":
        message = api.send_audio(user_id, song, declared_size=declared_size)
    elif send_as == "voice":
        message = api.send_voice(user_id, song, declared_size=declared_size)
    else:
        message = api.send_document(user_id, song, file_name=file_name)
    assert message.file is not None
    async with api.bot() as bot:
        status = await bot.send_message(message.chat_id, "⏳ Queued: you're next.")
    job = SeparationJob(
        request_id=next(_request_ids),
        chat_id=message.chat_id,
        user_id=user_id,
        file_id=message.file.file_id,
        song_name=song_name,
        stems=stems,
        status_message_id=status.message_id,
        reply_to_message_id=message.message_id,
        file_size=message.file.size,
        artist=artist,
        ensemble=ensemble,
    )
    job_id = separation_job_id(job.request_id, stems)
    assert await pool.enqueue_job(SEPARATE_JOB, _job_id=job_id, **job.to_kwargs())
    return Submitted(job, job_id, message)


async def result_of(pool: ArqRedis, job_id: str) -> JobResult:
    return await Job(job_id, pool).result_info()  # type: ignore[return-value]


def status_texts(api: FakeBotApi, submitted: Submitted) -> list[str | None]:
    message = api.message(submitted.job.chat_id, submitted.job.status_message_id)
    assert message is not None
    return message.texts


def rating_messages(api: FakeBotApi, chat_id: int) -> list[ChatMessage]:
    return [m for m in api.chat_messages(chat_id) if any("👍" in b.text for b in m.buttons)]


def status_edits(api: FakeBotApi, submitted: Submitted) -> list[ApiCall]:
    return [
        call
        for call in api.calls("editMessageText")
        if call.params.get("message_id") == submitted.job.status_message_id and call.ok
    ]


def assert_sums_to_mix(mix: np.ndarray, stems: list[np.ndarray]) -> None:
    """The decoded stems add up to the decoded input, within mp3 coding noise."""
    n = mix.shape[1]
    for stem in stems:
        assert stem.shape == mix.shape, "every track has the input's length, sample-aligned"
    total = np.sum(stems, axis=0)[:, :n]
    error = total - mix
    snr_db = 10 * np.log10(np.sum(mix**2) / max(np.sum(error**2), 1e-20))
    assert snr_db > 20, f"stems sum back to the mix at only {snr_db:.1f} dB SNR"


# The job lease of the worker processes these tests start (DEMIX_JOB_LEASE_S).
LEASE_S = 2.0


def worker_env(api: FakeBotApi, redis_url: str, model_repo: Path, root: Path) -> dict[str, str]:
    return child_env(
        api.environment(),
        REDIS_URL=redis_url,
        DEMIX_MODEL_REPO=model_repo,
        DEMIX_DEVICE="cpu",
        DEMIX_DATA_DIR=root / "data",
        DEMIX_CACHE_DIR=root / "cache",
        DEMIX_DB_PATH=root / "unused.sqlite3",
        # A short lease: a killed worker's job is taken up by another once it lapses.
        DEMIX_JOB_LEASE_S=LEASE_S,
        DEMIX_WORKER_MAX_JOBS=1,
        DEMIX_JOB_TIMEOUT_BASE_S=20,
        DEMIX_JOB_TIMEOUT_PER_AUDIO_S=1,
        DEMIX_MAX_DURATION_S=4,
        DEMIX_RETRY_BACKOFF_S=0.1,
        DEMIX_LOG_LEVEL="DEBUG",
    )
