"""Faults around a job, on real parts: Telegram failing (429, 5xx, timeouts, 403, a deleted
status message), Redis killed and restarted mid-job, a full or unwritable disk, two workers
on one Redis. Each ends in one delivery or a clear final message, never a second delivery,
and the worker goes on serving the next user."""

from __future__ import annotations

import itertools
import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.jobs import Job, JobStatus

from common.jobs import FailureReason, JobFailed
from common.settings import Settings
from separation import EnsembleSeparator
from tests.support.audio import make_song
from tests.support.fake_bot_api import FakeBotApi
from tests.support.processes import demix_process
from tests.support.redis_proxy import RedisProxy
from tests.support.redis_server import RedisServer
from tests.support.separators import make_separator
from tests.support.waiting import async_wait_until
from tests.support.workers import run_worker_burst, running_worker
from tests.worker.conftest import (
    Submitted,
    rating_messages,
    result_of,
    status_texts,
    submit,
    worker_env,
)
from worker import texts

TWO_TRACKS = ["Test Song - vocals.mp3", "Test Song - no_vocals.mp3"]
# The worker's Bot API read timeout in these tests; a stall outlasts it.
READ_TIMEOUT_S = 1.0
STALL_S = 2.5
_users = itertools.count(700)


def track_names(api: FakeBotApi, submitted: Submitted) -> list[str | None]:
    return [m.file_name for m in api.audio_messages(submitted.job.chat_id)]


def final_status(api: FakeBotApi, submitted: Submitted) -> str:
    return status_texts(api, submitted)[-1] or ""


def to_chat(chat_id: int) -> Callable[[dict[str, Any]], bool]:
    """A fault filter: calls addressed to ``chat_id`` only."""
    return lambda params: str(params.get("chat_id")) == str(chat_id)


@pytest.mark.parametrize(
    ("method", "fault"),
    [
        ("sendMediaGroup", {"status": 429, "retry_after": 2}),
        ("sendMediaGroup", {"status": 500}),
        ("download", {"status": 503}),
        ("getFile", {"stall": False}),
        ("download", {"stall": True}),
    ],
    ids=["upload-429", "upload-500", "download-503", "getFile-timeout", "download-timeout"],
)
async def test_a_transient_telegram_fault_ends_in_one_delivery(
    method: str,
    fault: dict[str, Any],
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    settings = service_settings(telegram_read_timeout_s=READ_TIMEOUT_S)
    if "stall" in fault:
        fake_bot_api.stall_next(method, STALL_S, applied=fault["stall"])
    else:
        fake_bot_api.fail_next(method, **fault)
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 0, 1)
    assert track_names(fake_bot_api, submitted) == TWO_TRACKS
    assert len(rating_messages(fake_bot_api, submitted.job.chat_id)) == 1
    assert final_status(fake_bot_api, submitted).startswith("✅ Done")
    assert texts.UNCONFIRMED not in final_status(fake_bot_api, submitted)
    if fault.get("status") == 429:
        uploads = fake_bot_api.calls("sendMediaGroup")
        assert uploads[1].at - uploads[0].at >= fault["retry_after"] - 0.1, "retry_after kept"


@pytest.mark.parametrize("telegram_acted", [True, False], ids=["acted", "dropped"])
async def test_an_unanswered_upload_is_not_sent_again(
    telegram_acted: bool,
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    """A read timeout on an upload: Telegram may have the album. It is not sent again; the
    final status says a track may be missing and what to do."""
    settings = service_settings(telegram_read_timeout_s=READ_TIMEOUT_S)
    fake_bot_api.stall_next("sendMediaGroup", STALL_S, applied=telegram_acted)
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 0, 0)
    await async_wait_until(
        lambda: len(fake_bot_api.calls("sendMediaGroup")) == 1,
        timeout=STALL_S + 5,
        what="the stalled upload to be answered",
    )
    assert track_names(fake_bot_api, submitted) == (TWO_TRACKS if telegram_acted else [])
    assert len(fake_bot_api.calls("sendMediaGroup")) == 1, "never a second album"
    final = final_status(fake_bot_api, submitted)
    assert final.startswith("✅ Done") and final.endswith(texts.UNCONFIRMED)
    assert len(rating_messages(fake_bot_api, submitted.job.chat_id)) == 1


