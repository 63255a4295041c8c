"""Leases on real parts: a running job's claim is short and renewed; a worker that dies,
is partitioned from Redis, loses Redis's data, is told to stop or has a stuck device gives
the job up, and another worker resumes it. Each ends in one delivery per track and a true
status."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from arq.connections import ArqRedis
from arq.constants import in_progress_key_prefix
from arq.jobs import Job, JobStatus
from redis.asyncio import Redis

from bot.texts import JOB_LOST
from common.jobs import SEPARATE_JOB
from common.settings import Settings
from separation import EnsembleSeparator, SeparationCancelled
from tests.bot.conftest import press, running_bot
from tests.bot.test_end_to_end import pick_and_separate
from tests.support.audio import make_song
from tests.support.fake_bot_api import FakeBotApi
from tests.support.processes import demix_process
from tests.support.redis_proxy import RedisProxy
from tests.support.redis_server import redis_client
from tests.support.waiting import async_wait_until
from tests.support.workers import running_worker
from tests.worker.conftest import (
    LEASE_S,
    Submitted,
    rating_messages,
    status_texts,
    submit,
    worker_env,
)
from worker import texts
from worker.app import DemixWorker
from worker.lease import STOP_MARGIN, LeaseKeeper, LeaseLost

RESUMED = "Resumed after an interruption"
TWO_TRACKS = ["Test Song - vocals.mp3", "Test Song - no_vocals.mp3"]


def track_names(api: FakeBotApi, submitted: Submitted) -> list[str | None]:
    return [m.file_name for m in api.audio_messages(submitted.job.chat_id)]


def separating(api: FakeBotApi, submitted: Submitted) -> Callable[[], bool]:
    return lambda: any(t and "Separating" in t for t in status_texts(api, submitted))


def claim_key(submitted: Submitted) -> str:
    return in_progress_key_prefix + submitted.job_id


async def complete(pool: ArqRedis, submitted: Submitted) -> bool:
    return await Job(submitted.job_id, pool).status() == JobStatus.complete


def leases_lost(worker: Any, reason: str) -> float:
    """The worker's count of leases lost for ``reason`` (its Prometheus counter)."""
    metrics = cast(DemixWorker, worker).metrics
    assert metrics is not None
    value = metrics.registry.get_sample_value("demix_worker_leases_lost_total", {"reason": reason})
    return value or 0.0


def assert_delivered_once(api: FakeBotApi, submitted: Submitted) -> None:
    assert track_names(api, submitted) == TWO_TRACKS
    assert len(rating_messages(api, submitted.job.chat_id)) == 1
    final = status_texts(api, submitted)[-1] or ""
    assert final.startswith("✅ Done"), final


@pytest.fixture
def long_song(tmp_path: Path) -> Path:
    """Long enough (tiny models: a few seconds) that a test can act while it separates."""
    return make_song(tmp_path / "Test Song.mp3", seconds=30.0, seed=41)


class SlowSeparator:
    """The real separator, except that a pass started after :attr:`slow` is set runs until it
    is told to stop (at a chunk boundary, as a long song's pass does)."""

    def __init__(self, real: EnsembleSeparator) -> None:
        self.real = real
        self.slow = threading.Event()
        self.entered_slow = threading.Event()

    def warm_up(self) -> None:
        self.real.warm_up()

    def separate_to_files(self, *args: Any, **kwargs: Any) -> Any:
        if not self.slow.is_set():
            return self.real.separate_to_files(*args, **kwargs)
        self.entered_slow.set()
        should_cancel = kwargs["should_cancel"]
        while not should_cancel():
            time.sleep(0.05)
        raise SeparationCancelled("stopped at a chunk boundary")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def slow(separator: EnsembleSeparator) -> SlowSeparator:
    return SlowSeparator(separator)


# --- the keeper alone ------------------------------------------------------------------------


