"""Telegram's flood control (429 with ``retry_after``) on the bot's own requests, on real
parts: the bot's Application polling the fake Bot API over HTTP, Redis and SQLite. A 429 is
waited out for its chat alone, the request is sent again once, and the other chats go on
being served meanwhile; nothing in the chat is dropped or reordered."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bot import texts
from common import callback_data as cd
from common.i18n import translate
from common.jobs import separation_job_id
from common.settings import Settings
from tests.bot.conftest import RunningBot, picker_for, press, running_bot
from tests.bot.test_end_to_end import pick_and_separate
from tests.support.fake_bot_api import ApiCall, ChatMessage, FakeBotApi
from tests.support.redis_server import redis_client
from tests.support.waiting import async_wait_until

A, B = 501, 502
# Telegram asks for tens of seconds; a few keep the tests quick and still far above the
# bound on the other chat's delay.
RETRY_AFTER_S = 3
# How late the other chat's picker may be: it does not wait for chat A at all, so this only
# covers a slow test machine.
OTHER_CHAT_BOUND_S = 1.0
# Where a test only needs the 429 waited out (no race against another chat's request), the
# shortest wait Telegram can ask for: a request sent again at once is still milliseconds.
SHORT_RETRY_AFTER_S = 1


def to_chat(chat_id: int) -> Callable[[dict[str, object]], bool]:
    """A fault filter: the request is to ``chat_id``."""
    return lambda params: params.get("chat_id") == chat_id


def sends_to(api: FakeBotApi, chat_id: int) -> list[ApiCall]:
    return [call for call in api.calls("sendMessage") if call.params.get("chat_id") == chat_id]


def count_429(bot: RunningBot, method: str) -> float | None:
    return bot.services.metrics.registry.get_sample_value(
        "demix_telegram_429_total", {"method": method}
    )


async def test_a_429_on_one_chats_picker_holds_up_that_chat_alone(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    api = fake_bot_api
    async with running_bot(service_settings()) as bot:
        api.fail_next("sendMessage", status=429, retry_after=RETRY_AFTER_S, when=to_chat(A))
        song_a = api.send_audio(A, song)
        sent_b = time.time()
        song_b = api.send_audio(B, song)

        picker_b = await picker_for(api, B, song_b)
        assert not [m for m in api.chat_messages(A) if m.has_keyboard], "B's picker came first"
        [reply_b] = [call for call in sends_to(api, B) if call.ok]
        b_delay = reply_b.at - sent_b
        assert b_delay < OTHER_CHAT_BOUND_S, f"chat B waited {b_delay:.2f} s for chat A"

        picker_a = await picker_for(api, A, song_a)
        throttled, reply_a = sends_to(api, A)
        assert (throttled.status, reply_a.status) == (429, 200)
        assert reply_a.at - throttled.at >= RETRY_AFTER_S - 0.1, "retry_after honoured"
        assert reply_a.at > reply_b.at
        # Exactly one picker each, in its own chat, replying to its song.
        assert [m.message_id for m in api.chat_messages(A)] == [picker_a.message_id]
        assert [m.message_id for m in api.chat_messages(B)] == [picker_b.message_id]
        assert await bot.services.db.get_request(1) is not None
        assert count_429(bot, "sendMessage") == 1
        print(f"chat B's picker {b_delay:.3f} s after its song; chat A's after the 429's wait")


async def test_two_messages_to_a_throttled_chat_arrive_in_order(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    api = fake_bot_api
    async with running_bot(service_settings()):
        api.fail_next("sendMessage", status=429, retry_after=SHORT_RETRY_AFTER_S, when=to_chat(A))
        first = api.send_audio(A, song)
        second = api.send_audio(A, song)
        help_request = api.send_text(A, "/help")
        await async_wait_until(
            lambda: len(api.chat_messages(A)) == 3, timeout=15, what="three replies in chat A"
        )
        replies = api.chat_messages(A)
        # In the order the user sent, each once: the first picker waited out the 429 and the
        # others waited behind it.
        assert [m.reply_to for m in replies[:2]] == [first.message_id, second.message_id]
        assert all(m.has_keyboard for m in replies[:2])
        assert replies[2].message_id > help_request.message_id
        assert "mp3" in replies[2].content and not replies[2].has_keyboard
        assert [call.status for call in sends_to(api, A)] == [429, 200, 200, 200]


async def test_a_429_on_a_redraw_keeps_the_chats_presses_in_order(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    api = fake_bot_api
    async with running_bot(service_settings()) as bot:
        picker = await picker_for(api, A, api.send_audio(A, song))
        other = await picker_for(api, B, api.send_audio(B, song))
        api.fail_next("editMessageText", status=429, retry_after=2, when=to_chat(A))
        presses = [
            api.press_button(A, picker, cd.toggle(1, source)) for source in ("vocals", "drums")
        ]
        # Chat B's press is served while chat A's first redraw waits.
        answer_b = await press(api, B, other, cd.toggle(2, "bass"))
        assert not answer_b.show_alert
        assert api.answer_for(presses[0]) is None, "chat A's first press still waits"

        for query in presses:
            await api.async_wait_for_answer(query)
        redrawn = api.message(A, picker.message_id)
        assert redrawn is not None
        # Both redraws, in the order pressed: vocals first, then vocals and drums.
        assert [_tracks_line(text) for text in redrawn.texts] == [
            None,
            "You will get: vocals, no_vocals.",
            "You will get: drums, vocals, rest.",
        ]
        assert redrawn.button("drums").text.startswith("✅")
        assert redrawn.button("vocals").text.startswith("✅")
        assert await bot.services.db.selection(1) == {"vocals", "drums"}
        edits = [c for c in api.calls("editMessageText") if c.params.get("chat_id") == A]
        assert [c.status for c in edits] == [429, 200, 200]
        assert count_429(bot, "editMessageText") == 1


async def test_a_429_on_an_alert_is_retried(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    api = fake_bot_api
    async with running_bot(service_settings()) as bot:
        picker = await picker_for(api, A, api.send_audio(A, song))
        api.fail_next("answerCallbackQuery", status=429, retry_after=SHORT_RETRY_AFTER_S)
        # Separate with nothing picked: an alert, and nothing starts.
        answer = await press(api, A, picker, cd.separate(1))
        assert answer.show_alert
        assert answer.text == translate(texts.NOTHING_PICKED, "en")
        throttled, answered = api.calls("answerCallbackQuery")
        assert (throttled.status, answered.status) == (429, 200)
        assert answered.at - throttled.at >= SHORT_RETRY_AFTER_S - 0.1
        assert len(api.callback_answers()) == 1
        assert count_429(bot, "answerCallbackQuery") == 1


async def test_a_429_on_a_queue_position_holds_up_no_check_of_the_watcher(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    redis_url: str,
) -> None:
    api = fake_bot_api
    async with running_bot(service_settings()) as bot:
        watcher = bot.services.watcher
        assert watcher is not None
        await pick_and_separate(api, B, api.send_audio(B, song), ["piano"])
        await pick_and_separate(api, A, api.send_audio(A, song), ["piano"])
        status = await async_wait_until(lambda: api.last_message(A, containing="Queued"))
        assert status is not None and status.content == texts.queued(2)

        api.fail_next("editMessageText", status=429, retry_after=2, when=to_chat(A))
        with redis_client(redis_url) as client:
            # B's job leaves the queue (lost, as a Redis without persistence would): A's
            # job moves up, and the watcher shows it.
            client.zrem("arq:queue", separation_job_id(1, ["piano"]))
        throttled = await async_wait_until(
            lambda: next((c for c in api.calls("editMessageText") if c.status == 429), None),
            what="the 429 on chat A's status",
        )
        assert throttled is not None
        passes = watcher.passes
        shown = await async_wait_until(
            lambda: _showing(api, status, texts.queued(1)), what="chat A's new position"
        )
        edits = [
            c
            for c in api.calls("editMessageText")
            if c.params.get("chat_id") == A and c.at >= throttled.at
        ]
        assert [c.status for c in edits] == [429, 200], "no edit sent into the throttle"
        assert edits[1].at - throttled.at >= 2 - 0.1
        # The checks went on meanwhile (every 0.1 s), B's final word among them.
        assert watcher.passes - passes >= 5
        await async_wait_until(lambda: api.last_message(B, containing=texts.JOB_LOST))
        assert shown is not None and shown.texts == [texts.queued(2), texts.queued(1)]


def _showing(api: FakeBotApi, message: ChatMessage, content: str) -> ChatMessage | None:
    """The message as it is now, once it shows ``content``."""
    now = api.message(message.chat_id, message.message_id)
    return now if now is not None and now.content == content else None


def _tracks_line(text: str | None) -> str | None:
    return next((line for line in (text or "").splitlines() if "You will get" in line), None)
