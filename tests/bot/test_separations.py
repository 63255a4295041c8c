"""The Separate use case without Telegram: a real SQLite file and a real Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.queue import QueueClient
from bot.separations import (
    NotStarted,
    PlannedJob,
    Queued,
    enqueue_separation,
    plan_separation,
)
from common.jobs import separation_job_id
from storage import Database, NewRequest, Request
from tests.support.redis_server import free_port, mark_running

USER = 77


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    async with await Database.open(tmp_path / "demix.sqlite3") as database:
        yield database


@pytest.fixture
async def queue(redis_url: str) -> AsyncIterator[QueueClient]:
    client = QueueClient(redis_url)
    yield client
    await client.close()


async def new_request(db: Database, user_id: int = USER) -> Request:
    return await db.add_request(
        NewRequest(
            chat_id=user_id, user_id=user_id, message_id=5, file_id="F", kind="audio",
            song_name="Song",
        )
    )  # fmt: skip


async def start(db: Database, queue: QueueClient, request: Request) -> PlannedJob | NotStarted:
    planned = await plan_separation(db, queue, request, max_active_jobs=1)
    if isinstance(planned, NotStarted):
        return planned
    outcome = await enqueue_separation(db, queue, request, planned, status_message_id=9)
    return planned if isinstance(outcome, Queued) else outcome


async def test_nothing_picked_starts_nothing(db: Database, queue: QueueClient) -> None:
    request = await new_request(db)
    assert await start(db, queue, request) is NotStarted.NOTHING_PICKED
    assert (await queue.snapshot()).waiting == 0


async def test_a_pick_is_queued_once_in_source_order(db: Database, queue: QueueClient) -> None:
    request = await new_request(db)
    await db.set_selection(request.id, ["vocals", "drums"])
    planned = await start(db, queue, request)
    assert planned == PlannedJob(
        separation_job_id(request.id, ["drums", "vocals"]), ("drums", "vocals"), 1
    )
    job = await db.get_job(planned.job_id)
    assert job is not None and (job.status, job.status_message_id) == ("queued", 9)
    assert await start(db, queue, request) is NotStarted.ALREADY_QUEUED
    assert (await queue.snapshot()).waiting == 1


async def test_a_second_song_waits_for_the_first(db: Database, queue: QueueClient) -> None:
    first, second = await new_request(db), await new_request(db)
    for request in (first, second):
        await db.set_selection(request.id, ["bass"])
    assert isinstance(await start(db, queue, first), PlannedJob)
    assert await start(db, queue, second) is NotStarted.TOO_MANY_JOBS


async def test_the_queue_position_counts_other_users(db: Database, queue: QueueClient) -> None:
    for user_id in (1, 2, 3):
        request = await new_request(db, user_id)
        await db.set_selection(request.id, ["piano"])
        planned = await start(db, queue, request)
        assert isinstance(planned, PlannedJob) and planned.position == user_id


async def test_the_position_recorded_is_read_after_enqueueing(
    db: Database, queue: QueueClient, redis_url: str
) -> None:
    first, second = await new_request(db, 1), await new_request(db, 2)
    for request in (first, second):
        await db.set_selection(request.id, ["drums"])
    assert isinstance(await start(db, queue, first), PlannedJob)
    planned = await plan_separation(db, queue, second, max_active_jobs=1)
    assert isinstance(planned, PlannedJob) and planned.position == 2
    # A worker takes the first job while the second one's status message is being sent.
    mark_running(redis_url, separation_job_id(first.id, ["drums"]))
    outcome = await enqueue_separation(db, queue, second, planned, status_message_id=9)
    assert outcome == Queued(position=1)
    job = await db.get_job(planned.job_id)
    assert job is not None and job.queue_position == 1


async def test_redis_down_is_said_and_the_pick_is_kept(db: Database) -> None:
    queue = QueueClient(f"redis://127.0.0.1:{free_port()}/0")
    request = await new_request(db)
    await db.set_selection(request.id, ["vocals"])
    try:
        assert await start(db, queue, request) is NotStarted.QUEUE_DOWN
    finally:
        await queue.close()
    assert await db.selection(request.id) == {"vocals"}
    assert await db.jobs_for_request(request.id) == []