async def test_a_lease_is_renewed_and_lost_when_its_claim_is_gone_or_someone_elses(
    redis_url: str,
) -> None:
    redis = Redis.from_url(redis_url)
    losses: list[tuple[str, LeaseLost]] = []
    keeper = LeaseKeeper(redis, lease_s=1.0)
    try:
        for job in ("a", "b", "c"):
            await redis.set(keeper.key(job), b"1", px=1000)  # arq's claim
            assert await keeper.take(job, lambda why, job=job: losses.append((job, why)))
        assert await redis.get(keeper.key("a")) == keeper.token.encode()
        await redis.delete(keeper.key("b"))  # Redis lost its data
        await redis.set(keeper.key("c"), b"another-worker", px=1000)
        await keeper.renew_all()
        assert losses == [("b", LeaseLost.GONE), ("c", LeaseLost.GONE)]
        assert 900 < await redis.pttl(keeper.key("a")) <= 1000, "renewed to a whole lease"
        assert await redis.get(keeper.key("c")) == b"another-worker", "not taken over"
        assert keeper.check("a") and not keeper.check("b")
        assert keeper.release("b") is LeaseLost.GONE and keeper.release("a") is None
        assert not await keeper.take("d", lambda why: None), "no claim to take"
    finally:
        await redis.aclose()


async def test_a_lease_that_cannot_be_renewed_is_given_up_before_it_lapses(
    redis_url: str,
) -> None:
    proxy = RedisProxy(redis_url)
    async with proxy.running():
        redis = Redis.from_url(proxy.url, socket_timeout=0.2, socket_connect_timeout=0.2)
        lost = asyncio.get_running_loop().create_future()
        keeper = LeaseKeeper(redis, lease_s=1.2)
        try:
            await redis.set(keeper.key("a"), b"1", px=1200)
            assert await keeper.take("a", lost.set_result)
            taken = asyncio.get_running_loop().time()
            runner = asyncio.create_task(keeper.run())
            proxy.partition()
            assert await asyncio.wait_for(lost, timeout=5) is LeaseLost.UNREACHABLE
            given_up_after = asyncio.get_running_loop().time() - taken
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
        finally:
            proxy.heal()
            await redis.aclose()
    # Before the lease lapses (the last confirmation was the take, or a renewal after it).
    assert given_up_after < 1.2, given_up_after
    assert given_up_after >= 1.2 * (1 - STOP_MARGIN) - 0.05, given_up_after


# --- workers that die, are cut off, lose Redis, stop or hang ---------------------------------


@pytest.mark.slow
async def test_a_worker_killed_mid_separation_its_job_resumes_on_the_other_within_two_leases(
    fake_bot_api: FakeBotApi,
    pool: ArqRedis,
    redis_url: str,
    model_repo: Path,
    long_song: Path,
    tmp_path: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, long_song, ("vocals",))
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    # Two machines: a cache each, so the survivor separates the song itself.
    envs = [
        {
            **worker_env(fake_bot_api, redis_url, model_repo, tmp_path),
            "DEMIX_MAX_DURATION_S": "60",
            "DEMIX_JOB_TIMEOUT_BASE_S": "120",
            "DEMIX_PROGRESS_EDIT_INTERVAL_S": "0.2",
            "DEMIX_CACHE_DIR": str(tmp_path / f"cache-{n}"),
        }
        for n in (1, 2)
    ]
    loop = asyncio.get_running_loop()
    with (
        demix_process("worker", env=envs[0], cwd=tmp_path, log=logs[0]) as first,
        demix_process("worker", env=envs[1], cwd=tmp_path, log=logs[1]) as second,
    ):
        await async_wait_until(
            separating(fake_bot_api, submitted), timeout=120, what="the separation to start"
        )
        holder_token = await pool.get(claim_key(submitted))
        holder, survivor = (
            (first, second) if "job started" in logs[0].read_text() else (second, first)
        )
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        killed_at = loop.time()

        async def taken_over() -> bool:
            token = await pool.get(claim_key(submitted))
            return token is not None and token != holder_token

        await async_wait_until(taken_over, timeout=6 * LEASE_S, what="another worker's claim")
        resumed_in = loop.time() - killed_at
        await async_wait_until(
            lambda: complete(pool, submitted), timeout=120, what="the resumed job to finish"
        )
        assert survivor.poll() is None
    assert resumed_in <= 2 * LEASE_S, resumed_in
    assert_delivered_once(fake_bot_api, submitted)
    shown = [t or "" for t in status_texts(fake_bot_api, submitted)]
    resumed = [t for t in shown if RESUMED in t]
    assert resumed and any("Separating" in t for t in resumed), shown
    assert RESUMED in shown[-1], "the final status says it was resumed"
    assert "job resumed" in (logs[1] if holder is first else logs[0]).read_text()


