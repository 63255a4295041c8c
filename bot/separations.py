"""Starting a separation: the use case behind the picker's Separate button, Telegram-free.

It runs in two steps around the one thing only the handler can do, posting the status
message (whose id the job needs): :func:`plan_separation` decides whether the pick may
start, at which queue position and, while an A/B experiment runs, with which of its variants;
:func:`enqueue_separation` queues it under its deterministic job id, reads its position
again and records it. Each step answers with a typed result.

A user's limit of jobs in progress counts the jobs SQLite records as queued or running,
less those that are over for the user although the watcher has not recorded it yet: arq
has their outcome, or the worker has delivered all their tracks and is only finishing the
status and sending the rating message. So a pick pressed as soon as the tracks are there
is free to start.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import Enum

from bot.queue import QueueClient, QueueUnavailable
from common.experiments import Experiment, Variant, assign_variant
from common.i18n import DEFAULT_LANGUAGE, Language
from common.jobs import SeparationJob, separation_job_id
from separation.formats import OutputFormat, output_format
from separation.tracks import SOURCES
from storage import Database, Request

logger = logging.getLogger(__name__)


class NotStarted(Enum):
    """Why Separate started nothing."""

    NOTHING_PICKED = "nothing_picked"
    ALREADY_QUEUED = "already_queued"
    ALREADY_DELIVERED = "already_delivered"
    SONG_FAILED = "song_failed"  # the song caused the failure; again would fail the same way
    TOO_MANY_JOBS = "too_many_jobs"
    QUEUE_DOWN = "queue_down"


@dataclass(frozen=True)
class PlannedJob:
    """A pick that may start: its job id, its stems in source order, its queue position,
    the format its tracks come in (the user's choice in /settings when Separate was
    pressed), the language its status messages speak (the user's), and the running
    experiment's name and the variant it separates with (both None without an experiment;
    the user never sees them)."""

    job_id: str
    stems: tuple[str, ...]
    position: int
    output_format: OutputFormat = "mp3"
    language: Language = DEFAULT_LANGUAGE
    experiment: str | None = None
    variant: Variant | None = None


@dataclass(frozen=True)
class Queued:
    """A job now in the queue: its position there (``None`` once a worker has taken it)."""

    position: int | None


async def plan_separation(
    db: Database,
    queue: QueueClient,
    request: Request,
    *,
    max_active_jobs: int,
    language: Language = DEFAULT_LANGUAGE,
    experiment: Experiment | None = None,
) -> PlannedJob | NotStarted:
    """Whether the request's current pick may start now, and where it would queue.

    The job is the pick in the user's current format: the same stems in another format
    are another job (another id), so "already delivered" only holds for the same format.
    With an ``experiment``, the pick gets its variant (:func:`assign_variant`: the same
    request and pick always the same one).
    """
    picked = await db.selection(request.id)
    if not picked:
        return NotStarted.NOTHING_PICKED
    stems = tuple(source for source in SOURCES if source in picked)
    fmt = output_format((await db.user_settings(request.user_id)).output_format)
    job_id = separation_job_id(request.id, stems, fmt)
    known = await db.get_job(job_id)
    if known is not None and known.status in ("queued", "running"):
        return NotStarted.ALREADY_QUEUED
    if await _jobs_in_progress(db, queue, request.user_id, max_active_jobs) >= max_active_jobs:
        return NotStarted.TOO_MANY_JOBS
    try:
        snapshot = await queue.snapshot([job_id])
        state = snapshot.states[job_id]
        if state.state in ("queued", "running"):
            return NotStarted.ALREADY_QUEUED
        if state.state == "done":
            return NotStarted.ALREADY_DELIVERED
        if state.state == "failed":
            if not state.retryable:
                return NotStarted.SONG_FAILED
            # Our side failed, not the song: the same pick runs again under its id.
            await queue.forget(job_id)
            logger.info(
                "failed job started again", extra={"job_id": job_id, "user_id": request.user_id}
            )
    except QueueUnavailable as exc:
        logger.warning("queue unreachable at enqueue: %s", exc, extra={"job_id": job_id})
        return NotStarted.QUEUE_DOWN
    variant = None if experiment is None else assign_variant(experiment, request.id, stems)
    return PlannedJob(
        job_id,
        stems,
        position=snapshot.waiting + 1,
        output_format=fmt,
        language=language,
        experiment=None if experiment is None else experiment.name,
        variant=variant,
    )


async def _jobs_in_progress(db: Database, queue: QueueClient, user_id: int, limit: int) -> int:
    """How many of ``user_id``'s jobs hold a place in their limit.

    SQLite's count, while it is under the limit; at the limit, less the jobs that are over
    for the user (arq has their outcome, or all their tracks are delivered) but not yet
    recorded by the watcher. Redis unreachable: SQLite's count stands.
    """
    active = await db.active_jobs(user_id)
    if len(active) < limit:
        return len(active)
    try:
        over = await queue.finished_for_user([job.job_id for job in active])
    except QueueUnavailable:
        return len(active)
    return len(active) - len(over)


async def enqueue_separation(
    db: Database,
    queue: QueueClient,
    request: Request,
    planned: PlannedJob,
    status_message_id: int,
) -> Queued | NotStarted:
    """Queue ``planned`` with its status message and record it with its position now."""
    # Who the job is for: the same in the queue's payload and in the database's record.
    owner = {"request_id": request.id, "chat_id": request.chat_id, "user_id": request.user_id}
    job = SeparationJob(
        **owner,
        file_id=request.file_id,
        song_name=request.song_name,
        stems=planned.stems,
        status_message_id=status_message_id,
        reply_to_message_id=request.message_id,
        file_size=request.file_size,
        artist=request.artist,
        output_format=planned.output_format,
        language=planned.language,
        ensemble=None if planned.variant is None else planned.variant.ensemble.to_dict(),
    )
    extra = {"job_id": planned.job_id, "user_id": request.user_id, "request_id": request.id}
    try:
        enqueued = await queue.enqueue(job)
    except QueueUnavailable as exc:
        logger.warning("queue unreachable at enqueue: %s", exc, extra=extra)
        return NotStarted.QUEUE_DOWN
    if not enqueued:
        # Another press won the race; its status message is the one to watch.
        return NotStarted.ALREADY_QUEUED
    position = await _position_now(queue, planned)
    await db.add_job(
        job_id=planned.job_id,
        **owner,
        stems=planned.stems,
        status_message_id=status_message_id,
        queue_position=position,
        output_format=planned.output_format,
        language=planned.language,
        experiment=planned.experiment,
        variant=None if planned.variant is None else planned.variant.name,
    )
    variant = {} if planned.variant is None else {"variant": planned.variant.name}
    logger.info(
        "job queued",
        extra={
            **extra,
            "stems": ",".join(planned.stems),
            "output_format": planned.output_format,
            "position": position,
            **variant,
        },
    )
    return Queued(position)


async def _position_now(queue: QueueClient, planned: PlannedJob) -> int | None:
    """The job's place in the queue, read after enqueueing it: while its status message was
    being sent, workers may have taken jobs that the plan still counted as waiting ahead."""
    try:
        state = (await queue.snapshot([planned.job_id])).states[planned.job_id]
    except QueueUnavailable:
        # It is queued; the watcher corrects the position once Redis answers again.
        return planned.position
    return state.position if state.state == "queued" else None
