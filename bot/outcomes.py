"""The job watcher: follows jobs in flight through arq and records their outcome in SQLite.

It runs in the bot process (the only one that opens SQLite). It reads the jobs to follow
from the database, so after a restart it resumes the jobs that were still in flight. While
a job waits it keeps the queue position in the status message current; when a job dies
without a word from the worker (crash, timeout, retries exhausted, lost from Redis) it
edits the status message to say so, because nobody else will.
"""

from __future__ import annotations

import asyncio
import logging

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from bot import texts
from bot.queue import JobState, QueueClient, QueueUnavailable
from storage import Database, JobRecord

logger = logging.getLogger(__name__)

# A job must be missing from Redis this many checks in a row before it counts as lost.
LOST_AFTER_CHECKS = 2


class JobWatcher:
    """Checks every job in flight every ``interval_s`` seconds; :meth:`run` until cancelled."""

    def __init__(self, db: Database, queue: QueueClient, bot: Bot, interval_s: float) -> None:
        self.db = db
        self.queue = queue
        self.bot = bot
        self.interval_s = interval_s
        self._missing_checks: dict[str, int] = {}
        self._queue_down = False

    async def run(self) -> None:
        while True:
            try:
                await self.check_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("job watcher check failed")
            await asyncio.sleep(self.interval_s)

    async def check_once(self) -> None:
        """One pass over the jobs in flight."""
        for job in await self.db.jobs_in_flight():
            try:
                state = await self.queue.state(job.job_id)
            except QueueUnavailable as exc:
                if not self._queue_down:
                    logger.warning("queue unreachable, job outcomes wait: %s", exc)
                self._queue_down = True
                return
            if self._queue_down:
                logger.info("queue reachable again")
                self._queue_down = False
            await self._apply(job, state)

    async def _apply(self, job: JobRecord, state: JobState) -> None:
        extra = {"job_id": job.job_id, "user_id": job.user_id}
        if state.state != "missing":
            self._missing_checks.pop(job.job_id, None)
        if state.state == "queued":
            if job.status == "queued" and state.position != job.queue_position:
                await self.db.set_queue_position(job.job_id, state.position)
                # Re-read just before editing so a job that has started meanwhile keeps the
                # worker's progress text.
                if (await self.queue.state(job.job_id)).state == "queued":
                    await self._edit_status(job, texts.queued(state.position))
        elif state.state == "running":
            if job.status == "queued":
                await self.db.mark_running(job.job_id)
                logger.info("job running", extra=extra)
        elif state.state == "done":
            assert state.outcome is not None
            await self.db.mark_done(
                job.job_id,
                tracks=state.outcome.tracks,
                audio_seconds=state.outcome.audio_seconds,
                timings=state.outcome.timings,
                started_at=state.started_at,
                finished_at=state.finished_at,
            )
            logger.info(
                "job done",
                extra={**extra, "tracks": ",".join(state.outcome.tracks)},
            )
        elif state.state == "failed":
            await self.db.mark_failed(
                job.job_id,
                state.error or "failed",
                started_at=state.started_at,
                finished_at=state.finished_at,
            )
            logger.info("job failed: %s", state.error, extra=extra)
            if state.user_message is None:
                # The worker died or gave up without telling the user.
                await self._edit_status(job, texts.JOB_CRASHED)
        else:
            checks = self._missing_checks.get(job.job_id, 0) + 1
            self._missing_checks[job.job_id] = checks
            if checks >= LOST_AFTER_CHECKS:
                del self._missing_checks[job.job_id]
                await self.db.mark_failed(job.job_id, "lost: not in the queue any more")
                logger.warning("job lost", extra=extra)
                await self._edit_status(job, texts.JOB_LOST)

    async def _edit_status(self, job: JobRecord, text: str) -> None:
        if job.status_message_id is None:
            return
        try:
            await self.bot.edit_message_text(
                text, chat_id=job.chat_id, message_id=job.status_message_id
            )
        except BadRequest as exc:
            if "not modified" not in exc.message.lower():
                logger.warning(
                    "status message not editable: %s",
                    exc.message,
                    extra={"job_id": job.job_id, "user_id": job.user_id},
                )
        except TelegramError as exc:
            logger.warning(
                "status edit failed: %s", exc, extra={"job_id": job.job_id, "user_id": job.user_id}
            )
