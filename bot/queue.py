"""The bot's side of the arq queue: enqueue separation jobs, read their state and position."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name, in_progress_key_prefix, result_key_prefix
from arq.jobs import DeserializationError, Job, JobStatus
from redis.exceptions import RedisError

from bot.jobs import (
    RETRYABLE_REASONS,
    SEPARATE_JOB,
    JobFailed,
    JobOutcome,
    SeparationJob,
    separation_job_id,
)

logger = logging.getLogger(__name__)

# A Redis that does not answer within this time counts as down: the user is waiting.
CONNECT_TIMEOUT_S = 2

State = Literal["queued", "running", "done", "failed", "missing"]
_REDIS_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


class QueueUnavailable(Exception):
    """Redis cannot be reached; nothing was enqueued."""


@dataclass(frozen=True)
class JobState:
    """What arq knows about one job right now."""

    state: State
    position: int | None = None
    outcome: JobOutcome | None = None
    # Failed jobs: the reason for logs and the database, and whether the worker already told
    # the user (a JobFailed: bad input, limits) or the job died without a word (crash,
    # timeout, retries exhausted).
    error: str | None = None
    user_message: str | None = None
    # Failed jobs: True when the failure was on our side (crash, retries exhausted, Telegram
    # unavailable, deadline), so the same pick may be started again.
    retryable: bool = False
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


def _timestamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


class QueueClient:
    """A lazily connected arq pool: the bot starts and serves even while Redis is down."""

    def __init__(self, redis_url: str, *, queue_name: str = default_queue_name) -> None:
        self._redis_settings = dataclasses.replace(
            RedisSettings.from_dsn(redis_url), conn_timeout=CONNECT_TIMEOUT_S, conn_retries=0
        )
        self.queue_name = queue_name
        self._pool: ArqRedis | None = None
        self._lock = asyncio.Lock()

    async def _redis(self) -> ArqRedis:
        async with self._lock:
            if self._pool is None:
                try:
                    self._pool = await create_pool(
                        self._redis_settings, default_queue_name=self.queue_name
                    )
                except _REDIS_ERRORS as exc:
                    raise QueueUnavailable(str(exc)) from exc
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    async def enqueue(self, job: SeparationJob) -> bool:
        """Enqueue ``job`` under its deterministic id; ``False`` if that job already exists."""
        redis = await self._redis()
        try:
            queued = await redis.enqueue_job(
                SEPARATE_JOB,
                **job.to_kwargs(),
                _job_id=separation_job_id(job.request_id, job.stems),
                _queue_name=self.queue_name,
            )
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
        return queued is not None

    async def waiting_count(self) -> int:
        """Jobs waiting to start (not running): a new job's position is this plus one."""
        return await self._position_of(None)

    async def position(self, job_id: str) -> int | None:
        """1-based place of a waiting job among the jobs not yet started; ``None`` if absent."""
        redis = await self._redis()
        try:
            score = await redis.zscore(self.queue_name, job_id)
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
        if score is None:
            return None
        return await self._position_of(job_id) + 1

    async def _position_of(self, job_id: str | None) -> int:
        """How many not-started jobs are ahead of ``job_id`` (all of them for ``None``)."""
        redis = await self._redis()
        try:
            members: list[Any] = await redis.zrange(self.queue_name, 0, -1)
            ahead = []
            for member in members:
                name = member.decode() if isinstance(member, bytes) else str(member)
                if name == job_id:
                    break
                ahead.append(name)
            if not ahead:
                return 0
            async with redis.pipeline(transaction=False) as pipe:
                for name in ahead:
                    pipe.exists(in_progress_key_prefix + name)
                running = await pipe.execute()
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
        return sum(1 for flag in running if not flag)

    async def state(self, job_id: str) -> JobState:
        """The job's state; a finished job carries its outcome or failure."""
        redis = await self._redis()
        job = Job(job_id, redis, _queue_name=self.queue_name)
        try:
            status = await job.status()
            if status in (JobStatus.queued, JobStatus.deferred):
                return JobState("queued", position=await self.position(job_id))
            if status == JobStatus.in_progress:
                return JobState("running")
            if status == JobStatus.not_found:
                return JobState("missing")
            try:
                result = await job.result_info()
            except DeserializationError as exc:
                return JobState("failed", error=f"unreadable result: {exc}")
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
        if result is None:  # expired between the two reads
            return JobState("missing")
        finished = functools.partial(
            JobState,
            "failed",
            enqueued_at=_timestamp(result.enqueue_time),
            started_at=_timestamp(result.start_time),
            finished_at=_timestamp(result.finish_time),
        )
        if result.success:
            try:
                outcome = (
                    result.result
                    if isinstance(result.result, JobOutcome)
                    else JobOutcome.from_result(result.result)
                )
            except (KeyError, TypeError, ValueError) as exc:
                return finished(error=f"malformed result: {exc!r}")
            return dataclasses.replace(finished(), state="done", outcome=outcome)
        if isinstance(result.result, JobFailed):
            return finished(
                error=f"{result.result.reason}: {result.result.user_message}",
                user_message=result.result.user_message,
                retryable=result.result.reason in RETRYABLE_REASONS,
            )
        return finished(error=repr(result.result), retryable=True)

    async def forget(self, job_id: str) -> None:
        """Drop a finished job's stored result, so the same job id can be enqueued again."""
        redis = await self._redis()
        try:
            await redis.delete(result_key_prefix + job_id)
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
