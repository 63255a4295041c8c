"""The bot's side of the arq queue: enqueue separation jobs, read their state and position.

Reading is done in snapshots: one look at the queue answers for every job the caller
follows, in two Redis round trips and O(queue length + jobs followed) commands, however
many jobs there are.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import default_queue_name, in_progress_key_prefix, result_key_prefix
from arq.jobs import DeserializationError, JobResult, deserialize_result
from redis.exceptions import RedisError

from common.jobs import (
    SEPARATE_JOB,
    FailureReason,
    JobFailed,
    JobOutcome,
    SeparationJob,
    delivered_key,
)

logger = logging.getLogger(__name__)

# A Redis that does not answer within this time counts as down: the user is waiting.
CONNECT_TIMEOUT_S = 2

State = Literal["queued", "running", "done", "failed", "missing"]
# Failure reasons besides common.jobs.FailureReason's: the job raised something else (a
# crash, arq's retries used up), or its stored result could not be read.
CRASH = "crash"
UNREADABLE_RESULT = "unreadable_result"
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
    # Failed jobs: a FailureReason value, CRASH or UNREADABLE_RESULT (a metrics label).
    reason: str | None = None
    user_message: str | None = None
    # Failed jobs: True when the failure was on our side (crash, retries exhausted, Telegram
    # unavailable, deadline), so the same pick may be started again.
    retryable: bool = False
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None


@dataclass(frozen=True)
class QueueSnapshot:
    """One look at the queue: the followed jobs' states and the number of jobs waiting."""

    states: dict[str, JobState]
    waiting: int


def _timestamp(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _finished_state(raw_result: bytes) -> JobState:
    try:
        result: JobResult = deserialize_result(raw_result)
    except DeserializationError as exc:
        return JobState("failed", error=f"unreadable result: {exc}", reason=UNREADABLE_RESULT)
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
            return finished(error=f"malformed result: {exc!r}", reason=UNREADABLE_RESULT)
        return dataclasses.replace(finished(), state="done", outcome=outcome)
    if isinstance(result.result, JobFailed):
        failure = result.result
        return finished(
            error=f"{failure.reason}: {failure.user_message}",
            reason=failure.reason.value,
            user_message=failure.user_message,
            retryable=failure.reason.retryable,
        )
    # arq's own deadline stores a TimeoutError; anything else is a crash.
    reason = FailureReason.TIMEOUT.value if isinstance(result.result, TimeoutError) else CRASH
    return finished(error=repr(result.result), reason=reason, retryable=True)


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
            # An earlier job of this id (its result forgotten) may have left its delivery
            # mark: the new one has delivered nothing. (Were the id still queued, losing its
            # mark only counts that job as in progress until its outcome is recorded.)
            await redis.delete(delivered_key(job.job_id))
            queued = await redis.enqueue_job(
                SEPARATE_JOB,
                **job.to_kwargs(),
                _job_id=job.job_id,
                _queue_name=self.queue_name,
            )
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
        return queued is not None

    async def snapshot(self, job_ids: Sequence[str] = ()) -> QueueSnapshot:
        """The state of each of ``job_ids`` and how many jobs wait, read in one pass.

        A job's state follows arq's own rules (``Job.status``): a stored result means
        finished, an in-progress key means running, a place in the queue means waiting
        (deferred retries included); anything else is missing.
        """
        redis = await self._redis()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                pipe.zrange(self.queue_name, 0, -1)
                for job_id in job_ids:
                    pipe.get(result_key_prefix + job_id)
                    pipe.exists(in_progress_key_prefix + job_id)
                replies = await pipe.execute()
            members = [_text(member) for member in replies[0]]
            # The queue also holds the jobs being run until they finish.
            async with redis.pipeline(transaction=False) as pipe:
                for member in members:
                    pipe.exists(in_progress_key_prefix + member)
                running = await pipe.execute()
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
        waiting = [member for member, flag in zip(members, running, strict=True) if not flag]
        positions = {member: place for place, member in enumerate(waiting, start=1)}
        states: dict[str, JobState] = {}
        for index, job_id in enumerate(job_ids):
            raw_result, in_progress = replies[1 + 2 * index], replies[2 + 2 * index]
            if raw_result is not None:
                states[job_id] = _finished_state(raw_result)
            elif in_progress:
                states[job_id] = JobState("running")
            elif job_id in positions:
                states[job_id] = JobState("queued", position=positions[job_id])
            elif job_id in members:
                # Taken by a worker between the two reads: in the queue and running now.
                # (Only a job in none of the first read's answers is missing.)
                states[job_id] = JobState("running")
            else:
                states[job_id] = JobState("missing")
        return QueueSnapshot(states, waiting=len(waiting))

    async def started(self, job_ids: Sequence[str]) -> set[str]:
        """Those of ``job_ids`` a worker has started (running or finished), in one round trip."""
        redis = await self._redis()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.exists(in_progress_key_prefix + job_id, result_key_prefix + job_id)
                flags = await pipe.execute()
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    async def finished_for_user(self, job_ids: Sequence[str]) -> set[str]:
        """Those of ``job_ids`` that are over as far as their user can tell, in one round trip:
        arq holds their outcome, or the worker has delivered every track (it may still be
        showing the final status or sending the rating message, see
        :func:`common.jobs.delivered_key`)."""
        redis = await self._redis()
        try:
            async with redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.exists(result_key_prefix + job_id, delivered_key(job_id))
                flags = await pipe.execute()
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    async def forget(self, job_id: str) -> None:
        """Drop a finished job's stored result (and its delivery mark), so the same job id
        can be enqueued again."""
        redis = await self._redis()
        try:
            await redis.delete(result_key_prefix + job_id, delivered_key(job_id))
        except _REDIS_ERRORS as exc:
            raise QueueUnavailable(str(exc)) from exc