async def test_a_user_who_blocked_the_bot_fails_once_and_the_next_user_is_served(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    blocked_user, next_user = next(_users), next(_users)
    blocked = await submit(fake_bot_api, pool, song, ("vocals",), user_id=blocked_user)
    served = await submit(fake_bot_api, pool, song, ("vocals",), user_id=next_user)
    fake_bot_api.block_bot(blocked_user)
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 1, 0)
    info = await result_of(pool, blocked.job_id)
    assert isinstance(info.result, JobFailed) and info.result.reason is FailureReason.FORBIDDEN
    assert not fake_bot_api.audio_messages(blocked.job.chat_id)
    blocked_uploads = [
        c for c in fake_bot_api.calls("sendMediaGroup") if to_chat(blocked.job.chat_id)(c.params)
    ]
    assert len(blocked_uploads) == 1 and blocked_uploads[0].status == 403, "tried once"
    assert track_names(fake_bot_api, served) == TWO_TRACKS


async def test_a_deleted_status_message_does_not_stop_the_tracks(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    async with fake_bot_api.bot() as bot:
        assert await bot.delete_message(submitted.job.chat_id, submitted.job.status_message_id)
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 0, 0)
    assert track_names(fake_bot_api, submitted) == TWO_TRACKS
    assert len(rating_messages(fake_bot_api, submitted.job.chat_id)) == 1
    refused = [c for c in fake_bot_api.calls("editMessageText") if not c.ok]
    assert refused and all(c.status == 400 for c in refused)


async def test_two_workers_on_one_redis_deliver_each_job_once(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    model_repo: Path,
    song: Path,
    tmp_path: Path,
) -> None:
    settings = service_settings(worker_max_jobs=1)
    users = [next(_users) for _ in range(6)]
    jobs = [await submit(fake_bot_api, pool, song, ("vocals",), user_id=u) for u in users]
    # Two worker processes' worth: each its own models and cache, as on two machines.
    separators = [make_separator(model_repo, cache_dir=tmp_path / f"cache-{n}") for n in (1, 2)]
    async with (
        running_worker(settings, separators[0], burst=True) as first,
        running_worker(settings, separators[1], burst=True) as second,
    ):
        pass
    assert first.jobs_complete + second.jobs_complete == len(jobs)
    assert first.jobs_complete and second.jobs_complete, "both workers took jobs"
    for submitted in jobs:
        assert track_names(fake_bot_api, submitted) == TWO_TRACKS
        assert len(rating_messages(fake_bot_api, submitted.job.chat_id)) == 1
    assert len(fake_bot_api.calls("sendMediaGroup")) == len(jobs)


