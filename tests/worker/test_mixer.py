"""The worker's side of the mixer (issue 18): each delivered track's file_id in the ledger,
the mix record in Redis and in the job's result, the 🎚 Mix Web App button in private chats
only, and the record opening in `demix web` with tracks that sum to the song."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
from arq.connections import ArqRedis

from common.jobs import SEPARATE_JOB, JobOutcome, SeparationJob, separation_job_id
from common.mixes import MixRecord, is_mix_id, redis_key
from common.settings import Settings
from separation import EnsembleSeparator
from tests.support.audio import decode
from tests.support.fake_bot_api import TEST_TOKEN, ChatMessage, FakeBotApi
from tests.support.telegram_webapp import sign_init_data, webapp_user
from tests.support.web import running_web_app
from tests.support.workers import run_worker_burst
from tests.worker.conftest import assert_sums_to_mix, rating_messages, result_of, submit

WEBAPP_URL = "http://127.0.0.1:8099/app"


def web_app_buttons(message: ChatMessage) -> list[dict[str, object]]:
    markup = message.reply_markup or {}
    return [b for row in markup.get("inline_keyboard", []) for b in row if "web_app" in b]


async def test_a_private_chat_gets_the_mix_button_and_the_mix_opens_in_the_web_app(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
    tmp_path: Path,
) -> None:
    settings = service_settings(webapp_url=WEBAPP_URL)
    submitted = await submit(fake_bot_api, pool, song, ("vocals", "drums"))
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)

    chat = submitted.job.chat_id
    [rating] = rating_messages(fake_bot_api, chat)
    [button] = web_app_buttons(rating)
    assert "Mix" in str(button["text"])
    url = str(button["web_app"]["url"])  # type: ignore[index]
    assert url.startswith(WEBAPP_URL + "/mix/")
    mix_id = url.removeprefix(WEBAPP_URL + "/mix/")
    assert is_mix_id(mix_id)

    # The record is in Redis (the worker's copy) and in the job's result (the bot's).
    stored = await pool.get(redis_key(mix_id))
    assert stored is not None
    record = MixRecord.from_json(stored)
    info = await result_of(pool, submitted.job_id)
    outcome = JobOutcome.from_result(info.result)
    assert outcome.mix is not None and MixRecord.from_dict(outcome.mix) == record
    audios = fake_bot_api.audio_messages(chat)
    assert record.track_names == ("drums", "vocals", "rest")
    assert [t.file_id for t in record.tracks] == [m.file.file_id for m in audios if m.file]
    assert (record.user_id, record.chat_id, record.song_name) == (
        submitted.job.user_id,
        chat,
        "Test Song",
    )
    assert record.job_id == submitted.job_id and record.output_format == "mp3"

    # `demix web` opens it for the song's sender, and its tracks sum to the song.
    auth = {"Authorization": "tma " + sign_init_data(TEST_TOKEN, webapp_user(record.user_id))}
    async with running_web_app(settings) as base, aiohttp.ClientSession() as http:
        async with http.get(f"{base}/api/mixes/{mix_id}", headers=auth) as response:
            assert response.status == 200
            body = await response.json()
        assert [t["name"] for t in body["tracks"]] == ["drums", "vocals", "rest"]
        decoded = []
        for track in body["tracks"]:
            assert track["error"] is None and len(track["peaks"]) > 100
            async with http.get(base + track["url"]) as response:
                assert response.status == 200
                path = tmp_path / f"{track['name']}.mp3"
                path.write_bytes(await response.read())
            decoded.append(decode(path))
    assert_sums_to_mix(decode(song), decoded)


async def test_a_group_chat_gets_no_mix_button_and_no_record(
    fake_bot_api: FakeBotApi,
    service_settings: Callable[..., Settings],
    pool: ArqRedis,
    separator: EnsembleSeparator,
    song: Path,
) -> None:
    settings = service_settings(webapp_url=WEBAPP_URL)
    group, user = -100777, 501
    message = fake_bot_api.send_audio(user, song, chat_id=group, chat_type="supergroup")
    assert message.file is not None
    async with fake_bot_api.bot() as bot:
        status = await bot.send_message(group, "⏳ Queued: you're next.")
    job = SeparationJob(
        request_id=777001,
        chat_id=group,
        user_id=user,
        file_id=message.file.file_id,
        song_name="Test Song",
        stems=("vocals",),
        status_message_id=status.message_id,
        reply_to_message_id=message.message_id,
    )
    assert not job.private_chat
    job_id = separation_job_id(job.request_id, job.stems)
    assert await pool.enqueue_job(SEPARATE_JOB, _job_id=job_id, **job.to_kwargs())
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)

    # The rating message went out (Telegram refuses a Web App button in a group) without one.
    [rating] = rating_messages(fake_bot_api, group)
    assert web_app_buttons(rating) == []
    outcome = JobOutcome.from_result((await result_of(pool, job_id)).result)
    assert outcome.mix is None
    assert await pool.keys("demix:mix:*") == []
