"""The mixer across the whole service (issue 18): the real bot, worker and `demix web`.

The worker's Mix button survives a vote (the bot redraws the keyboard), the bot's watcher
stores the mix record in SQLite from the job's result, and the web app still opens the mix
from SQLite once Redis has lost its copy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
from redis.asyncio import Redis

from common.mixes import MixRecord, redis_key
from common.rating import RATING_PROMPT
from common.settings import Settings
from separation import EnsembleSeparator
from tests.bot.conftest import press, running_bot
from tests.bot.test_end_to_end import JOB_TIMEOUT_S, pick_and_separate, wait_for_tracks
from tests.support.fake_bot_api import TEST_TOKEN, ChatMessage, FakeBotApi
from tests.support.telegram_webapp import sign_init_data, webapp_user
from tests.support.waiting import async_wait_until
from tests.support.web import running_web_app
from tests.support.workers import running_worker

USER = 311
WEBAPP_URL = "https://mix.example.org"


def mix_url(message: ChatMessage) -> str | None:
    for row in (message.reply_markup or {}).get("inline_keyboard", []):
        for button in row:
            if "web_app" in button and "Mix" in button["text"]:
                return str(button["web_app"]["url"])
    return None


async def test_the_mix_is_stored_by_the_bot_survives_a_vote_and_a_redis_flush(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
) -> None:
    settings = service_settings(webapp_url=WEBAPP_URL)
    async with running_bot(settings) as bot, running_worker(settings, separator):
        sent = fake_bot_api.send_audio(USER, song, title="Test Song")
        await pick_and_separate(fake_bot_api, USER, sent, ["vocals"])
        await wait_for_tracks(fake_bot_api, USER, 2)
        rating = await async_wait_until(
            lambda: fake_bot_api.last_message(USER, containing=RATING_PROMPT),
            timeout=JOB_TIMEOUT_S,
        )
        url = mix_url(rating)
        assert url is not None and url.startswith(WEBAPP_URL + "/mix/")
        mix_id = url.rsplit("/", 1)[1]

        # The watcher records the job and its mix in SQLite.
        stored = await async_wait_until(
            lambda: bot.services.db.get_mix(mix_id), timeout=JOB_TIMEOUT_S, what="the mix row"
        )
        record = MixRecord.from_json(stored)
        assert record.user_id == USER and record.track_names == ("vocals", "no_vocals")

        # A vote redraws the keyboard: the Mix button stays, with its URL.
        await press(fake_bot_api, USER, rating, rating.button("👍").callback_data or "")
        # (The answer to the press comes first, the redraw a moment later.)
        voted = await async_wait_until(
            lambda: (
                (m := fake_bot_api.message(USER, rating.message_id))
                and "✅" in m.button("👍").text
                and m
            ),
            what="the redrawn rating keyboard",
        )
        assert mix_url(voted) == url

    # Redis loses the worker's copy: the web app finds the mix in SQLite.
    redis = Redis.from_url(settings.redis_url)
    assert await redis.delete(redis_key(mix_id)) == 1
    await redis.aclose()
    auth = {"Authorization": "tma " + sign_init_data(TEST_TOKEN, webapp_user(USER))}
    async with (
        running_web_app(settings) as base,
        aiohttp.ClientSession() as http,
        http.get(f"{base}/api/mixes/{mix_id}", headers=auth) as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert [track["name"] for track in body["tracks"]] == ["vocals", "no_vocals"]
    assert all(track["url"] for track in body["tracks"])
