"""The per-chat flood control and update processor on their own, without the network: order
per chat, concurrency across chats, the bounds on retries and waits."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from telegram import CallbackQuery, Chat, Message, Update, User
from telegram.error import RetryAfter

from bot.ordering import GLOBAL_KEY, PerChatUpdateProcessor, update_key
from common.flood_control import NO_WAIT, PerChatFloodControl, RetryPolicy, request_key
from common.keyed_locks import KeyedLocks
from tests.support.waiting import async_wait_until

# Short waits keep these quick; Telegram's are whole seconds.
WAIT_S = 0.3
# A test that would hang (an order broken into a deadlock) fails after this instead.
DEADLINE_S = 5.0


async def stays_false(predicate: Callable[[], bool], for_s: float, what: str) -> None:
    """Fail if ``predicate`` becomes true within ``for_s`` seconds (polled, as the helpers
    in tests.support.waiting do)."""
    try:
        await async_wait_until(predicate, timeout=for_s)
    except AssertionError:
        return  # timed out: it stayed false
    raise AssertionError(what)


def retry_after(seconds: float) -> RetryAfter:
    return RetryAfter(dt.timedelta(seconds=seconds))


class FakeTelegram:
    """Answers requests as told: per chat, a list of 429 waits, then success; a request whose
    text has a gate is held in flight until the gate opens. Logs what got through."""

    def __init__(self) -> None:
        self.throttle: dict[Any, list[float]] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.sent: list[tuple[Any, str]] = []
        self.calls = 0

    async def post(self, endpoint: str, data: dict[str, Any]) -> bool:
        self.calls += 1
        key = data.get("chat_id", data.get("callback_query_id"))
        waits = self.throttle.get(key)
        if waits:
            raise retry_after(waits.pop(0))
        text = data.get("text", endpoint)
        if text in self.gates:
            await self.gates[text].wait()
        self.sent.append((key, text))
        return True


async def request(
    limiter: PerChatFloodControl,
    telegram: FakeTelegram,
    endpoint: str,
    policy: RetryPolicy | None = None,
    **data: Any,
) -> Any:
    """A request as ExtBot hands it to its rate limiter."""
    return await limiter.process_request(
        telegram.post, (endpoint, data), {}, endpoint, data, policy
    )


async def test_a_429_is_waited_out_and_sent_again() -> None:
    telegram, counted = FakeTelegram(), list[str]()
    limiter = PerChatFloodControl(on_429=counted.append)
    telegram.throttle[1] = [WAIT_S]
    started = time.monotonic()
    assert await request(limiter, telegram, "sendMessage", chat_id=1, text="hi")
    assert time.monotonic() - started >= WAIT_S
    assert (telegram.calls, telegram.sent, counted) == (2, [(1, "hi")], ["sendMessage"])


async def test_a_throttled_chat_keeps_its_order_and_holds_up_no_other_chat() -> None:
    telegram = FakeTelegram()
    limiter = PerChatFloodControl()
    telegram.throttle[1] = [WAIT_S]
    # The first request's retry is slow to answer: the second must still wait for it.
    telegram.gates["1a"] = asyncio.Event()
    first = asyncio.create_task(request(limiter, telegram, "sendMessage", chat_id=1, text="1a"))
    await async_wait_until(lambda: telegram.calls == 1, what="the first request's 429")
    second = asyncio.create_task(request(limiter, telegram, "sendMessage", chat_id=1, text="1b"))
    other = time.monotonic()
    await request(limiter, telegram, "sendMessage", chat_id=2, text="2a")
    assert time.monotonic() - other < WAIT_S / 2, "chat 2 went straight through"
    assert telegram.sent == [(2, "2a")]
    await async_wait_until(lambda: telegram.calls == 3, what="the first request sent again")
    await stays_false(lambda: telegram.calls > 3, WAIT_S, "the second request sent too early")
    telegram.gates["1a"].set()
    await asyncio.wait_for(asyncio.gather(first, second), DEADLINE_S)
    assert telegram.sent == [(2, "2a"), (1, "1a"), (1, "1b")]


async def test_retries_are_bounded() -> None:
    telegram = FakeTelegram()
    limiter = PerChatFloodControl()
    telegram.throttle[1] = [0.01] * 10
    with pytest.raises(RetryAfter):
        await request(limiter, telegram, "sendMessage", RetryPolicy(max_retries=2), chat_id=1)
    assert telegram.calls == 3


async def test_a_wait_past_the_budget_is_not_waited() -> None:
    telegram = FakeTelegram()
    limiter = PerChatFloodControl()
    telegram.throttle[1] = [30.0]
    started = time.monotonic()
    with pytest.raises(RetryAfter):
        await request(limiter, telegram, "sendMessage", RetryPolicy(max_wait_s=10), chat_id=1)
    assert (telegram.calls, time.monotonic() - started < 1) == (1, True)
    # The chat is still throttled: the next request is refused without being sent.
    with pytest.raises(RetryAfter):
        await request(limiter, telegram, "sendMessage", RetryPolicy(max_wait_s=10), chat_id=1)
    assert telegram.calls == 1


async def test_a_callback_answer_waits_at_most_its_short_budget() -> None:
    telegram = FakeTelegram()
    limiter = PerChatFloodControl()
    # Alone (no chat in the request): retried within its budget...
    telegram.throttle["q1"] = [WAIT_S]
    assert await request(limiter, telegram, "answerCallbackQuery", callback_query_id="q1")
    assert telegram.sent == [("q1", "answerCallbackQuery")]
    # ...but Telegram drops a press's answer after some 15 s: no use waiting 12.
    telegram.throttle["q2"] = [12.0]
    with pytest.raises(RetryAfter):
        await request(limiter, telegram, "answerCallbackQuery", callback_query_id="q2")


async def test_no_wait_fails_at_once_and_skips_the_chats_queue() -> None:
    telegram = FakeTelegram()
    limiter = PerChatFloodControl()
    telegram.throttle[1] = [WAIT_S]
    waiting = asyncio.create_task(request(limiter, telegram, "sendMessage", chat_id=1))
    await async_wait_until(lambda: telegram.calls == 1, what="the first request's 429")
    started = time.monotonic()
    with pytest.raises(RetryAfter):
        await request(limiter, telegram, "editMessageText", NO_WAIT, chat_id=1)
    assert time.monotonic() - started < WAIT_S / 2
    assert telegram.calls == 1, "not even sent: the chat is throttled"
    await asyncio.wait_for(waiting, DEADLINE_S)
    assert await request(limiter, telegram, "editMessageText", NO_WAIT, chat_id=1)


def test_requests_are_keyed_by_chat_or_inline_message() -> None:
    assert request_key({"chat_id": 5, "text": "x"}) == 5
    assert request_key({"chat_id": "5"}) == 5
    assert request_key({"chat_id": "@channel"}) == "@channel"
    assert request_key({"inline_message_id": "abc"}) == ("inline", "abc")
    assert request_key({"callback_query_id": "q"}) is None
    assert request_key({"commands": []}) is None


# -- the update processor ----------------------------------------------------------------

USER = User(7, "Ann", is_bot=False)


def message_update(update_id: int, chat_id: int) -> Update:
    chat = Chat(chat_id, "private")
    when = dt.datetime.now(dt.UTC)
    return Update(update_id, message=Message(update_id, when, chat, from_user=USER))


def test_updates_are_keyed_by_chat_then_user_then_everyone() -> None:
    assert update_key(message_update(1, -100)) == -100
    inline_press = CallbackQuery("q", USER, chat_instance="c", inline_message_id="i")
    assert update_key(Update(2, callback_query=inline_press)) == USER.id
    assert update_key(Update(3)) == GLOBAL_KEY
    assert update_key(object()) == GLOBAL_KEY


class Handlers:
    """Update handlers that log when they start and end, and wait for a gate of their chat."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.gates: dict[int, asyncio.Event] = {}
        self.running = 0
        self.most_running = 0

    def gate(self, chat_id: int) -> asyncio.Event:
        return self.gates.setdefault(chat_id, asyncio.Event())

    async def handle(self, name: str, chat_id: int) -> None:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        self.log.append(f"start {name}")
        await self.gate(chat_id).wait()
        self.log.append(f"end {name}")
        self.running -= 1


