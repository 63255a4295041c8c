"""The bot's arq client on a real Redis: deterministic ids, positions, unreachable Redis."""

from __future__ import annotations

import pytest
import redis

from bot.jobs import SeparationJob, separation_job_id
from bot.queue import QueueClient, QueueUnavailable
from tests.support.redis_server import free_port


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
        state = await queue.state(separation_job_id(1, ["drums", "vocals"]))
        assert (state.state, state.position) == ("queued", 1)
        assert (await queue.state("sep:404:vocals")).state == "missing"
    finally:
        await queue.close()


async def test_positions_skip_jobs_already_running(redis_url: str) -> None:
    queue = QueueClient(redis_url)
    try:
        for request_id in (1, 2, 3):
            await queue.enqueue(job(request_id))
        assert await queue.waiting_count() == 3
        assert await queue.position(separation_job_id(3, ["vocals"])) == 3
        client = redis.Redis.from_url(redis_url)
        try:
            client.set(f"arq:in-progress:{separation_job_id(1, ['vocals'])}", b"1", px=60_000)
        finally:
            client.close()
        assert (await queue.state(separation_job_id(1, ["vocals"]))).state == "running"
        assert await queue.position(separation_job_id(3, ["vocals"])) == 2
        assert await queue.waiting_count() == 2
        assert await queue.position("sep:404:vocals") is None
    finally:
        await queue.close()


async def test_unreachable_redis_raises_queue_unavailable() -> None:
    queue = QueueClient(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(QueueUnavailable):
            await queue.enqueue(job(1))
        with pytest.raises(QueueUnavailable):
            await queue.state("sep:1:vocals")
    finally:
        await queue.close()
