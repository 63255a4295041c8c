"""The worker's pieces that need no Telegram: edit spacing, progress feed, ledger, policy."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TimedOut

from common.settings import Settings
from common.telegram import retry_after_s
from worker import texts
from worker.delivery import DeliveryLedger, delivered_all, ledger_key
from worker.policy import arq_job_timeout_s, is_transient, job_deadline_s, retry_delay_s
from worker.progress import EditThrottle, ProgressFeed


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_spaces_edits_per_chat() -> None:
    clock = FakeClock()
    throttle = EditThrottle(3.0, clock=clock)
    assert throttle.wait_s(1) == 0.0
    throttle.record(1)
    assert throttle.wait_s(1) == pytest.approx(3.0)
    assert throttle.wait_s(2) == 0.0, "another chat has its own budget"
    clock.now += 2.0
    assert throttle.wait_s(1) == pytest.approx(1.0)
    clock.now += 1.0
    assert throttle.wait_s(1) == 0.0
    throttle.record(2)
    assert throttle.tracked_chats() == {2}, "chats whose wait is over are forgotten"


def test_throttle_backs_off_for_retry_after() -> None:
    clock = FakeClock()
    throttle = EditThrottle(3.0, clock=clock)
    throttle.back_off(7, 20.0)
    assert throttle.wait_s(7) == pytest.approx(20.0)
    throttle.back_off(7, 1.0)
    assert throttle.wait_s(7) == pytest.approx(20.0), "a shorter request never shortens a wait"


def test_retry_after_seconds_in_either_form() -> None:
    assert retry_after_s(RetryAfter(7)) == 7.0
    assert retry_after_s(RetryAfter(timedelta(seconds=3))) == 3.0


def test_progress_feed_is_clamped_and_never_goes_back() -> None:
    feed = ProgressFeed()
    feed(0.4)
    feed(0.2)
    assert feed.fraction == 0.4
    feed(1.7)
    assert feed.fraction == 1.0
    assert texts.separating(0.426) == "🎛 Separating… 42%"
    assert texts.separating(1.0).endswith("100%")


def test_done_text_names_the_time_taken() -> None:
    assert texts.done(4.2, 2) == "✅ Done in 4 s: 2 tracks sent."
    assert "2 min 5 s" in texts.done(125, 7)


def test_transient_errors_and_backoff(make_settings: Callable[..., Settings]) -> None:
    transient = (RetryAfter(3), TimedOut(), NetworkError("Bad Gateway"), RedisConnectionError())
    permanent = (
        BadRequest("Bad Request: chat not found"),
        Forbidden("blocked"),
        NetworkError("Request Entity Too Large (413)"),
        ValueError(),
    )
    assert all(is_transient(exc) for exc in transient)
    assert not any(is_transient(exc) for exc in permanent)
    settings = make_settings(retry_backoff_s=2.0, retry_backoff_max_s=10.0)
    assert [retry_delay_s(settings, n) for n in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 10.0, 10.0]
    assert retry_delay_s(settings, 1, at_least=30.0) == 30.0


def test_deadline_scales_with_duration_and_arq_timeout_covers_the_longest(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(
        job_timeout_base_s=60.0, job_timeout_per_audio_s=2.0, max_duration_s=600
    )
    assert job_deadline_s(settings, 10.0) == 80.0
    assert job_deadline_s(settings, 300.0) == 660.0
    assert arq_job_timeout_s(settings) > job_deadline_s(settings, 600.0)
    # A job may wait for the device behind the others of its worker: arq's timeout allows it.
    pipelined = make_settings(
        job_timeout_base_s=60.0, job_timeout_per_audio_s=2.0, max_duration_s=600, worker_max_jobs=3
    )
    assert arq_job_timeout_s(pipelined) > 3 * job_deadline_s(pipelined, 600.0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_ledger_records_and_keeps_the_first_value(redis: Redis) -> None:
    ledger = DeliveryLedger(redis, "demix:delivery:test", ttl_s=60)
    assert await ledger.load() == {}
    await ledger.record("album:vocals", "[11, 12]")
    assert await ledger.record_once("started_at", "1.5") == "1.5"
    assert await ledger.record_once("started_at", "9.9") == "1.5"
    assert await ledger.load() == {"album:vocals": "[11, 12]", "started_at": "1.5"}
    assert 0 < await redis.ttl("demix:delivery:test") <= 60


def test_ledger_key_separates_enqueues_of_the_same_job_id() -> None:
    first = datetime(2026, 1, 1, 12, 0, 0, 123000, tzinfo=UTC)
    key = ledger_key("sep:1:vocals", first)
    assert key == "demix:delivery:sep:1:vocals:1767268800123"
    # A re-run reads the enqueue time back from arq, maybe in another zone: the same ledger.
    assert ledger_key("sep:1:vocals", first.astimezone(timezone(timedelta(hours=5)))) == key
    # Enqueued again later, or another job: another ledger.
    assert ledger_key("sep:1:vocals", first + timedelta(milliseconds=1)) != key
    assert ledger_key("sep:1:vocals", first + timedelta(days=2)) != key
    assert ledger_key("sep:2:vocals", first) != key


def test_delivered_all_needs_every_album_or_track() -> None:
    two = ("vocals", "no_vocals")
    assert not delivered_all(two, {})
    assert not delivered_all(two, {"rating": "5"})
    assert delivered_all(two, {"album:vocals": "[1, 2]"})