async def test_a_worker_cut_off_from_redis_stops_and_another_delivers_once(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    redis_url: str,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    slow: SlowSeparator,
    song: Path,
) -> None:
    lease_s = 2.0
    slow.slow.set()
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    proxy = RedisProxy(redis_url)
    cut_off = service_settings(redis_url=proxy.url, job_lease_s=lease_s)
    healthy = service_settings(job_lease_s=lease_s)
    loop = asyncio.get_running_loop()
    async with proxy.running(), running_worker(cut_off, slow) as first:
        try:
            await async_wait_until(slow.entered_slow.is_set, timeout=60, what="the separation")
            proxy.partition()
            partitioned_at = loop.time()
            await async_wait_until(
                lambda: leases_lost(first, "unreachable") == 1,
                timeout=3 * lease_s,
                what="the cut-off worker to give its lease up",
            )
            stopped_in = loop.time() - partitioned_at
            await async_wait_until(lambda: not first.job_tasks, timeout=15, what="its job to stop")
            sent_by_first = len(fake_bot_api.audio_messages(submitted.job.chat_id))
            async with running_worker(healthy, separator) as second:
                await async_wait_until(
                    lambda: complete(pool, submitted), timeout=90, what="the other worker"
                )
            assert second.jobs_complete == 1
        finally:
            proxy.heal()
    assert stopped_in < lease_s, "stopped before its lease could lapse"
    assert sent_by_first == 0
    assert_delivered_once(fake_bot_api, submitted)
    assert len(fake_bot_api.calls("sendMediaGroup")) == 1


async def test_redis_flushed_mid_job_the_running_job_stops_and_a_repress_delivers_once(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    redis_url: str,
    pool: ArqRedis,
    slow: SlowSeparator,
    song: Path,
) -> None:
    settings = service_settings(job_lease_s=2.0, worker_max_jobs=1)
    slow.slow.set()
    running = await submit(fake_bot_api, pool, song, ("vocals",))
    async with running_worker(settings, slow) as worker:
        await async_wait_until(slow.entered_slow.is_set, timeout=60, what="the separation")
        await pool.flushdb()  # Redis restarted without persistence
        await async_wait_until(
            lambda: leases_lost(worker, "gone") == 1,
            timeout=10,
            what="the worker to find its lease gone",
        )
        await async_wait_until(lambda: not worker.job_tasks, timeout=15, what="the job to stop")
        assert fake_bot_api.audio_messages(running.job.chat_id) == []
        slow.slow.clear()
        # The user presses Separate again: the bot enqueues the same job id anew.
        assert await pool.enqueue_job(
            SEPARATE_JOB, _job_id=running.job_id, **running.job.to_kwargs()
        )
        await async_wait_until(lambda: complete(pool, running), timeout=90, what="the re-press")
    assert worker.jobs_failed == 0
    assert_delivered_once(fake_bot_api, running)
    assert len(fake_bot_api.calls("sendMediaGroup")) == 1, "the first run sent nothing"


