"""Floods and hostile text: one user's many songs or presses cost nobody else anything, and
no user-supplied name can break a message or a file name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bot import texts
from common import callback_data as cd
from common.settings import Settings
from tests.bot.conftest import answer_to, picker_for, press, running_bot
from tests.support.fake_bot_api import FakeBotApi
from tests.support.waiting import async_wait_until

FLOODER, OTHER = 301, 302


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
