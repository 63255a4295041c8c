"""Bot test harness: the real Application polling the fake Bot API, and an in-process worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from telegram.ext import Application

from bot.app import build_application
from bot.services import BotServices
from common.settings import Settings
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.waiting import async_wait_until

# Short periods keep the tests quick; production defaults are seconds.
WATCH_INTERVAL_S = 0.1
POLL_TIMEOUT_S = 1


@pytest.fixture
def bot_settings(
    make_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, redis_url: str
) -> Callable[..., Settings]:
    """Settings pointing at the fake Bot API and the test Redis; overrides win."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            **fake_bot_api.settings_overrides(),
            "redis_url": redis_url,
            "progress_edit_interval_s": 0.2,
            "retry_backoff_s": 0.2,
            "retry_backoff_max_s": 1.0,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


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


@pytest.fixture(scope="session")
def shared_separator(model_repo: Path) -> Any:
    """One separator over the tiny models for every worker of the session (models load once)."""
    from separation import EnsembleSeparator, SeparatorConfig

    return EnsembleSeparator(SeparatorConfig(model_repo=model_repo, device="cpu"))


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, separator: Any) -> AsyncIterator[Any]:
    """The worker engineer's arq worker, in this event loop, until the block ends."""
    from arq.worker import Worker

    from worker.app import worker_settings

    worker = Worker(
        **worker_settings(settings, separator=separator, handle_signals=False, poll_delay_s=0.05)
    )
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task


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
