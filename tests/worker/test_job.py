"""The arq worker end to end: a real Redis, arq's real Worker in-process, the fake Bot API
over real HTTP, tiny random models through demucs's loading path."""

from __future__ import annotations

import asyncio
import itertools
import logging
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from arq.connections import ArqRedis
from arq.jobs import Job, JobStatus

from common.exits import EXIT_CONFIG
from common.jobs import FailureReason, JobFailed, JobOutcome, delivered_key
from common.settings import Settings
from separation import Ensemble, EnsembleSeparator, decode_audio, probe_audio
from tests.support.audio import decode, make_song
from tests.support.fake_bot_api import MB, NOT_MODIFIED, FakeBotApi
from tests.support.processes import demix_process
from tests.support.waiting import async_wait_until
from tests.support.workers import run_worker_burst, running_worker
from tests.worker.conftest import (
    assert_sums_to_mix,
    rating_messages,
    result_of,
    status_edits,
    status_texts,
    submit,
    worker_env,
)
from worker import texts
from worker.app import worker_settings
from worker.delivery import ledger_key
from worker.job import STATE_KEY, separate_job
from worker.progress import EditThrottle, StatusMessage


async def test_job_delivers_an_album_then_done_then_rating(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
    tmp_path: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals", "drums"))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 0, 0)

    chat = submitted.job.chat_id
    audios = fake_bot_api.audio_messages(chat)
    names = [m.file_name for m in audios]
    assert names == ["Test Song - drums.mp3", "Test Song - vocals.mp3", "Test Song - rest.mp3"]
    assert len({m.media_group_id for m in audios}) == 1 and audios[0].media_group_id
    assert all(m.reply_to == submitted.song_message.message_id for m in audios)
    assert [m.file.title for m in audios if m.file] == [
        "Test Song (drums)",
        "Test Song (vocals)",
        "Test Song (rest)",
    ]

    decoded = []
    for message in audios:
        assert message.data is not None
        path = tmp_path / (message.file_name or "track.mp3")
        path.write_bytes(message.data)
        decoded.append(decode(path))
    assert_sums_to_mix(decode(song), decoded)

    ratings = rating_messages(fake_bot_api, chat)
    assert len(ratings) == 1
    # The buttons name the job: drums (1) + vocals (4), in mp3.
    assert {b.callback_data for b in ratings[0].buttons} == {
        f"v:{submitted.job.request_id}:5:up",
        f"v:{submitted.job.request_id}:5:down",
    }
    bot_messages = fake_bot_api.chat_messages(chat)
    assert bot_messages.index(ratings[0]) > bot_messages.index(audios[-1]), "rating comes last"

    texts = status_texts(fake_bot_api, submitted)
    assert texts[-1] is not None and texts[-1].startswith("✅ Done in ")
    assert any(t and "Separating" in t for t in texts)
    # Whoever sees the rating sees the job done: the status was final before it was sent.
    calls = fake_bot_api.calls()
    done_edit = next(
        i
        for i, call in enumerate(calls)
        if call.method == "editMessageText" and str(call.params.get("text")).startswith("✅")
    )
    rating_sent = next(
        i
        for i, call in enumerate(calls)
        if call.method == "sendMessage" and "reply_markup" in call.params
    )
    assert done_edit < rating_sent
    # The bot can tell the tracks are all in the chat (the user's next pick is free).
    assert await pool.exists(delivered_key(submitted.job_id))

    info = await result_of(pool, submitted.job_id)
    assert info.success
    outcome = JobOutcome.from_result(info.result)
    assert outcome.tracks == ("drums", "vocals", "rest")
    assert outcome.audio_seconds == pytest.approx(3.0, abs=0.05)
    assert {"download_s", "separate_s", "encode_s", "upload_s", "total_s"} <= set(outcome.timings)


async def test_vocals_alone_gives_vocals_and_no_vocals_as_one_album(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    await run_worker_burst(settings, separator)
    audios = fake_bot_api.audio_messages(submitted.job.chat_id)
    assert [m.file_name for m in audios] == ["Test Song - vocals.mp3", "Test Song - no_vocals.mp3"]
    assert len(fake_bot_api.calls("sendMediaGroup")) == 1
    assert not fake_bot_api.calls("sendAudio")


async def test_the_payloads_ensemble_is_the_one_the_tracks_come_from(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
    tmp_path: Path,
) -> None:
    # Vocals + guitar runs both models, so route and blend give different vocals; each job
    # delivers the vocals of the variant its payload names.
    pick = ("vocals", "guitar")
    audio = decode_audio(song)
    expected = {
        strategy: separator.separate(audio, pick, ensemble=Ensemble(strategy))["vocals"]
        for strategy in ("route", "blend")
    }
    for strategy in ("route", "blend"):
        submitted = await submit(
            fake_bot_api, pool, song, pick, ensemble=Ensemble(strategy).to_dict()
        )
        await run_worker_burst(settings, separator)
        vocals = [
            m
            for m in fake_bot_api.audio_messages(submitted.job.chat_id)
            if m.file_name == "Test Song - vocals.mp3"
        ][-1]  # this job's: the chat has the earlier job's too
        assert vocals.data is not None
        path = tmp_path / f"{strategy}.mp3"
        path.write_bytes(vocals.data)
        delivered = decode(path)
        errors = {
            other: float(np.sum((delivered - estimate) ** 2.0))
            for other, estimate in expected.items()
        }
        assert min(errors, key=errors.__getitem__) == strategy, errors


async def test_an_opus_voice_message_gives_tracks_of_its_length_in_44k1_stereo(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    # As Telegram records voice notes: Opus in Ogg, 48 kHz mono.
    voice = make_song(tmp_path / "voice.ogg", seconds=1.5, samplerate=48000, channels=1)
    submitted = await submit(
        fake_bot_api, pool, voice, ("vocals",), send_as="voice", song_name="voice message"
    )
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)
    audios = fake_bot_api.audio_messages(submitted.job.chat_id)
    names = [m.file_name for m in audios]
    assert names == ["voice message - vocals.mp3", "voice message - no_vocals.mp3"]
    decoded = []
    for message in audios:
        assert message.data is not None
        path = tmp_path / (message.file_name or "track.mp3")
        path.write_bytes(message.data)
        info = probe_audio(path)
        assert (info.samplerate, info.channels) == (44100, 2)
        decoded.append(decode(path))
    mix = decode_audio(voice).samples
    assert mix.shape == (2, round(1.5 * 44100))
    assert_sums_to_mix(mix, decoded)


async def test_undecodable_file_fails_once_with_the_formats(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
) -> None:
    submitted = await submit(
        fake_bot_api,
        pool,
        b"ID3 this is not audio at all" * 50,
        ("vocals",),
        send_as="document",
    )
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (0, 1, 0)
    final = status_texts(fake_bot_api, submitted)[-1] or ""
    assert final.startswith("❌") and "mp3" in final
    assert not fake_bot_api.audio_messages(submitted.job.chat_id)
    assert not rating_messages(fake_bot_api, submitted.job.chat_id)
    assert len(fake_bot_api.downloads()) == 1, "bad input is not retried"
    info = await result_of(pool, submitted.job_id)
    assert not info.success and isinstance(info.result, JobFailed)
    assert info.result.reason is FailureReason.INVALID_AUDIO and "mp3" in info.result.user_message


async def test_song_over_the_duration_limit_fails_naming_it(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    settings = service_settings(max_duration_s=2)
    submitted = await submit(fake_bot_api, pool, song, ("bass",))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_failed, worker.jobs_retried) == (1, 0)
    final = status_texts(fake_bot_api, submitted)[-1] or ""
    assert final.startswith("❌") and "2 s" in final
    assert not fake_bot_api.audio_messages(submitted.job.chat_id)
    info = await result_of(pool, submitted.job_id)
    assert isinstance(info.result, JobFailed) and info.result.reason is FailureReason.TOO_LONG


async def test_a_guessed_duration_over_the_limit_does_not_refuse_a_short_song(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    # A VBR mp3 without a Xing header and a quiet start: ffprobe guesses its duration from
    # the first frames' low bitrate, far longer than the 8 s it decodes to.
    song = tmp_path / "Quiet Start.mp3"
    source = "aevalsrc=if(lt(t\\,3)\\,0\\,0.3*sin(2*PI*440*t)+0.2*(random(0)-0.5)):s=44100:d=8"
    subprocess.run(
        [
            *("ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", source, "-ac", "2"),
            *("-c:a", "libmp3lame", "-q:a", "2", "-write_xing", "0", str(song)),
        ],
        check=True,
    )
    guessed = probe_audio(song)
    assert guessed.duration_estimated and guessed.duration_s > 12
    settings = service_settings(max_duration_s=12)
    submitted = await submit(fake_bot_api, pool, song, ("vocals",), song_name="Quiet Start")
    worker = await run_worker_burst(settings, separator)
    assert worker.jobs_complete == 1
    tracks = fake_bot_api.audio_messages(submitted.job.chat_id)
    assert [m.file_name for m in tracks] == [
        "Quiet Start - vocals.mp3",
        "Quiet Start - no_vocals.mp3",
    ]


async def test_file_over_telegrams_download_limit_fails_naming_it(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals",), declared_size=25 * MB)
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_failed, worker.jobs_retried) == (1, 0)
    assert len(fake_bot_api.calls("getFile")) == 1
    final = status_texts(fake_bot_api, submitted)[-1] or ""
    assert final.startswith("❌") and "20 MB" in final
    assert not fake_bot_api.downloads()


async def test_transient_telegram_errors_are_retried_then_delivered_once(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    fake_bot_api.fail_next("getFile", status=429, retry_after=1)
    # After the separation: the retry finds the sources in the cache.
    fake_bot_api.fail_next("sendMediaGroup", status=502)
    # The album is in by then: the retry must send the rating, not the album again.
    fake_bot_api.fail_next("sendMessage", status=500, when=lambda params: "reply_markup" in params)
    song = make_song(tmp_path / "Test Song.mp3", seconds=3.0, seed=21)
    passes = separator.model_passes
    submitted = await submit(fake_bot_api, pool, song, ("vocals", "bass"))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed, worker.jobs_retried) == (1, 0, 3)
    # One pass per needed sub-model of the bag (vocals, bass), once over all tries.
    assert separator.model_passes - passes == 2
    chat = submitted.job.chat_id
    assert [m.file_name for m in fake_bot_api.audio_messages(chat)] == [
        "Test Song - bass.mp3",
        "Test Song - vocals.mp3",
        "Test Song - rest.mp3",
    ]
    assert len(rating_messages(fake_bot_api, chat)) == 1
    assert (status_texts(fake_bot_api, submitted)[-1] or "").startswith("✅ Done")
    getfile = fake_bot_api.calls("getFile")
    assert getfile[1].at - getfile[0].at >= 0.9, "RetryAfter's wait is honoured"


async def test_retries_exhausted_tell_the_user_to_try_later(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    settings = service_settings(job_max_tries=2)
    fake_bot_api.fail_next("getFile", status=502, times=5)
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_failed, worker.jobs_retried) == (1, 1)
    final = status_texts(fake_bot_api, submitted)[-1] or ""
    assert final.startswith("❌") and "try again" in final
    info = await result_of(pool, submitted.job_id)
    assert isinstance(info.result, JobFailed) and info.result.reason is FailureReason.UNAVAILABLE


async def test_status_edits_are_spaced_and_only_sent_when_the_text_changes(
    fake_bot_api: FakeBotApi, pool: ArqRedis, song: Path
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    interval = 0.3
    throttle = EditThrottle(interval)
    async with fake_bot_api.bot() as bot:
        status = StatusMessage(
            bot, submitted.job.chat_id, submitted.job.status_message_id, throttle
        )
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.0
        step = 0
        while loop.time() < end:  # a progress callback far faster than Telegram allows
            await status.update(texts.separating(step / 1000))
            await status.update(texts.separating(step / 1000))  # same text again
            step += 1
            await asyncio.sleep(0.005)
        assert await status.show("✅ Done in 1 s: 2 tracks sent.")
        assert not await status.show("✅ Done in 1 s: 2 tracks sent."), "unchanged: no edit"
    edits = status_edits(fake_bot_api, submitted)
    assert step > 50
    # One edit per interval over the second of updates (+1 for the first), then the final.
    assert 2 <= len(edits) <= 1.0 / interval + 2
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert min(gaps) >= interval * 0.9, gaps
    assert edits[-1].params["text"].startswith("✅ Done")
    assert all(call.ok for call in fake_bot_api.calls("editMessageText"))


async def test_status_edits_survive_telegram_refusals(
    fake_bot_api: FakeBotApi, pool: ArqRedis, song: Path
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    throttle = EditThrottle(0.05)
    chat = submitted.job.chat_id
    async with fake_bot_api.bot() as bot:
        status = StatusMessage(bot, chat, submitted.job.status_message_id, throttle)
        fake_bot_api.fail_next("editMessageText", status=429, retry_after=1)
        assert not await status.update("🎛 Separating… 10%")
        assert throttle.wait_s(chat) > 0.5, "RetryAfter holds further edits back"
        assert not await status.update("🎛 Separating… 20%"), "dropped while held back"
        assert await status.show("🎛 Separating… 30%"), "a stage text waits its turn"
        # Telegram says "not modified" when the text is already there: not an error.
        throttle = status.throttle = EditThrottle(0.0)
        status.text = None
        assert await status.show("🎛 Separating… 30%")
        gone = StatusMessage(bot, chat, 999_999, throttle)
        assert not await gone.show("✅ Done"), "a deleted status message does not raise"
        # A long flood-control ban: the text is dropped instead of holding the job open.
        fake_bot_api.fail_next("editMessageText", status=429, retry_after=60)
        assert not await status.update("🎛 Separating… 40%")
        started = asyncio.get_running_loop().time()
        assert not await status.show("✅ Done")
        assert asyncio.get_running_loop().time() - started < 1
    texts_now = status_texts(fake_bot_api, submitted)
    assert texts_now[-1] == "🎛 Separating… 30%"
    assert any(NOT_MODIFIED[:30] in (c.description or "") for c in fake_bot_api.calls())


async def test_progress_is_shown_while_a_job_separates(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    interval = 0.3
    settings = service_settings(progress_edit_interval_s=interval)
    # Several chunks (progress callbacks), and a fresh song: no cache hit.
    long_song = make_song(tmp_path / "long.mp3", seconds=14.0, seed=7)
    submitted = await submit(fake_bot_api, pool, long_song, ("vocals",))
    await run_worker_burst(settings, separator)
    edits = status_edits(fake_bot_api, submitted)
    shown = [str(call.params["text"]) for call in edits]
    assert shown[0] == texts.DOWNLOADING
    assert any("Separating" in t for t in shown), shown
    assert shown[-2:] == [texts.UPLOADING, shown[-1]] and shown[-1].startswith("✅")
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert min(gaps) >= interval * 0.9, f"edits closer than {interval}s: {gaps}"
    percents = [int(t.rsplit(" ", 1)[-1].rstrip("%")) for t in shown if "Separating" in t]
    assert percents == sorted(percents)


@pytest.fixture
async def worker_ctx(
    settings: Settings, separator: EnsembleSeparator, pool: ArqRedis
) -> AsyncIterator[dict[str, Any]]:
    """arq's worker context after on_startup, to call the job function as arq does."""
    options = worker_settings(settings, separator=separator)
    ctx: dict[str, Any] = {"redis": pool}
    await options["on_startup"](ctx)
    yield ctx
    await options["on_shutdown"](ctx)


async def test_a_rerun_of_a_finished_job_delivers_nothing_new(
    fake_bot_api: FakeBotApi,
    pool: ArqRedis,
    worker_ctx: dict[str, Any],
    song: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("piano", "guitar"))
    # arq's own bookkeeping was lost (worker killed after the last send): it runs again.
    job_ctx = await Job(submitted.job_id, pool).info()
    assert job_ctx is not None
    ctx = {
        **worker_ctx,
        "job_id": submitted.job_id,
        "job_try": 1,
        "enqueue_time": job_ctx.enqueue_time,
    }
    first = await separate_job(ctx, **submitted.job.to_kwargs())
    chat = submitted.job.chat_id
    audios = len(fake_bot_api.audio_messages(chat))
    downloads = len(fake_bot_api.downloads())
    calls = len(fake_bot_api.calls())
    passes = worker_ctx[STATE_KEY].separator.model_passes

    second = await separate_job({**ctx, "job_try": 2}, **submitted.job.to_kwargs())
    assert second["tracks"] == first["tracks"] == ["guitar", "piano", "rest"]
    assert second["audio_seconds"] == first["audio_seconds"]
    assert len(fake_bot_api.audio_messages(chat)) == audios == 3
    assert len(rating_messages(fake_bot_api, chat)) == 1
    assert len(fake_bot_api.downloads()) == downloads, "nothing is downloaded again"
    assert worker_ctx[STATE_KEY].separator.model_passes == passes, "no model pass again"
    new_calls = [c.method for c in fake_bot_api.calls()[calls:]]
    assert set(new_calls) <= {"editMessageText"}, new_calls
    ledger = await pool.hgetall(ledger_key(submitted.job_id, job_ctx.enqueue_time))  # type: ignore[misc]
    assert b"album:guitar" in ledger and b"rating" in ledger and b"done" in ledger


@pytest.mark.slow
async def test_worker_killed_mid_job_then_another_delivers_each_track_once(
    fake_bot_api: FakeBotApi,
    pool: ArqRedis,
    redis_url: str,
    model_repo: Path,
    song: Path,
    tmp_path: Path,
) -> None:
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    chat = submitted.job.chat_id
    # Slow edits keep the job open after the tracks are sent: the kill lands during the final
    # status edit, before the rating and before arq records completion, so arq runs the job
    # again on the next worker, which sends the rest (status, rating) but no track again.
    fake_bot_api.set_latency("editMessageText", 0.5)
    env = worker_env(fake_bot_api, redis_url, model_repo, tmp_path)
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]

    async def ledger_has_done() -> bool:
        for key in await pool.keys("demix:delivery:*"):
            if await pool.hexists(key, "done"):  # type: ignore[misc]
                return True
        return False

    async def job_complete() -> bool:
        return await Job(submitted.job_id, pool).status() == JobStatus.complete

    with demix_process("worker", env=env, cwd=tmp_path, log=logs[0]) as first:
        await async_wait_until(
            ledger_has_done,  # type: ignore[arg-type]
            timeout=120,
            what="album sent and the final status on its way",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert len(fake_bot_api.audio_messages(chat)) == 2
    assert await Job(submitted.job_id, pool).status() == JobStatus.in_progress

    fake_bot_api.set_latency("editMessageText", 0)
    with demix_process("worker", env=env, cwd=tmp_path, log=logs[1]) as second:
        await async_wait_until(
            job_complete,  # type: ignore[arg-type]
            timeout=120,
            what="the re-run to complete",
        )
        info = await result_of(pool, submitted.job_id)
        assert info.success and info.job_try == 2
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0

    names = [m.file_name for m in fake_bot_api.audio_messages(chat)]
    assert names == ["Test Song - vocals.mp3", "Test Song - no_vocals.mp3"]
    assert len(fake_bot_api.calls("sendMediaGroup")) == 1
    assert len(rating_messages(fake_bot_api, chat)) == 1
    assert (status_texts(fake_bot_api, submitted)[-1] or "").startswith("✅ Done")
    rerun_log = logs[1].read_text()
    assert "already delivered by an earlier run" in rerun_log
    for log in logs:
        text = log.read_text()
        assert "job started" in text
        assert fake_bot_api.token not in text and fake_bot_api.token.split(":")[1] not in text


async def test_worker_shutdown_stops_the_separation_and_leaves_the_job_queued(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.job")
    long_song = make_song(tmp_path / "long.mp3", seconds=30.0, seed=11)
    submitted = await submit(fake_bot_api, pool, long_song, ("vocals",))

    def separating() -> bool:
        return any(t and "Separating" in t for t in status_texts(fake_bot_api, submitted))

    async with running_worker(settings, separator):
        await async_wait_until(separating, timeout=60, what="separation to start")
        started = asyncio.get_running_loop().time()
    # Leaving the block closed the worker, as SIGTERM does: running jobs cancelled.
    stopped_in = asyncio.get_running_loop().time() - started
    assert "separation stopped at a chunk boundary" in caplog.text
    assert stopped_in < 15, stopped_in
    assert await Job(submitted.job_id, pool).status() == JobStatus.queued, "left for a re-run"
    assert not fake_bot_api.audio_messages(submitted.job.chat_id)
    assert not any(t and t.startswith("❌") for t in status_texts(fake_bot_api, submitted))


async def test_a_job_over_its_duration_scaled_deadline_is_stopped(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="worker.job")
    # 2 s is ample to download and decode three minutes of audio, and a small part of what
    # separating them takes here (a minute's separation came within 2 s once the passes
    # reused their heap), so the deadline falls inside the separation on slower and faster
    # machines alike; the job stops there, so the length costs the test no time.
    settings = service_settings(job_timeout_base_s=2.0, job_timeout_per_audio_s=0.0)
    long_song = make_song(tmp_path / "long.mp3", seconds=180.0, seed=13)
    submitted = await submit(fake_bot_api, pool, long_song, ("vocals",))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_failed, worker.jobs_retried) == (1, 0)
    final = status_texts(fake_bot_api, submitted)[-1] or ""
    assert final.startswith("❌") and "too long" in final
    assert "separation stopped at a chunk boundary" in caplog.text
    assert not fake_bot_api.audio_messages(submitted.job.chat_id)
    info = await result_of(pool, submitted.job_id)
    assert isinstance(info.result, JobFailed) and info.result.reason is FailureReason.TIMEOUT


async def test_local_bot_api_server_lifts_the_download_limit(
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    with FakeBotApi(local_mode=True) as local_api:
        settings = service_settings(api=local_api, max_file_mb=200)
        submitted = await submit(local_api, pool, song, ("vocals",), declared_size=25 * MB)
        worker = await run_worker_burst(settings, separator)
        assert worker.jobs_complete == 1
        audios = local_api.audio_messages(submitted.job.chat_id)
        assert [m.file_name for m in audios] == [
            "Test Song - vocals.mp3",
            "Test Song - no_vocals.mp3",
        ]
        assert not local_api.downloads(), "read from the server's disk, not over HTTP"


async def test_file_over_the_configured_limit_fails_naming_it(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    settings = service_settings(max_file_mb=1)
    submitted = await submit(fake_bot_api, pool, song, ("vocals",), declared_size=3 * MB)
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_failed, worker.jobs_retried) == (1, 0)
    final = status_texts(fake_bot_api, submitted)[-1] or ""
    assert final.startswith("❌") and "1 MB" in final
    assert not fake_bot_api.downloads()


@pytest.mark.parametrize("problem", ["rejected token", "no models"])
def test_demix_worker_exits_with_a_clear_error(
    problem: str,
    fake_bot_api: FakeBotApi,
    redis_url: str,
    model_repo: Path,
    tmp_path: Path,
) -> None:
    env = worker_env(fake_bot_api, redis_url, model_repo, tmp_path)
    if problem == "rejected token":
        env["TELEGRAM_BOT_TOKEN"] = "999999:WRONG-token-for-this-test"
        expected = "TELEGRAM_BOT_TOKEN was rejected"
    else:
        (tmp_path / "empty-models").mkdir()
        env["DEMIX_MODEL_REPO"] = str(tmp_path / "empty-models")
        expected = "models are not available"
    log = tmp_path / "worker.log"
    with demix_process("worker", env=env, cwd=tmp_path, log=log) as process:
        assert process.wait(timeout=120) == EXIT_CONFIG
    text = log.read_text()
    assert expected in text, text
    assert "WRONG-token" not in text and fake_bot_api.token.split(":")[1] not in text


async def test_tracks_over_the_upload_limit_fail_without_retries(
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    # What Telegram answers to an album over its 50 MB upload limit.
    fake_bot_api.fail_next("sendMediaGroup", status=413, description="Request Entity Too Large")
    submitted = await submit(fake_bot_api, pool, song, ("vocals",))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_failed, worker.jobs_retried) == (1, 0)
    assert len(fake_bot_api.calls("sendMediaGroup")) == 1
    final = status_texts(fake_bot_api, submitted)[-1] or ""
    assert final.startswith("❌") and "50 MB" in final
    assert not rating_messages(fake_bot_api, submitted.job.chat_id)