def submit(
    processor: PerChatUpdateProcessor, update: Update, handle: Awaitable[None]
) -> asyncio.Task[None]:
    # As the Application does: one task per update, created in arrival order.
    return asyncio.create_task(processor.process_update(update, handle))


async def test_one_chats_updates_run_in_order_while_other_chats_run() -> None:
    processor, handlers = PerChatUpdateProcessor(), Handlers()
    tasks = [
        submit(processor, message_update(i, chat), handlers.handle(f"{chat}.{i}", chat))
        for i, chat in enumerate([1, 1, 2, 1, 2])
    ]
    await async_wait_until(lambda: handlers.running == 2, what="one update of each chat")
    assert handlers.log == ["start 1.0", "start 2.2"]
    handlers.gate(2).set()
    await async_wait_until(lambda: "end 2.4" in handlers.log, what="chat 2 done")
    assert "end 1.0" not in handlers.log, "chat 2 did not wait for chat 1"
    handlers.gate(1).set()
    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    assert [entry for entry in handlers.log if "1." in entry] == [
        "start 1.0",
        "end 1.0",
        "start 1.1",
        "end 1.1",
        "start 1.3",
        "end 1.3",
    ]


async def test_a_chats_backlog_takes_no_running_slots() -> None:
    # Two slots; chat 1 has five updates, its first blocked: chats 2 and 3 still run.
    processor, handlers = PerChatUpdateProcessor(max_running=2), Handlers()
    backlog = [
        submit(processor, message_update(i, 1), handlers.handle(f"1.{i}", 1)) for i in range(5)
    ]
    others = [
        submit(processor, message_update(10 + chat, chat), handlers.handle(f"{chat}", chat))
        for chat in (2, 3)
    ]
    handlers.gate(2).set()
    handlers.gate(3).set()
    await asyncio.wait_for(asyncio.gather(*others), DEADLINE_S)
    assert handlers.log[0] == "start 1.0" and "end 1.0" not in handlers.log
    assert handlers.most_running <= 2
    handlers.gate(1).set()
    await asyncio.wait_for(asyncio.gather(*backlog), DEADLINE_S)
    assert handlers.most_running <= 2


async def test_running_updates_are_bounded() -> None:
    processor, handlers = PerChatUpdateProcessor(max_running=2), Handlers()
    tasks = [
        submit(processor, message_update(chat, chat), handlers.handle(str(chat), chat))
        for chat in range(1, 6)
    ]
    await async_wait_until(lambda: handlers.running == 2, what="two running")
    for chat in range(1, 6):
        handlers.gate(chat).set()
    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    assert handlers.most_running == 2
    assert len(handlers.log) == 10


async def test_keyed_locks_forget_unused_keys() -> None:
    locks = KeyedLocks()
    order: list[int] = []

    async def take(n: int, release: asyncio.Event | None = None) -> None:
        async with locks.hold("k"):
            order.append(n)
            if release is not None:
                await release.wait()

    release = asyncio.Event()
    tasks = [asyncio.create_task(take(0, release))] + [
        asyncio.create_task(take(n)) for n in range(1, 4)
    ]
    await async_wait_until(lambda: locks.locked("k"), what="the lock taken")
    release.set()
    await asyncio.wait_for(asyncio.gather(*tasks), DEADLINE_S)
    assert order == [0, 1, 2, 3]
    assert len(locks) == 0
