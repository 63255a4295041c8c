"""The Separate use case without Telegram: a real SQLite file and a real Redis."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from arq.connections import RedisSettings, create_pool
from arq.constants import result_key_prefix
from arq.jobs import Job, serialize_result

from bot.queue import QueueClient
from bot.separations import (
    NotStarted,
    PlannedJob,
    Queued,
    enqueue_separation,
    plan_separation,
)
from common.experiments import Experiment, assign_variant, parse_experiment
from common.jobs import SEPARATE_JOB, JobOutcome, delivered_key, separation_job_id
from separation.config import Ensemble
from storage import Database, NewRequest, Request
from tests.support.redis_server import free_port, mark_running, redis_client

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


async def start(
    db: Database,
    queue: QueueClient,
    request: Request,
    *,
    max_active_jobs: int = 1,
    experiment: Experiment | None = None,
) -> PlannedJob | NotStarted:
    planned = await plan_separation(
        db, queue, request, max_active_jobs=max_active_jobs, experiment=experiment
    )
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


async def queued_kwargs(redis_url: str, job_id: str) -> dict[str, Any]:
    """The keyword arguments arq will call the worker's function with."""
    pool = await create_pool(RedisSettings.from_dsn(redis_url))
    try:
        info = await Job(job_id, pool).info()
    finally:
        await pool.aclose()
    assert info is not None
    return info.kwargs


async def test_without_an_experiment_the_worker_picks_the_ensemble(
    db: Database, queue: QueueClient, redis_url: str
) -> None:
    request = await new_request(db)
    await db.set_selection(request.id, ["vocals"])
    planned = await start(db, queue, request)
    assert isinstance(planned, PlannedJob)
    assert (planned.experiment, planned.variant) == (None, None)
    job = await db.get_job(planned.job_id)
    assert job is not None and (job.experiment, job.variant) == (None, None)
    assert (await queued_kwargs(redis_url, planned.job_id))["ensemble"] is None


async def test_each_pick_gets_its_variant_in_the_payload_and_the_database(
    db: Database, queue: QueueClient, redis_url: str
) -> None:
    experiment = parse_experiment(
        "blend-vs-route: route=50,blend(vocals=0.7)=50", Ensemble("refine", always=True)
    )
    seen = set()
    for stems in (["vocals"], ["drums"], ["bass", "piano"], ["guitar"], ["other"], ["drums"]):
        request = await new_request(db)
        await db.set_selection(request.id, stems)
        planned = await start(db, queue, request, max_active_jobs=10, experiment=experiment)
        assert isinstance(planned, PlannedJob)
        variant = assign_variant(experiment, request.id, stems)
        assert (planned.experiment, planned.variant) == ("blend-vs-route", variant)
        job = await db.get_job(planned.job_id)
        assert job is not None
        assert (job.experiment, job.variant) == ("blend-vs-route", variant.name)
        payload = (await queued_kwargs(redis_url, planned.job_id))["ensemble"]
        assert payload == variant.ensemble.to_dict()
        assert Ensemble.from_dict(payload) == variant.ensemble
        seen.add(variant.name)
    assert seen == {"route", "blend(vocals=0.7)"}, "six picks fall into both variants"


def store_result(redis_url: str, job_id: str) -> None:
    """Store a successful result of ``job_id`` as arq's worker does when the job returns."""
    now = int(time.time() * 1000)
    result = serialize_result(
        SEPARATE_JOB, (), {}, 1, now, True, JobOutcome(("bass", "no_bass"), 3.0).to_result(),
        now, now, f"{job_id}:separate", "arq:queue", job_id,
    )  # fmt: skip
    assert result is not None
    with redis_client(redis_url) as client:
        client.set(result_key_prefix + job_id, result)


@pytest.mark.parametrize("over", ["tracks delivered", "outcome stored"])
async def test_a_job_over_for_the_user_frees_the_next_pick_before_it_is_recorded(
    db: Database, queue: QueueClient, redis_url: str, over: str
) -> None:
    first, second = await new_request(db), await new_request(db)
    for request in (first, second):
        await db.set_selection(request.id, ["bass"])
    planned = await start(db, queue, first)
    assert isinstance(planned, PlannedJob)
    assert await start(db, queue, second) is NotStarted.TOO_MANY_JOBS
    mark_running(redis_url, planned.job_id)
    assert await start(db, queue, second) is NotStarted.TOO_MANY_JOBS, "running holds its place"
    if over == "tracks delivered":
        # The worker has delivered every track; it is still finishing the job.
        with redis_client(redis_url) as client:
            client.set(delivered_key(planned.job_id), "1")
    else:
        store_result(redis_url, planned.job_id)
    job = await db.get_job(planned.job_id)
    assert job is not None and job.status == "queued", "the watcher has not recorded it yet"
    assert isinstance(await start(db, queue, second), PlannedJob)
    # Both are in SQLite as in flight now; only the new one holds the user's place.
    assert await db.active_job_count(USER) == 2
    third = await new_request(db)
    await db.set_selection(third.id, ["bass"])
    assert await start(db, queue, third) is NotStarted.TOO_MANY_JOBS


async def test_a_job_id_enqueued_again_has_delivered_nothing_yet(
    db: Database, queue: QueueClient, redis_url: str
) -> None:
    request, other = await new_request(db), await new_request(db)
    for each in (request, other):
        await db.set_selection(each.id, ["drums"])
    job_id = separation_job_id(request.id, ["drums"])
    # An earlier job of this id delivered, and arq has forgotten its result since.
    with redis_client(redis_url) as client:
        client.set(delivered_key(job_id), "1")
    assert isinstance(await start(db, queue, request), PlannedJob)
    assert await start(db, queue, other) is NotStarted.TOO_MANY_JOBS
