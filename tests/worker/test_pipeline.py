"""The pipelined worker: several jobs at once in one worker process, one separation at a time.

Real parts: arq's Worker in this event loop, Redis, the fake Bot API over HTTP with latency
on downloads and uploads, the tiny models on the real separation path. The separator is
wrapped in :class:`tests.support.separators.RecordingSeparator`, which notes when each
``separate`` call enters and leaves and delegates the work.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from common.settings import Settings
from separation import EnsembleSeparator, plan_tracks
from tests.support.audio import make_song
from tests.support.fake_bot_api import FakeBotApi
from tests.support.separators import RecordingSeparator
from tests.support.waiting import async_wait_until
from tests.support.workers import run_worker_burst, running_worker
from tests.worker.conftest import Submitted, rating_messages, status_texts, submit
from worker import texts


def expected_tracks(submitted: Submitted) -> list[str]:
    return [f"{submitted.job.song_name} - {t}.mp3" for t in plan_tracks(submitted.job.stems)]


def received_tracks(api: FakeBotApi, submitted: Submitted) -> list[str | None]:
    return [m.file_name for m in api.audio_messages(submitted.job.chat_id)]


PICKS: tuple[tuple[str, ...], ...] = (
    ("vocals",),
    ("drums", "bass"),
    ("guitar", "piano"),
    ("vocals", "drums"),
)


async def test_concurrent_jobs_share_one_device_and_overlap_its_idle_stages(
    fake_bot_api: FakeBotApi,
    service_settings: Any,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    # Downloads and uploads take time, as they do over the internet.
    fake_bot_api.set_latency("getFile", 0.5)
    fake_bot_api.set_latency("sendMediaGroup", 0.5)
    settings: Settings = service_settings(worker_max_jobs=3)
    jobs = [
        await submit(
            fake_bot_api,
            pool,
            make_song(tmp_path / f"song{i}.mp3", seconds=4.0, seed=100 + i),
            pick,
            user_id=7100 + i,
            song_name=f"Song {i}",
        )
        for i, pick in enumerate(PICKS)
    ]
    recorder = RecordingSeparator(separator)

    worker = await run_worker_burst(settings, recorder)

    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (4, 0, 0)
    for job in jobs:
        assert Counter(received_tracks(fake_bot_api, job)) == Counter(expected_tracks(job))
        assert len(rating_messages(fake_bot_api, job.job.chat_id)) == 1
        assert (status_texts(fake_bot_api, job)[-1] or "").startswith("✅")
    # One separation at a time on the device, and the real one did the work.
    assert recorder.max_running == 1
    intervals = sorted(recorder.intervals)
    assert len(intervals) == len(jobs)
    assert all(end <= nxt for (_, end), (nxt, _) in itertools.pairwise(intervals))
    # A job whose song was ready while another separated said so.
    waited = [j for j in jobs if texts.WAITING_FOR_SEPARATOR in status_texts(fake_bot_api, j)]
    assert waited, "no job showed that it waited for the separator"
    # While one job separated, another's download or upload went on: some getFile or
    # sendMediaGroup was in flight (its 0.5 s of latency, up to its answer) during a
    # separation. A job's own getFile ends before, and its own upload starts after, its own
    # separation, so these are other jobs'.
    io_calls = fake_bot_api.calls("getFile") + fake_bot_api.calls("sendMediaGroup")
    during = [
        call
        for call in io_calls
        if any(call.at - 0.5 < end and start < call.at for start, end in intervals)
    ]
    uploads = [call for call in during if call.method == "sendMediaGroup"]
    assert uploads, "no upload overlapped a separation"


async def test_worker_shutdown_with_concurrent_jobs_leaves_them_queued_delivered_once(
    fake_bot_api: FakeBotApi,
    service_settings: Any,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker")
    # The short song's album is on its way when the worker is told to stop.
    fake_bot_api.set_latency("sendMediaGroup", 3.0)
    settings: Settings = service_settings(worker_max_jobs=3)
    short_song = make_song(tmp_path / "short.mp3", seconds=2.0, seed=201)
    short = await submit(fake_bot_api, pool, short_song, ("vocals",), user_id=7201)
    longs = []
    for i in range(2):
        long_song = make_song(tmp_path / f"long{i}.mp3", seconds=60.0, seed=202 + i)
        longs.append(await submit(fake_bot_api, pool, long_song, ("vocals",), user_id=7202 + i))
    recorder = RecordingSeparator(separator)

    def shows(job: Submitted, text: str) -> bool:
        # The status now, not its history: a job that has separated must not count.
        now = status_texts(fake_bot_api, job)[-1]
        return bool(now and text in now)

    def uploading_while_one_separates() -> bool:
        # Which long job reaches the device first varies; the other may wait or upload.
        # The album has reached the Bot API and waits out its latency: under way, not merely
        # about to be sent (a stop before the send starts rightly leaves it unsent).
        return (
            shows(short, texts.UPLOADING)
            and fake_bot_api.arrived("sendMediaGroup") == 1
            and not fake_bot_api.calls("sendMediaGroup")
            and any(shows(job, "Separating") for job in longs)
        )

    async with running_worker(settings, recorder):
        await async_wait_until(
            uploading_while_one_separates, timeout=60, what="an upload during a separation"
        )
        started = asyncio.get_running_loop().time()
    # Leaving the block closed the worker, as SIGTERM does: running jobs cancelled.
    stopped_in = asyncio.get_running_loop().time() - started
    assert stopped_in < 15, stopped_in
    assert "separation stopped at a chunk boundary" in caplog.text
    for job in longs:
        assert await Job(job.job_id, pool).status() == JobStatus.queued, "left for a re-run"
    # The album under way finished and was recorded before the short job stopped.
    assert Counter(received_tracks(fake_bot_api, short)) == Counter(expected_tracks(short))
    assert await Job(short.job_id, pool).status() == JobStatus.queued
    for job in (short, *longs):
        assert not any(t and t.startswith("❌") for t in status_texts(fake_bot_api, job))

    fake_bot_api.set_latency("sendMediaGroup", 0.0)
    worker = await run_worker_burst(settings, recorder)
    assert worker.jobs_complete == 3
    assert recorder.max_running == 1
    for job in (short, *longs):
        assert Counter(received_tracks(fake_bot_api, job)) == Counter(expected_tracks(job))
        assert len(rating_messages(fake_bot_api, job.job.chat_id)) == 1
        assert (status_texts(fake_bot_api, job)[-1] or "").startswith("✅")
    assert len(fake_bot_api.calls("sendMediaGroup")) == 3, "each album sent once"
