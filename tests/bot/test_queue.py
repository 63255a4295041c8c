"""The bot's arq client on a real Redis: deterministic ids, positions, unreachable Redis."""

from __future__ import annotations

import pytest

from bot.queue import QueueClient, QueueUnavailable
from common.jobs import SeparationJob, separation_job_id
from tests.support.redis_server import free_port, mark_running, redis_client


def job(request_id: int, stems: tuple[str, ...] = ("vocals",)) -> SeparationJob:
    return SeparationJob(
        request_id=request_id, chat_id=1, user_id=1, file_id="F", song_name="s",
        stems=stems, status_message_id=9,
    )  # fmt: skip


async def test_same_request_and_stems_enqueue_once(redis_url: str) -> None:
    queue = QueueClient(redis_url)
    try:
        assert await queue.enqueue(job(1, ("vocals", "drums")))
        assert not await queue.enqueue(job(1, ("drums", "vocals")))
        assert await queue.enqueue(job(1, ("drums",)))
        ids = [separation_job_id(1, ["drums", "vocals"]), separation_job_id(1, ["drums"])]
        snapshot = await queue.snapshot([*ids, "sep:404:vocals"])
        assert [snapshot.states[i].state for i in ids] == ["queued", "queued"]
        # Two enqueues within one millisecond share a score; then Redis orders by id.
        assert sorted(snapshot.states[i].position or 0 for i in ids) == [1, 2]
        assert snapshot.states["sep:404:vocals"].state == "missing"
        assert snapshot.waiting == 2
    finally:
        await queue.close()


async def test_positions_skip_jobs_already_running(redis_url: str) -> None:
    queue = QueueClient(redis_url)
    ids = [separation_job_id(request_id, ["vocals"]) for request_id in (1, 2, 3)]
    try:
        for request_id in (1, 2, 3):
            await queue.enqueue(job(request_id))
        snapshot = await queue.snapshot(ids)
        assert [snapshot.states[i].position for i in ids] == [1, 2, 3]
        assert snapshot.waiting == 3
        mark_running(redis_url, ids[0])
        snapshot = await queue.snapshot(ids)
        assert [snapshot.states[i].state for i in ids] == ["running", "queued", "queued"]
        assert [snapshot.states[i].position for i in ids] == [None, 1, 2]
        assert snapshot.waiting == 2
        assert await queue.started(ids) == {ids[0]}
    finally:
        await queue.close()


def _commands_run(redis_url: str) -> int:
    with redis_client(redis_url) as client:
        stats = client.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


async def test_a_snapshot_costs_commands_linear_in_the_queue(redis_url: str) -> None:
    queue = QueueClient(redis_url)
    ids = [separation_job_id(request_id, ["vocals"]) for request_id in range(100, 140)]
    try:
        for request_id in range(100, 140):
            await queue.enqueue(job(request_id))
        before = _commands_run(redis_url)
        snapshot = await queue.snapshot(ids)
        spent = _commands_run(redis_url) - before
    finally:
        await queue.close()
    assert sorted(state.position or 0 for state in snapshot.states.values()) == list(range(1, 41))
    # zrange + (get, exists) per followed job + exists per queued job, + the INFO call.
    assert spent <= 1 + 2 * len(ids) + len(ids) + 1


async def test_unreachable_redis_raises_queue_unavailable() -> None:
    queue = QueueClient(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(QueueUnavailable):
            await queue.enqueue(job(1))
        with pytest.raises(QueueUnavailable):
            await queue.snapshot(["sep:1:vocals"])
    finally:
        await queue.close()