async def test_sigterm_gives_back_a_separating_job_at_once_and_lets_a_sending_one_finish(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    slow: SlowSeparator,
    song: Path,
) -> None:
    settings = service_settings(worker_max_jobs=2, worker_stop_grace_s=20)
    # A slow upload: the first job is still sending when the second one separates.
    fake_bot_api.set_latency("sendMediaGroup", 5.0)
    sending = await submit(fake_bot_api, pool, song, ("vocals",), user_id=9001)
    async with running_worker(settings, slow) as worker:
        await async_wait_until(
            lambda: fake_bot_api.arrived("sendMediaGroup") >= 1, timeout=60, what="an upload"
        )
        slow.slow.set()
        separating_job = await submit(fake_bot_api, pool, song, ("vocals",), user_id=9002)
        await async_wait_until(slow.entered_slow.is_set, timeout=30, what="the second pass")
        assert not await complete(pool, sending), "still sending when told to stop"
        loop = asyncio.get_running_loop()
        told = loop.time()
        worker.handle_sig(signal.SIGTERM)

        async def given_back() -> bool:
            return not await pool.exists(claim_key(separating_job))

        await async_wait_until(given_back, timeout=10, what="the separating job given back")
        given_back_in = loop.time() - told
        await async_wait_until(lambda: complete(pool, sending), timeout=30, what="the send")
    assert given_back_in < 3, given_back_in
    assert await Job(separating_job.job_id, pool).status() == JobStatus.queued
    assert_delivered_once(fake_bot_api, sending)
    fake_bot_api.set_latency("sendMediaGroup", 0)
    async with running_worker(settings, separator, burst=True) as resumer:
        pass
    assert resumer.jobs_complete == 1
    assert_delivered_once(fake_bot_api, separating_job)
    assert any(RESUMED in (t or "") for t in status_texts(fake_bot_api, separating_job))


class HangingSeparator:
    """A separator whose model pass never returns and ignores every request to stop (a hung
    driver), until the test lets it go."""

    def __init__(self, real: EnsembleSeparator) -> None:
        self.real = real
        self.release = threading.Event()
        self.entered = threading.Event()

    def warm_up(self) -> None:
        self.real.warm_up()

    def separate_to_files(self, *args: Any, **kwargs: Any) -> Any:
        self.entered.set()
        self.release.wait()
        raise RuntimeError("released by the test")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@pytest.fixture
def hanging(separator: EnsembleSeparator) -> Iterator[HangingSeparator]:
    stuck = HangingSeparator(separator)
    yield stuck
    stuck.release.set()


