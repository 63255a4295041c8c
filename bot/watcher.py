"""The job watcher: follows jobs in flight through arq and records their outcome in SQLite.

It runs in the bot process (the only one that opens SQLite). It reads the jobs to follow
from the database, so after a restart it resumes the jobs that were still in flight. Each
pass reads one :class:`bot.queue.QueueSnapshot` for all of them, also when there are none:
it keeps the queue's figures in :mod:`bot.metrics` current, and counts each job's outcome
there once, when it records it.

The status message has one writer at a time: while a job waits, the watcher keeps its
queue position current; once a worker starts it, only the worker edits it. When a job ends
without a word from any worker (crash, timeout, retries exhausted, lost from Redis), the
watcher writes the final word, because nobody else will.

Telegram's flood control (a 429) on one chat holds up no other chat's status: a queue
position is shown without waiting (``NO_WAIT``; a position a 429 kept from the chat is shown
at a later check, and a late one could overwrite a worker's progress), and a final word is
sent from a task of its own, which waits out the chat's 429 (see :mod:`common.flood_control`)
while the checks go on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

from telegram.ext import ExtBot

from bot import texts
from bot.metrics import LOST, BotMetrics
from bot.queue import CRASH, JobState, QueueClient, QueueUnavailable
from common.flood_control import NO_WAIT, PerChatFloodControl
from common.i18n import translate
from common.mixes import MixRecord
from common.telegram import Edit, EditResult, edit_message
from common.texts import JOB_CRASHED
from storage import Database, JobRecord

logger = logging.getLogger(__name__)

# A job must be missing from Redis this many checks in a row, and for this long, before it
# counts as lost: one read can miss a job that moves between the queue's keys as it is read.
LOST_AFTER_CHECKS = 2
LOST_AFTER_S = 3.0


class JobWatcher:
    """Checks every job in flight every ``interval_s`` seconds; :meth:`run` until cancelled."""

    def __init__(
        self,
        db: Database,
        queue: QueueClient,
        bot: ExtBot[Any],
        interval_s: float,
        metrics: BotMetrics | None = None,
    ) -> None:
        self.db = db
        self.queue = queue
        self.bot = bot
        self.interval_s = interval_s
        self.metrics = metrics if metrics is not None else BotMetrics()
        # Job id -> (checks in a row that found it missing, when the first of them ran).
        self._missing: dict[str, tuple[int, float]] = {}
        self._queue_down = False
        self.passes = 0  # checks finished so far, failed ones included
        # Final words still being sent (waiting out a 429 in their chat).
        self._final_words: set[asyncio.Task[EditResult]] = set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self.check_once()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("job watcher check failed")
                self.passes += 1
                await asyncio.sleep(self.interval_s)
        finally:
            for task in self._final_words:
                task.cancel()

    async def check_once(self) -> None:
        """One pass over the jobs in flight (with none, it still reads the queue's depth)."""
        jobs = await self.db.jobs_in_flight()
        try:
            snapshot = await self.queue.snapshot([job.job_id for job in jobs])
        except QueueUnavailable as exc:
            self.metrics.queue_unreachable()
            if jobs and not self._queue_down:
                logger.warning("queue unreachable, job outcomes wait: %s", exc)
                self._queue_down = True
            return
        self.metrics.queue_seen(snapshot.waiting)
        if self._queue_down:
            logger.info("queue reachable again")
            self._queue_down = False
        moved: list[tuple[JobRecord, int | None]] = []
        for job in jobs:
            state = snapshot.states[job.job_id]
            if (
                state.state == "queued"
                and job.status == "queued"
                and state.position != job.queue_position
            ):
                moved.append((job, state.position))
            await self._apply(job, state)
        await self._show_positions(moved)

    async def _show_positions(self, moved: list[tuple[JobRecord, int | None]]) -> None:
        """Record and show new queue positions, except for jobs a worker has just started
        (their status message is the worker's now)."""
        if not moved:
            return
        try:
            started = await self.queue.started([job.job_id for job, _ in moved])
        except QueueUnavailable:
            return
        for job, position in moved:
            if job.job_id not in started:
                if self._throttled(job.chat_id):
                    continue  # not recorded: shown at a check after the chat's 429 has passed
                shown = await self._edit_status(
                    job, texts.queued(position, job.language), wait=False
                )
                if shown.edit is Edit.THROTTLED:
                    continue  # not recorded: a later check tries again
            await self.db.set_queue_position(job.job_id, position)

    async def _apply(self, job: JobRecord, state: JobState) -> None:
        extra = {"job_id": job.job_id, "user_id": job.user_id}
        if state.state != "missing":
            self._missing.pop(job.job_id, None)
        if state.state == "running":
            if job.status == "queued":
                await self.db.mark_running(job.job_id)
                logger.info("job running", extra=extra)
        elif state.state == "done":
            assert state.outcome is not None
            if state.outcome.mix is not None:
                # Before the job is marked done: a failure here is retried at the next check.
                await self._store_mix(job, state.outcome.mix)
            await self.db.mark_done(
                job.job_id,
                tracks=state.outcome.tracks,
                audio_seconds=state.outcome.audio_seconds,
                timings=state.outcome.timings,
                started_at=state.started_at,
                finished_at=state.finished_at,
            )
            self.metrics.job_finished(
                "done", enqueued_at=state.enqueued_at, started_at=state.started_at
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
            self.metrics.job_finished(
                "failed",
                state.reason or CRASH,
                enqueued_at=state.enqueued_at,
                started_at=state.started_at,
            )
            logger.info("job failed: %s", state.error, extra=extra)
            if state.user_message is None:
                # The worker died or gave up without telling the user.
                self._send_final_word(job, translate(JOB_CRASHED, job.language))
        else:
            checks, since = self._missing.get(job.job_id, (0, time.monotonic()))
            self._missing[job.job_id] = (checks + 1, since)
            if checks + 1 >= LOST_AFTER_CHECKS and time.monotonic() - since >= LOST_AFTER_S:
                del self._missing[job.job_id]
                await self.db.mark_failed(job.job_id, "lost: not in the queue any more")
                self.metrics.job_finished("failed", LOST)
                logger.warning("job lost", extra=extra)
                self._send_final_word(job, translate(texts.JOB_LOST, job.language))

    async def _store_mix(self, job: JobRecord, data: Mapping[str, Any]) -> None:
        """Keep the job's mixer record for good (the worker's Redis copy expires)."""
        try:
            record = MixRecord.from_dict(data)
        except (KeyError, TypeError, ValueError) as exc:
            logger.warning("malformed mix record: %r", exc, extra={"job_id": job.job_id})
            return
        await self.db.add_mix(
            record.mix_id,
            job_id=job.job_id,
            user_id=record.user_id,
            chat_id=record.chat_id,
            record=record.to_json(),
            created_at=record.created_at,
        )

    def _throttled(self, chat_id: int) -> bool:
        """True while Telegram's flood control holds the chat (no use sending to it)."""
        limiter = self.bot.rate_limiter
        return isinstance(limiter, PerChatFloodControl) and limiter.throttled_for(chat_id) > 0

    def _send_final_word(self, job: JobRecord, text: str) -> None:
        """Edit the status to its last text in a task: a 429 in this chat delays no check."""
        task = asyncio.create_task(self._edit_status(job, text), name="demix-final-status")
        self._final_words.add(task)
        task.add_done_callback(self._final_words.discard)

    async def _edit_status(self, job: JobRecord, text: str, *, wait: bool = True) -> EditResult:
        if job.status_message_id is None:
            return EditResult(Edit.FAILED)
        return await edit_message(
            self.bot.edit_message_text(
                text,
                chat_id=job.chat_id,
                message_id=job.status_message_id,
                rate_limit_args=None if wait else NO_WAIT,
            ),
            {"job_id": job.job_id, "user_id": job.user_id},
        )
