"""The chat front end against the fake Bot API and a real Redis (no worker needed here)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from bot import texts
from common import callback_data as cd
from common.jobs import separation_job_id
from common.settings import Settings
from tests.bot.conftest import answer_to, current, picker_buttons, picker_for, press, running_bot
from tests.support.fake_bot_api import FakeBotApi
from tests.support.redis_server import RedisServer, free_port, mark_running, redis_client
from tests.support.waiting import async_wait_until

USER, OTHER = 101, 202
GROUP = -1001234


def queued_job_ids(redis_url: str) -> list[str]:
    with redis_client(redis_url) as client:
        return [member.decode() for member in client.zrange("arq:queue", 0, -1)]


async def test_start_and_help_explain_what_to_send(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi
) -> None:
    async with running_bot(service_settings(max_file_mb=20, max_duration_s=600)):
        for command in ("/start", "/help"):
            answer = await answer_to(fake_bot_api, USER, fake_bot_api.send_text(USER, command))
            assert "mp3" in answer.content
            assert "20 MB" in answer.content and "10 min" in answer.content
            assert "Separate" in answer.content and "vocals" in answer.content
        assert [c["command"] for c in fake_bot_api.commands()] == ["start", "help", "settings"]


async def test_picker_toggles_all_and_survives_as_buttons(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings()) as bot:
        sent = fake_bot_api.send_audio(USER, song, title="Test Song", performer="Test Artist")
        picker = await picker_for(fake_bot_api, USER, sent)
        assert "Test Song" in picker.content
        assert picker.keyboard == picker_buttons(1)

        await press(fake_bot_api, USER, picker, picker.button("vocals").callback_data or "")
        picker = await current(fake_bot_api, picker)
        assert picker.keyboard == picker_buttons(1, picked={"vocals"})
        assert "vocals, no_vocals" in picker.content

        await press(fake_bot_api, USER, picker, picker.button("drums").callback_data or "")
        await press(fake_bot_api, USER, picker, picker.button("vocals").callback_data or "")
        picker = await current(fake_bot_api, picker)
        assert picker.keyboard == picker_buttons(1, picked={"drums"})

        await press(fake_bot_api, USER, picker, picker.button("All").callback_data or "")
        picker = await current(fake_bot_api, picker)
        assert picker.keyboard == picker_buttons(1, picked=set(cd.SOURCES))
        request = await bot.services.db.get_request(1)
        assert request is not None and request.song_name == "Test Song"
        assert await bot.services.db.selection(1) == set(cd.SOURCES)


async def test_separate_with_nothing_picked_alerts_and_starts_nothing(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path, redis_url: str
) -> None:
    async with running_bot(service_settings()) as bot:
        picker = await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))
        answer = await press(fake_bot_api, USER, picker, picker.button("Separate").callback_data)
        assert answer.show_alert and answer.text == texts.NOTHING_PICKED
        assert queued_job_ids(redis_url) == []
        assert len(fake_bot_api.chat_messages(USER)) == 1  # the picker only
        assert (await bot.services.db.stats()).jobs["queued"] == 0


async def test_separate_posts_one_status_and_a_double_press_runs_one_job(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path, redis_url: str
) -> None:
    async with running_bot(service_settings()) as bot:
        sent = fake_bot_api.send_audio(USER, song)
        picker = await picker_for(fake_bot_api, USER, sent)
        await press(fake_bot_api, USER, picker, picker.button("bass").callback_data or "")
        await press(fake_bot_api, USER, picker, picker.button("vocals").callback_data or "")
        separate = picker.button("Separate").callback_data or ""
        first = fake_bot_api.press_button(USER, picker, separate)
        second = fake_bot_api.press_button(USER, picker, separate)
        await async_wait_until(
            lambda: fake_bot_api.answer_for(first) and fake_bot_api.answer_for(second)
        )
        answer = fake_bot_api.answer_for(second)
        assert answer is not None and answer.text == texts.ALREADY_QUEUED

        job_id = separation_job_id(1, ["bass", "vocals"])
        assert queued_job_ids(redis_url) == [job_id]
        statuses = [m for m in fake_bot_api.chat_messages(USER) if "Queued" in m.content]
        assert len(statuses) == 1
        assert statuses[0].reply_to == sent.message_id
        job = await bot.services.db.get_job(job_id)
        assert job is not None
        assert (job.status, job.stems, job.status_message_id) == (
            "queued",
            ("bass", "vocals"),
            statuses[0].message_id,
        )


async def test_one_active_job_per_user_by_default(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path, redis_url: str
) -> None:
    async with running_bot(service_settings()):
        pickers = []
        for _ in range(2):
            pickers.append(
                await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))
            )
        for picker in pickers:
            await press(fake_bot_api, USER, picker, picker.button("vocals").callback_data or "")
        await press(fake_bot_api, USER, pickers[0], pickers[0].button("Separate").callback_data)
        answer = await press(
            fake_bot_api, USER, pickers[1], pickers[1].button("Separate").callback_data or ""
        )
        assert answer.show_alert and answer.text == texts.too_many_jobs(1)
        assert queued_job_ids(redis_url) == [separation_job_id(1, ["vocals"])]

        # Someone else is not held up by it, and sees their place in the queue.
        other = await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))
        await press(fake_bot_api, OTHER, other, other.button("drums").callback_data or "")
        await press(fake_bot_api, OTHER, other, other.button("Separate").callback_data or "")
        status = fake_bot_api.last_message(OTHER)
        assert status is not None and status.content == texts.queued(2)
        assert len(queued_job_ids(redis_url)) == 2


async def test_forged_stale_and_garbage_buttons_get_an_alert_and_change_nothing(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path, redis_url: str
) -> None:
    async with running_bot(service_settings()) as bot:
        picker = await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))
        await press(fake_bot_api, USER, picker, picker.button("piano").callback_data or "")
        picker = await current(fake_bot_api, picker)
        other_picker = await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))
        for data in (
            "garbage",
            "t:1:kazoo",
            "s:1:x",
            cd.toggle(999, "vocals"),  # no such request
            cd.separate(999),
            cd.vote(1, "up", ["piano"]),  # a rating of a job that does not exist
            cd.vote(1, "down"),  # an old rating button of a request without a job
            "💥" * 20,
        ):
            answer = await press(fake_bot_api, USER, picker, data)
            assert answer.show_alert and answer.text == texts.STALE_BUTTON, data
        # A request of another chat, pressed from this chat's message: forged.
        answer = await press(fake_bot_api, USER, picker, cd.separate(2))
        assert answer.show_alert and answer.text == texts.STALE_BUTTON
        # The other user's own chat, their own request, but pressed by USER: not theirs.
        answer = await press(fake_bot_api, USER, other_picker, cd.toggle(2, "bass"))
        assert answer.show_alert and answer.text == texts.NOT_YOUR_SONG

        assert await bot.services.db.selection(1) == {"piano"}
        assert await bot.services.db.selection(2) == set()
        assert queued_job_ids(redis_url) == []
        assert (await current(fake_bot_api, picker)).history == picker.history


async def test_in_a_group_only_the_sender_can_press_the_buttons(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path, redis_url: str
) -> None:
    async with running_bot(service_settings()) as bot:
        sent = fake_bot_api.send_audio(USER, song, chat_id=GROUP, chat_type="supergroup")
        picker = await picker_for(fake_bot_api, GROUP, sent)
        for label in ("vocals", "All", "Separate"):
            answer = await press(fake_bot_api, OTHER, picker, picker.button(label).callback_data)
            assert answer.show_alert and answer.text == texts.NOT_YOUR_SONG
        assert await bot.services.db.selection(1) == set()
        assert queued_job_ids(redis_url) == []

        await press(fake_bot_api, USER, picker, picker.button("vocals").callback_data or "")
        await press(fake_bot_api, USER, picker, picker.button("Separate").callback_data or "")
        assert queued_job_ids(redis_url) == [separation_job_id(1, ["vocals"])]


async def test_picker_survives_a_bot_restart(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path, redis_url: str
) -> None:
    settings = service_settings()
    async with running_bot(settings):
        sent = fake_bot_api.send_audio(USER, song)
        picker = await picker_for(fake_bot_api, USER, sent)
        await press(fake_bot_api, USER, picker, picker.button("guitar").callback_data or "")
        await press(fake_bot_api, USER, picker, picker.button("piano").callback_data or "")
    async with running_bot(settings) as bot:
        picker = await current(fake_bot_api, picker)
        answer = await press(fake_bot_api, USER, picker, picker.button("Separate").callback_data)
        assert not answer.show_alert
        job_id = separation_job_id(1, ["guitar", "piano"])
        assert queued_job_ids(redis_url) == [job_id]
        job = await bot.services.db.get_job(job_id)
        assert job is not None and job.stems == ("guitar", "piano")


async def test_redis_unreachable_at_enqueue_then_recovered(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens here yet
    url = f"redis://127.0.0.1:{port}/0"
    async with running_bot(service_settings(redis_url=url)) as bot:
        picker = await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))
        await press(fake_bot_api, USER, picker, picker.button("vocals").callback_data or "")
        answer = await press(fake_bot_api, USER, picker, picker.button("Separate").callback_data)
        assert answer.show_alert and answer.text == texts.QUEUE_DOWN
        assert "try again" in answer.text
        # Nothing started, nothing lost.
        assert await bot.services.db.selection(1) == {"vocals"}
        assert (await bot.services.db.stats()).to_dict()["jobs"]["queued"] == 0
        assert not [m for m in fake_bot_api.chat_messages(USER) if "Queued" in m.content]

        server = RedisServer(tmp_path / "redis-late", port=port).start()
        try:
            answer = await press(
                fake_bot_api, USER, picker, picker.button("Separate").callback_data
            )
            assert not answer.show_alert
            assert queued_job_ids(url) == [separation_job_id(1, ["vocals"])]
            assert fake_bot_api.last_message(USER, containing="Queued") is not None
        finally:
            server.stop()

        # Redis goes away again while the bot holds a connection pool to it.
        other = await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))
        await press(fake_bot_api, OTHER, other, other.button("bass").callback_data or "")
        answer = await press(fake_bot_api, OTHER, other, other.button("Separate").callback_data)
        assert answer.show_alert and answer.text == texts.QUEUE_DOWN
        assert await bot.services.db.selection(2) == {"bass"}


async def test_stats_command_is_for_admins_only(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings(admin_ids=frozenset({USER}))):
        await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))
        refused = await answer_to(fake_bot_api, OTHER, fake_bot_api.send_text(OTHER, "/stats"))
        assert refused.content == texts.ADMINS_ONLY
        granted = await answer_to(fake_bot_api, USER, fake_bot_api.send_text(USER, "/stats"))
        assert "Requests: 1 from 1 users" in granted.content
        assert "Feedback" in granted.content
        assert "experiment" not in granted.content


async def test_stats_command_adds_the_experiment_once_it_has_jobs(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    settings = service_settings(
        admin_ids=frozenset({USER}), experiment="blend-vs-route: route=50,blend=50"
    )
    async with running_bot(settings) as bot:
        before = await answer_to(fake_bot_api, USER, fake_bot_api.send_text(USER, "/stats"))
        assert "Requests: 0" in before.content and "experiment" not in before.content

        await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))
        db = bot.services.db
        for job_id, variant, vote in (
            ("a", "route", "up"),
            ("b", "route", "up"),
            ("c", "blend", "down"),
        ):
            await db.add_job(
                job_id=job_id, request_id=1, chat_id=USER, user_id=USER, stems=["vocals"],
                status_message_id=None, experiment="blend-vs-route", variant=variant,
            )  # fmt: skip
            await db.set_vote(job_id, USER, vote)
        after = await answer_to(fake_bot_api, USER, fake_bot_api.send_text(USER, "/stats"))
        assert "Requests: 1 from 1 users" in after.content
        lines = after.content.splitlines()
        start = lines.index("experiment blend-vs-route")
        assert lines[start + 2].split()[:5] == ["route", "2", "2", "2", "0"]
        assert lines[start + 3].split()[:5] == ["blend", "1", "1", "0", "1"]


async def test_status_message_follows_the_queue_position(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path, redis_url: str
) -> None:
    async with running_bot(service_settings()) as bot:
        for user in (USER, OTHER):
            picker = await picker_for(fake_bot_api, user, fake_bot_api.send_audio(user, song))
            await press(fake_bot_api, user, picker, picker.button("vocals").callback_data or "")
            await press(fake_bot_api, user, picker, picker.button("Separate").callback_data)
        status = fake_bot_api.last_message(OTHER, containing="Queued")
        assert status is not None and status.content == texts.queued(2)

        # A worker picks the first job up (arq's in-progress mark, as any worker sets it).
        first = separation_job_id(1, ["vocals"])
        mark_running(redis_url, first)
        await async_wait_until(
            lambda: (
                (m := fake_bot_api.message(OTHER, status.message_id))
                and m.content == texts.queued(1)
            ),
            what="the second job's status to move up",
        )
        job = await async_wait_until(
            lambda: _running(bot.services.db.get_job(first)), what="the first job to run"
        )
        assert job.started_at is not None and job.queue_position is None


async def _running(job: object) -> object:
    record = await job  # type: ignore[misc]
    return record if record is not None and record.status == "running" else None


async def test_a_failing_telegram_call_is_logged_and_the_bot_keeps_serving(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with running_bot(service_settings()):
        fake_bot_api.fail_next("sendMessage", status=400, description="Bad Request: boom")
        fake_bot_api.send_text(USER, "/help")
        record = await async_wait_until(
            lambda: next(
                (r for r in caplog.records if r.getMessage().startswith("handler error")), None
            )
        )
        assert record.levelno == logging.ERROR and record.exc_info is not None
        assert "boom" in record.getMessage().lower()
        await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))