async def test_redis_killed_and_restarted_mid_job_delivers_once(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    restartable_redis: RedisServer,
    separator: EnsembleSeparator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.app")
    settings = service_settings(redis_url=restartable_redis.url)
    own_pool = await create_pool(RedisSettings.from_dsn(restartable_redis.url))
    # Long enough to kill Redis while it separates; fresh, so the cache cannot answer.
    long_song = make_song(tmp_path / "Test Song.mp3", seconds=40.0, seed=31)
    submitted = await submit(fake_bot_api, own_pool, long_song, ("vocals",))
    await own_pool.aclose()

    def separating() -> bool:
        return any(t and "Separating" in t for t in status_texts(fake_bot_api, submitted))

    async with running_worker(settings, separator, burst=True) as worker:
        await async_wait_until(separating, timeout=60, what="separation to start")
        # Several crashes, so some land in the middle of arq's claim of a job (a WATCH).
        for crash in range(1, 4):
            restartable_redis.kill()
            await async_wait_until(
                lambda crash=crash: caplog.text.count("Redis unreachable") >= crash,
                timeout=30,
                what=f"the worker to notice crash {crash}",
            )
            restartable_redis.start()
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    assert worker.job_counter == 0, "every job slot was given back"
    assert track_names(fake_bot_api, submitted) == TWO_TRACKS
    assert len(fake_bot_api.calls("sendMediaGroup")) == 1
    assert len(rating_messages(fake_bot_api, submitted.job.chat_id)) == 1
    assert final_status(fake_bot_api, submitted).startswith("✅ Done")
    restarted_pool = await create_pool(RedisSettings.from_dsn(restartable_redis.url))
    try:
        assert await Job(submitted.job_id, restarted_pool).status() == JobStatus.complete
        assert (await result_of(restarted_pool, submitted.job_id)).success
    finally:
        await restarted_pool.aclose()


async def test_an_unwritable_cache_does_not_fail_the_job(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    model_repo: Path,
    song: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    # A regular file where the cache folder should be: every cache write fails, as root too.
    not_a_folder = tmp_path / "cache-is-a-file"
    not_a_folder.write_bytes(b"")
    cached = make_separator(model_repo, cache_dir=not_a_folder)
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    worker = await run_worker_burst(settings, cached)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    assert track_names(fake_bot_api, submitted) == TWO_TRACKS
    assert "could not write cache entry" in caplog.text


async def test_an_unwritable_work_folder_fails_with_a_message_and_no_retry(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data-is-a-file"
    data_dir.write_bytes(b"")
    settings = service_settings(data_dir=data_dir)
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (0, 1, 0)
    assert final_status(fake_bot_api, submitted) == texts.job_failed(texts.STORAGE)
    info = await result_of(pool, submitted.job_id)
    assert isinstance(info.result, JobFailed) and info.result.reason is FailureReason.STORAGE
    assert info.result.reason.retryable, "Separate may be pressed again once the disk is fixed"


def _small_disk_wrapper(*disks: tuple[Path, int]) -> list[str]:
    """A command prefix that runs the rest in a mount namespace of its own, with a tmpfs of
    ``size_kb`` at each ``(mount_point, size_kb)``: small disks that fill up, for that
    process only."""
    script = (
        'while [ "$1" != -- ]; do mount -t tmpfs -o size="$1"k tmpfs "$2" || exit 1; shift 2; '
        'done; shift; exec "$@"'
    )
    sizes = [str(part) for mount_point, size_kb in disks for part in (size_kb, mount_point)]
    shell = ["sh", "-c", script, "sh", *sizes, "--"]
    return ["unshare", "--mount", "--map-root-user", *shell]


def _can_mount_a_small_disk(tmp_path: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = tmp_path / "probe"
    probe.mkdir()
    done = subprocess.run(
        [*_small_disk_wrapper((probe, 64)), "true"], capture_output=True, timeout=10
    )
    return done.returncode == 0


@pytest.mark.slow
async def test_a_full_disk_fails_the_big_song_and_the_worker_serves_the_next(
    fake_bot_api: FakeBotApi,
    pool: ArqRedis,
    redis_url: str,
    model_repo: Path,
    tmp_path: Path,
) -> None:
    if not _can_mount_a_small_disk(tmp_path):
        pytest.skip("this machine allows no mount namespace (unshare --mount) for a small disk")
    disk = tmp_path / "disk"
    disk.mkdir()
    env = worker_env(fake_bot_api, redis_url, model_repo, tmp_path)
    # Data and cache on an 8.5 MB disk: a 6 s mp3 fits, decoded (2.1 MB), with its two
    # tracks as float32 files (4.2 MB) and as mp3s; a 10 s WAV (1.7 MB) downloads and
    # decodes (3.5 MB), but its tracks (7 MB) do not fit. The cache, which keeps clear of
    # a nearly full disk, takes none of it.
    env.update(DEMIX_DATA_DIR=str(disk / "data"), DEMIX_CACHE_DIR=str(disk / "cache"))
    env.update(DEMIX_MAX_DURATION_S="12")
    big = make_song(tmp_path / "Big Song.wav", seconds=10.0, seed=41)
    small = make_song(tmp_path / "Test Song.mp3", seconds=6.0, seed=42)
    too_big = await submit(fake_bot_api, pool, big, ("vocals",), user_id=next(_users))
    fits = await submit(fake_bot_api, pool, small, ("vocals",), user_id=next(_users))

    async def finished(job_id: str) -> bool:
        return await Job(job_id, pool).status() == JobStatus.complete

    log = tmp_path / "worker.log"
    wrapper = _small_disk_wrapper((disk, 8704))
    with demix_process("worker", env=env, cwd=tmp_path, log=log, wrapper=wrapper):
        for submitted in (too_big, fits):
            await async_wait_until(
                lambda job_id=submitted.job_id: finished(job_id),
                timeout=120,
                what=f"{submitted.job_id} to finish",
            )
    info = await result_of(pool, too_big.job_id)
    assert isinstance(info.result, JobFailed), log.read_text()
    assert info.result.reason is FailureReason.STORAGE
    assert final_status(fake_bot_api, too_big) == texts.job_failed(texts.STORAGE)
    assert not fake_bot_api.audio_messages(too_big.job.chat_id)
    assert (await result_of(pool, fits.job_id)).success, log.read_text()
    assert track_names(fake_bot_api, fits) == TWO_TRACKS
    worker_log = log.read_text()
    assert "cannot write its files" in worker_log and "not caching" in worker_log


async def test_a_worker_started_while_redis_is_down_waits_and_then_serves(
    fake_bot_api: FakeBotApi,
    restartable_redis: RedisServer,
    model_repo: Path,
    song: Path,
    tmp_path: Path,
) -> None:
    restartable_redis.kill()  # its port stays reserved for the restart below
    env = worker_env(fake_bot_api, restartable_redis.url, model_repo, tmp_path)
    env["DEMIX_LOG_FORMAT"] = "json"
    log = tmp_path / "worker.log"
    with demix_process("worker", env=env, cwd=tmp_path, log=log) as process:
        await async_wait_until(
            lambda: log.read_text().count("Redis unreachable") >= 2,
            timeout=60,
            what="a warning per try",
        )
        assert process.poll() is None, "waiting, not exited"
        restartable_redis.start()
        pool = await create_pool(RedisSettings.from_dsn(restartable_redis.url))
        try:
            submitted = await submit(fake_bot_api, pool, song, ("vocals",))
            await async_wait_until(
                lambda: track_names(fake_bot_api, submitted) == TWO_TRACKS,
                timeout=120,
                what="the tracks",
            )
        finally:
            await pool.aclose()


async def test_redis_lost_while_a_job_is_claimed_the_claim_is_tried_again(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    redis_url: str,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="worker.app")
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    proxy = RedisProxy(redis_url)
    async with proxy.running():
        # arq claims a job inside WATCH ... EXEC: the connection goes between the two.
        proxy.cut_once(after=b"WATCH", cut_at=b"EXISTS")
        worker = await run_worker_burst(service_settings(redis_url=proxy.url), separator)
    assert proxy.cuts == 1
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    assert worker.job_counter == 0, "the failed claim gave its slot back"
    assert "it is claimed again" in caplog.text
    assert track_names(fake_bot_api, submitted) == TWO_TRACKS


async def test_a_worker_stopped_while_it_reads_a_job_gives_the_job_back(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    redis_url: str,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    proxy = RedisProxy(redis_url)
    async with proxy.running():
        # A claimed job's first read (GET it, INCRBY its try count) gets no reply, so the stop
        # lands before arq's own handling of the job began.
        proxy.stall_once(at=b"INCRBY")
        async with running_worker(service_settings(redis_url=proxy.url), separator) as stopped:
            await async_wait_until(lambda: proxy.stalls == 1, timeout=30, what="the read stalled")
    assert not await pool.exists(stopped.health_check_key), "the shutdown ran to its end"
    worker = await run_worker_burst(service_settings(redis_url=redis_url), separator)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0), "the claim was given back"
    assert track_names(fake_bot_api, submitted) == TWO_TRACKS
