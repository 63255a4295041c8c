"""Floods and hostile text: one user's many songs or presses cost nobody else anything, and
no user-supplied name can break a message or a file name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot import texts
from common import callback_data as cd
from common.jobs import separation_job_id
from common.settings import Settings
from separation import EnsembleSeparator
from storage import Database
from tests.bot.conftest import answer_to, picker_for, press, running_bot
from tests.support.audio import make_song
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.waiting import async_wait_until
from tests.support.workers import running_worker

FLOODER, OTHER, EARLY = 301, 302, 303


async def test_uploads_over_the_hourly_limit_get_one_message_and_no_picker(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings(uploads_per_hour=2)) as bot:
        for _ in range(2):
            await picker_for(fake_bot_api, FLOODER, fake_bot_api.send_audio(FLOODER, song))
        third = fake_bot_api.send_audio(FLOODER, song)
        refusal = await answer_to(fake_bot_api, FLOODER, third)
        assert refusal.content == texts.too_many_uploads(2)
        assert "2 songs in an hour" in refusal.content
        fourth = fake_bot_api.send_audio(FLOODER, song)

        # Someone else is served meanwhile, and the flood left no trace after the warning.
        await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))
        after_fourth = [
            m for m in fake_bot_api.chat_messages(FLOODER) if m.message_id > fourth.message_id
        ]
        assert after_fourth == []
        assert (await bot.services.db.stats()).requests == 3


async def test_the_limits_outlive_a_bot_restart(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    # The windows are in Redis: a restarted bot does not hand the flooder a fresh allowance.
    settings = service_settings(uploads_per_hour=2)
    async with running_bot(settings):
        for _ in range(2):
            await picker_for(fake_bot_api, FLOODER, fake_bot_api.send_audio(FLOODER, song))
    async with running_bot(settings):
        third = fake_bot_api.send_audio(FLOODER, song)
        refusal = await answer_to(fake_bot_api, FLOODER, third)
        assert refusal.content == texts.too_many_uploads(2)
        await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))


async def test_presses_over_the_limit_change_nothing(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings(presses_per_minute=3)) as bot:
        picker = await picker_for(fake_bot_api, FLOODER, fake_bot_api.send_audio(FLOODER, song))
        for source in ("drums", "bass", "vocals"):
            answer = await press(fake_bot_api, FLOODER, picker, cd.toggle(1, source))
            assert not answer.show_alert
        refused = await press(fake_bot_api, FLOODER, picker, cd.toggle(1, "piano"))
        assert (refused.text, refused.show_alert) == (texts.too_many_presses(3), True)
        assert await bot.services.db.selection(1) == {"drums", "bass", "vocals"}

        other = await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))
        assert not (await press(fake_bot_api, OTHER, other, cd.toggle(2, "piano"))).show_alert
        assert await bot.services.db.selection(2) == {"piano"}


HOSTILE_NAME = "../../etc/<Tom & Jerry> \u202eevil\u202c\x00\x1b[31m " + "🎸" * 120 + ".mp3"


async def test_a_hostile_file_name_is_shown_safely(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings()) as bot:
        sent = fake_bot_api.send_audio(FLOODER, song, file_name=HOSTILE_NAME, title="<i>x</i>")
        picker = await picker_for(fake_bot_api, FLOODER, sent)
        request = await bot.services.db.get_request(1)
        assert request is not None
        name = request.song_name
        # No directories, markup brackets, control or bidi characters; capped in bytes.
        assert name.startswith("Tom & Jerry evil[31m 🎸")
        assert not any(ch in name for ch in "/\\<>\x00\x1b\u202e\u202c")
        assert len(name.encode()) <= 200
        # Telegram's HTML parse mode took the text: the & shows as sent.
        assert "Tom & Jerry" in picker.content
        await press(fake_bot_api, FLOODER, picker, cd.toggle(1, "vocals"))
        redrawn = await async_wait_until(
            lambda: (m := fake_bot_api.message(FLOODER, picker.message_id)) and m.history and m,
            what="the picker redrawn",
        )
        assert "Tom & Jerry" in redrawn.content and "no_vocals" in redrawn.content


@pytest.mark.parametrize("max_jobs", [1, 2])
async def test_a_flooder_holds_at_most_their_job_limit_ahead_of_anyone_else(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    separator: EnsembleSeparator,
    tmp_path: Path,
    max_jobs: int,
) -> None:
    """The fairness promise: with ``max_active_jobs_per_user`` = N, a user who sends many
    songs and presses Separate on all of them (at once, and with another stem set) has at
    most N jobs queued or running; the others are refused with the limit named, and someone
    who comes after waits behind at most N of theirs (plus what others queued before)."""
    settings = service_settings(max_active_jobs_per_user=max_jobs)
    song = make_song(tmp_path / "Song.mp3", seconds=1.0)
    async with running_bot(settings) as bot:
        # Someone was already waiting before the flood: the newcomer waits behind them too.
        early = await picker_for(fake_bot_api, EARLY, fake_bot_api.send_audio(EARLY, song))
        await press(fake_bot_api, EARLY, early, cd.toggle(1, "bass"))
        assert not (await press(fake_bot_api, EARLY, early, cd.separate(1))).show_alert

        pickers = []
        for _ in range(3):
            sent = fake_bot_api.send_audio(FLOODER, song)
            pickers.append(await picker_for(fake_bot_api, FLOODER, sent))
        requests = [_request_id(picker) for picker in pickers]
        for picker, request_id in zip(pickers, requests, strict=True):
            await press(fake_bot_api, FLOODER, picker, cd.toggle(request_id, "vocals"))
        # The flooder presses Separate on the three songs at once (one burst of updates),
        # then picks another stem set for the first song and presses again.
        queries = [
            fake_bot_api.press_button(FLOODER, picker, cd.separate(request_id))
            for picker, request_id in zip(pickers, requests, strict=True)
        ]
        await fake_bot_api.async_wait_for_answer(queries[0])
        await press(fake_bot_api, FLOODER, pickers[0], cd.toggle(requests[0], "drums"))
        queries += [fake_bot_api.press_button(FLOODER, pickers[0], cd.separate(requests[0]))]
        answers = [await fake_bot_api.async_wait_for_answer(query) for query in queries]
        refusals = [answer for answer in answers if answer.show_alert]
        assert len(answers) - len(refusals) == max_jobs
        assert {(a.text, a.show_alert) for a in refusals} == {(texts.too_many_jobs(max_jobs), True)}
        assert await bot.services.db.active_job_count(FLOODER) == max_jobs
        statuses = [m for m in fake_bot_api.chat_messages(FLOODER) if "Queued" in m.content]
        assert len(statuses) == max_jobs

        newcomer = await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))
        other_request = _request_id(newcomer)
        await press(fake_bot_api, OTHER, newcomer, cd.toggle(other_request, "piano"))
        assert not (
            await press(fake_bot_api, OTHER, newcomer, cd.separate(other_request))
        ).show_alert
        status = await async_wait_until(
            lambda: fake_bot_api.last_message(OTHER, containing="Queued")
        )
        # One job of the early user and N of the flooder's are ahead, no more.
        assert status.content == texts.queued(1 + max_jobs + 1)
        snapshot = await bot.services.queue.snapshot([separation_job_id(other_request, ["piano"])])
        assert snapshot.states[separation_job_id(other_request, ["piano"])].position == max_jobs + 2

        # Once the flooder's jobs are done, they may start the next one.
        flooder_jobs = [
            job for job in await bot.services.db.jobs_in_flight() if job.user_id == FLOODER
        ]
        async with running_worker(settings, separator):
            for job in flooder_jobs:
                await async_wait_until(
                    lambda job=job: _done(bot.services.db, job.job_id),
                    timeout=120.0,
                    what=f"{job.job_id} to be recorded done",
                )
            refused = next(
                (picker, request_id)
                for picker, request_id, answer in zip(pickers, requests, answers, strict=False)
                if answer.show_alert
            )
            again = await press(fake_bot_api, FLOODER, refused[0], cd.separate(refused[1]))
            assert not again.show_alert, again.text
            assert await bot.services.db.active_job_count(FLOODER) == 1


def _request_id(picker: ChatMessage) -> int:
    parsed = cd.parse(picker.button("Separate").callback_data)
    assert parsed is not None
    return parsed.request_id


async def _done(db: Database, job_id: str) -> bool:
    job = await db.get_job(job_id)
    return job is not None and job.status == "done"
