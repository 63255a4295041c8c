"""The worker's failure policy: per-job deadlines, retry backoff, what counts as transient.

- bad input and limits raise :class:`common.jobs.JobFailed` (the user reads its message in
  the status; arq does not retry it);
- transient Telegram and Redis errors raise arq's ``Retry`` with capped exponential backoff,
  until the last try, which fails with a "try again later" message;
- a full or unwritable disk fails the job with a message and no retry (the user may press
  Separate again later): retrying at once would fill the disk again;
- an upload whose answer never came (read timeout) counts as sent but unconfirmed, never
  sent again: Telegram may well have it, and a second album is worse than a note;
- a per-job deadline scaled to the song's duration stops runaway jobs; the time a job waits
  for the worker's device (another job separating) does not count (arq's own timeout is one
  number per function, so it is set to the longest song's deadline times the jobs a worker
  runs at once, plus a margin).
"""

from __future__ import annotations

import errno

import httpx
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from telegram.error import BadRequest, NetworkError, RetryAfter, TimedOut

from common.settings import Settings

# Time left after a job's own deadline for the failure status edit, before arq's timeout.
FINISH_MARGIN_S = 10.0


def job_deadline_s(settings: Settings, duration_s: float) -> float:
    """A job's time budget for a song of ``duration_s`` seconds."""
    return settings.job_timeout_base_s + settings.job_timeout_per_audio_s * duration_s


def arq_job_timeout_s(settings: Settings) -> float:
    """arq's timeout for the function: the longest allowed song's deadline for each job a
    worker runs at once, plus a margin.

    A job's own deadline stops while it waits for the worker's device (one separation at a
    time), and the wait is at most the ``worker_max_jobs - 1`` jobs ahead of it, each held
    to its own deadline: arq must not stop a job its deadline still allows.
    """
    longest = job_deadline_s(settings, settings.max_duration_s)
    return longest * settings.worker_max_jobs + FINISH_MARGIN_S


def retry_delay_s(settings: Settings, job_try: int, at_least: float = 0.0) -> float:
    """Capped exponential backoff before try ``job_try + 1``."""
    delay = settings.retry_backoff_s * 2 ** max(0, job_try - 1)
    return max(at_least, min(settings.retry_backoff_max_s, delay))


def is_transient(exc: BaseException) -> bool:
    """Errors worth another try: Telegram flood control, network, 5xx; Redis unreachable."""
    if isinstance(exc, RetryAfter):
        return True
    if isinstance(exc, NetworkError):
        # BadRequest subclasses NetworkError in PTB, but a 400 will not go away; nor will a
        # 413 (an upload over the Bot API's size limit), which PTB reports as NetworkError.
        return not isinstance(exc, BadRequest) and not is_too_large(exc)
    return isinstance(exc, RedisConnectionError | RedisTimeoutError)


def is_too_large(exc: NetworkError) -> bool:
    return "(413)" in exc.message or "entity too large" in exc.message.lower()


# Disk full, over quota, read-only, not permitted, not a folder: the machine, not the song.
STORAGE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR}
)


def is_storage_error(exc: BaseException) -> bool:
    """The worker could not write its files: a full, read-only or misconfigured disk."""
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def is_unanswered(exc: BaseException) -> bool:
    """A request sent whole whose answer never came: Telegram may have acted on it.

    Connect, write and pool timeouts mean the request did not get through; a read timeout
    means it did and only the answer is missing.
    """
    return isinstance(exc, TimedOut) and isinstance(exc.__cause__, httpx.ReadTimeout)