async def test_a_stuck_device_hands_the_job_on_and_the_worker_exits_to_be_replaced(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    hanging: HangingSeparator,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    # The deadline of a 3 s song: 2 s + 0.5 s per audio second.
    settings = service_settings(job_timeout_base_s=2.0, job_timeout_per_audio_s=0.5)
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    async with running_worker(settings, hanging) as stuck:
        await async_wait_until(hanging.entered.is_set, timeout=30, what="the hung pass")
        await async_wait_until(
            lambda: stuck.main_task is not None and stuck.main_task.done(),
            timeout=30,
            what="the worker to stop",
        )
    assert cast(DemixWorker, stuck).exit_code == 70
    assert stuck.jobs_retried == 1 and stuck.jobs_failed == 0
    handed_on = [t for t in status_texts(fake_bot_api, submitted) if t]
    assert any("stopped responding" in t for t in handed_on), handed_on
    async with running_worker(settings, separator, burst=True) as replacement:
        pass
    assert replacement.jobs_complete == 1
    assert_delivered_once(fake_bot_api, submitted)


def test_the_handed_on_text_is_translated() -> None:
    from common.i18n import translate

    assert translate(texts.HANDED_ON, "ru") != texts.HANDED_ON
    assert translate(texts.RESUMED, "ru") != texts.RESUMED


@pytest.mark.slow
async def test_a_worker_killed_while_telegram_holds_its_whole_upload_is_not_sent_again(
    fake_bot_api: FakeBotApi,
    pool: ArqRedis,
    redis_url: str,
    model_repo: Path,
    song: Path,
    tmp_path: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    env = worker_env(fake_bot_api, redis_url, model_repo, tmp_path)
    # Telegram takes its time over the album: the worker dies after sending it whole, before
    # the answer. Telegram acts on it all the same (the fake Bot API does too).
    fake_bot_api.set_latency("sendMediaGroup", 3.0)

    async def noted_as_sent_whole() -> bool:
        for key in await pool.keys("demix:delivery:*"):
            if await pool.hget(key, "album:vocals") == b"unconfirmed":  # type: ignore[misc]
                return True
        return False

    with demix_process("worker", env=env, cwd=tmp_path, log=tmp_path / "w1.log") as first:
        await async_wait_until(noted_as_sent_whole, timeout=60, what="the album sent whole")
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    fake_bot_api.set_latency("sendMediaGroup", 0)
    await async_wait_until(
        lambda: len(fake_bot_api.audio_messages(submitted.job.chat_id)) == 2,
        timeout=10,
        what="Telegram to act on the dead worker's album",
    )
    with demix_process("worker", env=env, cwd=tmp_path, log=tmp_path / "w2.log"):
        await async_wait_until(
            lambda: complete(pool, submitted), timeout=60, what="the restarted worker"
        )
    assert fake_bot_api.arrived("sendMediaGroup") == 1, "the album was not sent again"
    assert_delivered_once(fake_bot_api, submitted)
    final = status_texts(fake_bot_api, submitted)[-1] or ""
    assert "did not confirm" in final and RESUMED in final, final


async def test_redis_flushed_with_one_job_running_and_one_queued_each_user_is_told_once(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    redis_url: str,
    separator: EnsembleSeparator,
    slow: SlowSeparator,
    song: Path,
) -> None:
    api = fake_bot_api
    runner, waiter = 311, 312
    settings = service_settings(job_lease_s=2.0, worker_max_jobs=1)
    slow.slow.set()
    async with running_bot(settings), running_worker(settings, slow) as worker:
        song_r, song_w = api.send_audio(runner, song), api.send_audio(waiter, song)
        picker = await pick_and_separate(api, runner, song_r, ["vocals"])
        await async_wait_until(slow.entered_slow.is_set, timeout=60, what="a separation")
        await pick_and_separate(api, waiter, song_w, ["vocals"])
        await async_wait_until(
            lambda: api.last_message(waiter, containing="Queued"), what="the second job queued"
        )
        with redis_client(redis_url) as client:
            client.flushdb()  # Redis restarted without persistence
        for user in (runner, waiter):
            await async_wait_until(
                lambda user=user: api.last_message(user, containing=JOB_LOST),
                timeout=30,
                what=f"user {user} told the job was lost",
            )
        await async_wait_until(lambda: not worker.job_tasks, timeout=15, what="the job to stop")
        assert leases_lost(worker, "gone") == 1
        slow.slow.clear()
        # The runner presses Separate again, as the message says: one delivery.
        answer = await press(api, runner, picker, picker.button("Separate").callback_data or "")
        assert not answer.show_alert, answer.text
        await async_wait_until(
            lambda: api.last_message(runner, containing="Done"), timeout=60, what="the re-press"
        )
    for user in (runner, waiter):
        told = [
            call
            for call in api.calls("editMessageText")
            if call.ok and call.params.get("chat_id") == user and JOB_LOST in str(call.params)
        ]
        assert len(told) == 1, (user, told)
    assert len(api.audio_messages(runner)) == 2, "one album, from the re-press"
    assert api.audio_messages(waiter) == []
    assert len(api.calls("sendMediaGroup")) == 1
