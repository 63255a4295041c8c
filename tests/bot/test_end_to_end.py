"""Whole chat flows: the real bot and the real arq worker (tiny models), the fake Bot API,
a real Redis and a real SQLite file. Tracks are decoded and checked against the mix."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from arq.jobs import Job, JobStatus

from bot import texts
from common import callback_data as cd
from common import texts as shared_texts
from common.jobs import separation_job_id
from common.logs import configure_logging
from common.rating import RATING_PROMPT
from common.settings import Settings
from separation import EnsembleSeparator
from tests.bot.conftest import answer_to, current, picker_for, press, running_bot
from tests.support.audio import decode, make_song
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.redis_server import RedisServer, redis_client
from tests.support.waiting import async_wait_until
from tests.support.workers import running_worker

USER, OTHER = 301, 302
JOB_TIMEOUT_S = 120.0


class RawRecords(logging.Handler):
    """Records' messages and tracebacks, unformatted: the token must not be in them."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # PTB logs its token-bearing base URL at DEBUG; only the formatted output (which
        # redacts) may see that. Records at INFO and above must be clean at the source.
        if record.levelno < logging.INFO:
            return
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@pytest.fixture
def service_logs() -> Iterator[tuple[io.StringIO, RawRecords]]:
    """The processes' real logging setup (as `demix bot` / `demix worker` configure it) at
    DEBUG, written to a buffer; the previous logging setup is restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_levels = {
        name: logging.getLogger(name).level
        for name in ("httpx", "httpcore", "telegram.ext.Updater")
    }
    configure_logging("DEBUG", "test")
    formatted = io.StringIO()
    stream_handler = root.handlers[0]
    assert isinstance(stream_handler, logging.StreamHandler)
    stream_handler.setStream(formatted)
    raw = RawRecords()
    root.addHandler(raw)
    try:
        yield formatted, raw
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)


async def wait_for_tracks(api: FakeBotApi, chat_id: int, count: int) -> list[ChatMessage]:
    return await async_wait_until(
        lambda: (tracks := api.audio_messages(chat_id)) and len(tracks) >= count and tracks,
        timeout=JOB_TIMEOUT_S,
        what=f"{count} tracks in chat {chat_id}",
    )


async def pick_and_separate(
    api: FakeBotApi, user_id: int, song_message: ChatMessage, stems: list[str]
) -> ChatMessage:
    picker = await picker_for(api, song_message.chat_id, song_message)
    for stem in stems:
        await press(api, user_id, picker, picker.button(stem).callback_data or "")
    answer = await press(api, user_id, picker, picker.button("Separate").callback_data or "")
    assert not answer.show_alert, answer.text
    return picker


async def status_edited_to(api: FakeBotApi, stage: str) -> None:
    """Wait until a worker has shown ``stage`` ("Downloading", "Separating") in a status."""
    await async_wait_until(
        lambda: any(stage in str(c.params.get("text")) for c in api.calls("editMessageText")),
        timeout=JOB_TIMEOUT_S,
        what=f"a status showing {stage}",
    )


def sum_error_db(tracks: list[np.ndarray], mix: np.ndarray) -> float:
    """Level of (sum of tracks - mix) relative to the mix, in dB (more negative is better)."""
    total = np.sum(tracks, axis=0)
    residual = total - mix
    return float(10 * np.log10(np.mean(residual**2) / np.mean(mix**2)))


async def test_song_to_tracks_then_vote_and_revote(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
    tmp_path: Path,
    service_logs: tuple[io.StringIO, RawRecords],
) -> None:
    settings = service_settings()
    token = settings.require_token()
    async with running_bot(settings) as bot, running_worker(settings, separator):
        sent = fake_bot_api.send_audio(
            USER, song, file_name="../My Song.mp3", title="Test Song", performer="Test Artist"
        )
        await pick_and_separate(fake_bot_api, USER, sent, ["vocals", "drums"])
        tracks = await wait_for_tracks(fake_bot_api, USER, 3)

        # The tracks: names, count, duration, and they sum back to the mix.
        assert [t.file_name for t in tracks] == [
            "My Song - drums.mp3",
            "My Song - vocals.mp3",
            "My Song - rest.mp3",
        ]
        album = {t.media_group_id for t in tracks}
        assert len(album) == 1 and None not in album, "one album"
        mix = decode(song)
        decoded = []
        for track in tracks:
            path = tmp_path / (track.file_name or "track.mp3")
            path.write_bytes(track.data or b"")
            samples = decode(path)
            assert abs(samples.shape[1] - mix.shape[1]) <= 1, track.file_name
            decoded.append(samples[:, : mix.shape[1]])
        assert sum_error_db(decoded, mix) < -20.0

        # One status message, edited from queued to done.
        status = await async_wait_until(
            lambda: fake_bot_api.last_message(USER, containing="Done"), timeout=JOB_TIMEOUT_S
        )
        assert status.reply_to == sent.message_id
        assert any("Queued" in (text or "") for text in status.texts)
        job_id = separation_job_id(1, ["drums", "vocals"])
        job = await async_wait_until(
            lambda: _finished(bot.services.db.get_job(job_id)), what="the job to be recorded"
        )
        assert job.status == "done"
        assert job.tracks == ("drums", "vocals", "rest")
        assert job.started_at is not None and job.finished_at is not None
        assert job.audio_seconds == pytest.approx(3.0, abs=0.1)

        # Vote, then vote again: one vote, replaced; 👎 asks what was wrong.
        rating = await async_wait_until(
            lambda: fake_bot_api.last_message(USER, containing=RATING_PROMPT)
        )
        answer = await press(fake_bot_api, USER, rating, rating.button("👍").callback_data or "")
        assert answer.text == texts.VOTE_THANKS["up"]
        assert await bot.services.db.get_vote(job_id, USER) == "up"
        rating = await current(fake_bot_api, rating)
        assert "✅" in rating.button("👍").text
        answer = await press(fake_bot_api, USER, rating, rating.button("👎").callback_data or "")
        assert answer.text == texts.VOTE_CHANGED
        assert await bot.services.db.get_vote(job_id, USER) == "down"
        question = await async_wait_until(
            lambda: fake_bot_api.last_message(USER, containing="What was wrong")
        )
        comment = fake_bot_api.send_text(
            USER, "the drums leak into the vocals", reply_to=question.message_id
        )
        thanks = await answer_to(fake_bot_api, USER, comment)
        assert thanks.content == texts.COMMENT_THANKS
        assert await bot.services.db.comments(1) == ["the drums leak into the vocals"]
        assert await bot.services.db.job_comments(job_id) == ["the drums leak into the vocals"]
        figures = (await bot.services.db.stats()).to_dict()
        assert figures["feedback"] == {"up": 0, "down": 1, "comments": 1}
        assert figures["jobs"]["done"] == 1

        # A rating button from before ratings were per job (still in chats) rates the
        # request's latest done job: it changes this vote, it adds none.
        answer = await press(fake_bot_api, USER, rating, cd.vote(1, "up"))
        assert answer.text == texts.VOTE_CHANGED
        assert await bot.services.db.get_vote(job_id, USER) == "up"
        figures = (await bot.services.db.stats()).to_dict()
        assert figures["feedback"] == {"up": 1, "down": 0, "comments": 1}
        # Redrawn, the buttons name the job.
        rating = await current(fake_bot_api, rating)
        assert rating.button("👍").callback_data == cd.vote(1, "up", ["drums", "vocals"])

    formatted, raw = service_logs
    output = formatted.getvalue()
    assert '"job_id": "sep:1:drums+vocals"' in output  # the logs did capture the flow
    assert token not in output
    assert raw.lines and not [line for line in raw.lines if token in line]


async def test_the_next_pick_is_free_as_soon_as_the_tracks_are_delivered(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
) -> None:
    # The production edit interval: the worker's final status edit waits its turn, a few
    # seconds after the tracks are in. The watcher records outcomes every 2 s in production;
    # here it reads the queue once at start, so nothing below may lean on it.
    settings = service_settings(progress_edit_interval_s=3.0)
    first_id = separation_job_id(1, ["vocals"])
    second_id = separation_job_id(1, ["drums"])
    async with (
        running_bot(settings, watch_interval_s=600) as bot,
        running_worker(settings, separator),
    ):
        sent = fake_bot_api.send_audio(USER, song)
        picker = await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
        # While it runs, the user prepares the next pick of the same song.
        for stem in ("vocals", "drums"):
            await press(fake_bot_api, USER, picker, picker.button(stem).callback_data or "")
        await wait_for_tracks(fake_bot_api, USER, 2)

        # The last track is in: Separate again is free, though SQLite still has the first
        # job in flight and arq may not have its result yet.
        answer = await press(fake_bot_api, USER, picker, picker.button("Separate").callback_data)
        assert not answer.show_alert, answer.text
        first = await bot.services.db.get_job(first_id)
        assert first is not None and first.status == "queued", "not recorded by the watcher"

        # Each job's rating comes after its status says done.
        tracks = await wait_for_tracks(fake_bot_api, USER, 4)
        assert [t.file_name for t in tracks][2:] == [
            "Test Song - drums.mp3",
            "Test Song - no_drums.mp3",
        ]
        ratings = await async_wait_until(
            lambda: len(found := rating_messages(fake_bot_api)) == 2 and found,
            timeout=JOB_TIMEOUT_S,
            what="two rating messages",
        )
        calls = fake_bot_api.calls()
        for job_id, stems in ((first_id, ["vocals"]), (second_id, ["drums"])):
            job = await bot.services.db.get_job(job_id)
            assert job is not None
            done = next(
                i
                for i, call in enumerate(calls)
                if call.method == "editMessageText"
                and call.params.get("message_id") == job.status_message_id
                and str(call.params.get("text")).startswith("✅ Done")
            )
            rating = next(
                i
                for i, call in enumerate(calls)
                if call.method == "sendMessage"
                and cd.vote(1, "up", stems) in str(call.params.get("reply_markup"))
            )
            assert done < rating, f"{job_id}: the rating came while the status said running"

        # Each pick is rated on its own.
        first_rating, second_rating = ratings
        await press(fake_bot_api, USER, first_rating, first_rating.button("👍").callback_data)
        await press(fake_bot_api, USER, second_rating, second_rating.button("👎").callback_data)
        assert await bot.services.db.get_vote(first_id, USER) == "up"
        assert await bot.services.db.get_vote(second_id, USER) == "down"


def rating_messages(api: FakeBotApi) -> list[ChatMessage]:
    return [m for m in api.chat_messages(USER) if RATING_PROMPT in m.content]


async def _finished(job: Any) -> Any:
    record = await job
    return record if record is not None and record.status in ("done", "failed") else None


async def test_two_users_at_once_each_get_their_own_tracks(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    settings = service_settings()
    first = make_song(tmp_path / "First.mp3", seconds=2.0, seed=1)
    second = make_song(tmp_path / "Second.wav", seconds=2.5, seed=2)
    async with running_bot(settings), running_worker(settings, separator):
        sent_first = fake_bot_api.send_audio(USER, first)
        sent_second = fake_bot_api.send_document(OTHER, second)
        await pick_and_separate(fake_bot_api, USER, sent_first, ["bass"])
        await pick_and_separate(fake_bot_api, OTHER, sent_second, ["piano", "guitar"])
        tracks_first = await wait_for_tracks(fake_bot_api, USER, 2)
        tracks_second = await wait_for_tracks(fake_bot_api, OTHER, 3)
    assert [t.file_name for t in tracks_first] == ["First - bass.mp3", "First - no_bass.mp3"]
    assert [t.file_name for t in tracks_second] == [
        "Second - guitar.mp3",
        "Second - piano.mp3",
        "Second - rest.mp3",
    ]
    path = tmp_path / "out.mp3"
    path.write_bytes(tracks_second[0].data or b"")
    assert decode(path).shape[1] == pytest.approx(2.5 * 44100, abs=1)


async def test_undecodable_file_is_reported_with_the_formats(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    separator: EnsembleSeparator,
) -> None:
    settings = service_settings()
    async with running_bot(settings) as bot, running_worker(settings, separator):
        sent = fake_bot_api.send_document(USER, b"ID3 but not really an mp3" * 50, "fake.mp3")
        await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
        status = await async_wait_until(
            lambda: fake_bot_api.last_message(USER, containing="failed"), timeout=JOB_TIMEOUT_S
        )
        assert "mp3" in status.content
        job = await async_wait_until(
            lambda: _finished(bot.services.db.get_job(separation_job_id(1, ["vocals"])))
        )
        assert job.status == "failed"
        assert fake_bot_api.audio_messages(USER) == []


async def test_outcome_recorded_after_a_bot_restart(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
) -> None:
    settings = service_settings()
    job_id = separation_job_id(1, ["other"])
    async with running_bot(settings):
        sent = fake_bot_api.send_audio(USER, song)
        await pick_and_separate(fake_bot_api, USER, sent, ["other"])
    # The bot is down while the worker serves the job.
    async with running_worker(settings, separator) as worker:
        await wait_for_tracks(fake_bot_api, USER, 2)

        async def stored() -> bool:
            return await Job(job_id, worker.pool).status() == JobStatus.complete

        await async_wait_until(
            stored,
            timeout=JOB_TIMEOUT_S,
            what="arq to store the result",
        )
    async with running_bot(settings) as bot:
        job = await async_wait_until(lambda: _finished(bot.services.db.get_job(job_id)))
        assert job.status == "done" and job.tracks == ("other", "no_other")


def use_up_tries(redis_url: str, job_id: str, tries: int) -> None:
    """Record ``tries`` tries of ``job_id`` in arq, as if each had died with its worker."""
    with redis_client(redis_url) as client:
        client.set(f"arq:retry:{job_id}", tries)


async def test_job_that_dies_without_a_word_is_reported_by_the_bot(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
    redis_url: str,
) -> None:
    settings = service_settings(job_max_tries=2)
    job_id = separation_job_id(1, ["bass"])
    async with running_bot(settings) as bot:
        sent = fake_bot_api.send_audio(USER, song)
        await pick_and_separate(fake_bot_api, USER, sent, ["bass"])
        # As if earlier tries had all died with their worker: arq gives the job up without
        # running it, so the worker never gets to edit the status message.
        use_up_tries(redis_url, job_id, settings.job_max_tries)
        async with running_worker(settings, separator):
            status = await async_wait_until(
                lambda: fake_bot_api.last_message(USER, containing=shared_texts.JOB_CRASHED),
                timeout=JOB_TIMEOUT_S,
            )
        assert status.reply_to == sent.message_id
        job = await async_wait_until(lambda: _finished(bot.services.db.get_job(job_id)))
        assert job.status == "failed" and "retries" in (job.error or "")
        assert fake_bot_api.audio_messages(USER) == []


async def test_a_job_that_failed_on_our_side_can_be_started_again(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
    redis_url: str,
) -> None:
    settings = service_settings(job_max_tries=2)
    job_id = separation_job_id(1, ["drums"])
    async with running_bot(settings) as bot:
        sent = fake_bot_api.send_audio(USER, song)
        picker = await pick_and_separate(fake_bot_api, USER, sent, ["drums"])
        # Every try died with its worker: arq gives the job up, the bot reports a crash.
        use_up_tries(redis_url, job_id, settings.job_max_tries)
        async with running_worker(settings, separator):
            await async_wait_until(
                lambda: fake_bot_api.last_message(USER, containing=shared_texts.JOB_CRASHED),
                timeout=JOB_TIMEOUT_S,
            )
            await async_wait_until(lambda: _finished(bot.services.db.get_job(job_id)))
            answer = await press(
                fake_bot_api, USER, picker, picker.button("Separate").callback_data
            )
            assert not answer.show_alert
            tracks = await wait_for_tracks(fake_bot_api, USER, 2)
            # The worker finishes the job (rating, status, result) after the uploads.
            job = await async_wait_until(
                lambda: _finished(bot.services.db.get_job(job_id)), timeout=JOB_TIMEOUT_S
            )
        assert [t.file_name for t in tracks] == [
            "Test Song - drums.mp3",
            "Test Song - no_drums.mp3",
        ]
        assert job.status == "done"


async def test_a_song_that_failed_is_not_started_again(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    separator: EnsembleSeparator,
) -> None:
    settings = service_settings()
    job_id = separation_job_id(1, ["vocals"])
    async with running_bot(settings) as bot, running_worker(settings, separator):
        sent = fake_bot_api.send_document(USER, b"not an mp3 at all" * 50, "fake.mp3")
        picker = await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
        await async_wait_until(
            lambda: _finished(bot.services.db.get_job(job_id)), timeout=JOB_TIMEOUT_S
        )
        downloads = len(fake_bot_api.downloads())
        answer = await press(fake_bot_api, USER, picker, picker.button("Separate").callback_data)
        assert answer.show_alert and answer.text == texts.RECENTLY_FAILED
        job = await bot.services.db.get_job(job_id)
        assert job is not None and job.status == "failed"
        assert len(fake_bot_api.downloads()) == downloads


async def test_job_lost_from_redis_is_reported_and_can_be_started_again(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    redis_url: str,
) -> None:
    settings = service_settings()
    async with running_bot(settings) as bot:
        sent = fake_bot_api.send_audio(USER, song)
        picker = await pick_and_separate(fake_bot_api, USER, sent, ["piano"])
        with redis_client(redis_url) as client:
            client.flushdb()  # a Redis restarted without persistence
        await async_wait_until(lambda: fake_bot_api.last_message(USER, containing=texts.JOB_LOST))
        job = await bot.services.db.get_job(separation_job_id(1, ["piano"]))
        assert job is not None and job.status == "failed"
        answer = await press(fake_bot_api, USER, picker, picker.button("Separate").callback_data)
        assert not answer.show_alert
        job = await bot.services.db.get_job(separation_job_id(1, ["piano"]))
        assert job is not None and job.status == "queued"


async def test_a_job_missing_from_redis_only_briefly_is_not_reported_lost(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    redis_url: str,
) -> None:
    settings = service_settings()
    job_id = separation_job_id(1, ["piano"])
    async with running_bot(settings) as bot:
        sent = fake_bot_api.send_audio(USER, song)
        await pick_and_separate(fake_bot_api, USER, sent, ["piano"])
        watcher = bot.services.watcher
        assert watcher is not None
        with redis_client(redis_url) as client:
            [(member, score)] = client.zrange("arq:queue", 0, -1, withscores=True)
            # Gone from every key the watcher reads, for several of its checks (0.1 s)...
            client.zrem("arq:queue", member)
            passes = watcher.passes
            await async_wait_until(lambda: watcher.passes >= passes + 5, what="five checks")
            client.zadd("arq:queue", {member: score})  # ...then back, as after a misread
        await async_wait_until(
            lambda: watcher.passes >= passes + 40, timeout=30, what="about 4 s of checks"
        )
        assert not fake_bot_api.last_message(USER, containing=texts.JOB_LOST)
        job = await bot.services.db.get_job(job_id)
        assert job is not None and job.status == "queued"


async def test_worker_stopped_mid_job_and_restarted_delivers_exactly_once(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
) -> None:
    settings = service_settings()
    job_id = separation_job_id(1, ["vocals"])
    async with running_bot(settings) as bot:
        sent = fake_bot_api.send_audio(USER, song)
        # The first worker is stopped (a redeploy) while it waits for the download.
        fake_bot_api.set_latency("getFile", 3.0)
        async with running_worker(settings, separator):
            await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
            await status_edited_to(fake_bot_api, "Downloading")
            # Stopped once its request is at the server, under the latency: mid-download.
            await async_wait_until(
                lambda: fake_bot_api.arrived("getFile") >= 1,
                timeout=10,
                what="the first worker's getFile",
            )
        assert fake_bot_api.audio_messages(USER) == []
        fake_bot_api.set_latency("getFile", 0)
        async with running_worker(settings, separator):
            job = await async_wait_until(
                lambda: _finished(bot.services.db.get_job(job_id)), timeout=JOB_TIMEOUT_S
            )
        assert job.status == "done"
        tracks = fake_bot_api.audio_messages(USER)
        assert [t.file_name for t in tracks] == [
            "Test Song - vocals.mp3",
            "Test Song - no_vocals.mp3",
        ]
        ratings = [m for m in fake_bot_api.chat_messages(USER) if RATING_PROMPT in m.content]
        assert len(ratings) == 1
        # The job really ran twice: both workers asked for the file. Counted as requests
        # arrive: the server may never finish answering the first, whose client has gone.
        assert fake_bot_api.arrived("getFile") >= 2


async def test_redis_killed_and_restarted_mid_job_the_song_arrives_and_is_recorded(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    separator: EnsembleSeparator,
    restartable_redis: RedisServer,
    tmp_path: Path,
) -> None:
    settings = service_settings(redis_url=restartable_redis.url)
    job_id = separation_job_id(1, ["vocals"])
    # Long enough to kill Redis while it separates.
    long_song = make_song(tmp_path / "Test Song.mp3", seconds=20.0, seed=51)
    async with running_bot(settings) as bot, running_worker(settings, separator):
        sent = fake_bot_api.send_audio(USER, long_song)
        await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
        await status_edited_to(fake_bot_api, "Separating")
        restartable_redis.kill()
        # Meanwhile another user presses Separate: told to try again, nothing lost.
        other_song = fake_bot_api.send_audio(OTHER, long_song)
        picker = await picker_for(fake_bot_api, OTHER, other_song)
        await press(fake_bot_api, OTHER, picker, picker.button("bass").callback_data or "")
        refused = await press(
            fake_bot_api, OTHER, picker, picker.button("Separate").callback_data or ""
        )
        assert refused.show_alert and refused.text == texts.QUEUE_DOWN
        restartable_redis.start()
        job = await async_wait_until(
            lambda: _finished(bot.services.db.get_job(job_id)), timeout=JOB_TIMEOUT_S
        )
        assert job.status == "done"
        again = await press(
            fake_bot_api, OTHER, picker, picker.button("Separate").callback_data or ""
        )
        assert not again.show_alert, again.text
    tracks = fake_bot_api.audio_messages(USER)
    assert [t.file_name for t in tracks] == ["Test Song - vocals.mp3", "Test Song - no_vocals.mp3"]
    assert len([m for m in fake_bot_api.chat_messages(USER) if RATING_PROMPT in m.content]) == 1
