"""Bot test harness: the real Application polling the fake Bot API, and chat helpers.

Settings come from ``service_settings`` (tests/conftest.py), the worker from
tests/support/workers.py, the separator from the session's ``separator`` fixture.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Collection
from typing import Any

from telegram.ext import Application

from bot.app import build_application
from bot.services import BotServices
from common import callback_data as cd
from common.settings import Settings
from tests.support.fake_bot_api import Button, ChatMessage, FakeBotApi
from tests.support.waiting import async_wait_until

# Short periods keep the tests quick; production defaults are seconds.
WATCH_INTERVAL_S = 0.1
POLL_TIMEOUT_S = 1


class RunningBot:
    """A started Application; ``services`` reaches its database and queue client."""

    def __init__(self, application: Application) -> None:
        self.application = application
        self.services: BotServices = application.bot_data["services"]


@contextlib.asynccontextmanager
async def running_bot(
    settings: Settings, *, watch_interval_s: float = WATCH_INTERVAL_S
) -> AsyncIterator[RunningBot]:
    """Run the bot in this event loop with the same lifecycle hooks ``run_polling`` runs."""
    application = build_application(settings, watch_interval_s=watch_interval_s)
    await application.initialize()
    assert application.post_init is not None
    await application.post_init(application)
    assert application.updater is not None
    await application.updater.start_polling(poll_interval=0.0, timeout=POLL_TIMEOUT_S)
    await application.start()
    try:
        yield RunningBot(application)
    finally:
        await application.updater.stop()
        await application.stop()
        if application.post_stop is not None:
            await application.post_stop(application)
        await application.shutdown()
        if application.post_shutdown is not None:
            await application.post_shutdown(application)


def picker_buttons(request_id: int, picked: Collection[str] = ()) -> list[list[Button]]:
    """The picker's keyboard as the user sees it: a toggle per source (✅ on picked ones),
    three to a row, then `All` and `Separate`."""
    toggles = [
        Button(f"✅ {source}" if source in picked else source, cd.toggle(request_id, source))
        for source in cd.SOURCES
    ]
    return [
        toggles[:3],
        toggles[3:],
        [Button("All", cd.pick_all(request_id)), Button("▶️ Separate", cd.separate(request_id))],
    ]


async def picker_for(api: FakeBotApi, chat_id: int, song: ChatMessage) -> ChatMessage:
    """The bot's picker replying to ``song``."""
    return await async_wait_until(
        lambda: next(
            (
                m
                for m in api.chat_messages(chat_id)
                if m.reply_to == song.message_id and m.has_keyboard
            ),
            None,
        ),
        what="the stem picker",
    )


async def answer_to(api: FakeBotApi, chat_id: int, message: ChatMessage) -> ChatMessage:
    """The bot's first message in the chat after a user's message."""
    return await async_wait_until(
        lambda: next(
            (m for m in api.chat_messages(chat_id) if m.message_id > message.message_id), None
        ),
        what=f"an answer to message {message.message_id}",
    )


async def press(api: FakeBotApi, user_id: int, message: ChatMessage, data: str) -> Any:
    """Press a button and wait for the bot's answer to it."""
    query_id = api.press_button(user_id, message, data)
    return await async_wait_until(lambda: api.answer_for(query_id), what=f"an answer to {data}")


async def current(api: FakeBotApi, message: ChatMessage) -> ChatMessage:
    found = api.message(message.chat_id, message.message_id)
    assert found is not None
    return found
