"""Telegram's flood control (a 429 with ``retry_after``) on the bot's own requests, waited out
for the one chat it concerns while every other chat goes on being served.

PTB's hook for this is :class:`telegram.ext.BaseRateLimiter` (given to
``ApplicationBuilder.rate_limiter``): every request of the Application's bot but
``getUpdates`` passes through its ``process_request``, with the method and its parameters
(``chat_id`` among them for chat-bound methods). PTB's own implementation,
``AIORateLimiter``, halts every request of the process while it waits out one
``retry_after``, so one flooded chat would stall every user. :class:`PerChatFloodControl` is
what this module adds in its place:

- requests to one chat (or one inline message) go one at a time, in the order they were
  made, through a FIFO lock per chat (:class:`common.keyed_locks.KeyedLocks`);
- a 429 is waited out (``retry_after``, as :func:`common.telegram.retry_after_s` reads it)
  and the request sent again, holding its chat's turn, so later requests to that chat wait
  behind it and nothing is reordered; other chats' requests never wait for it;
- retries are bounded (:class:`RetryPolicy`): past them, or when the wait would pass the
  request's budget, the ``RetryAfter`` goes up to the caller (a handler's error reaches the
  one PTB error handler, which logs it with its traceback; :func:`common.telegram.edit_message`
  reports it as ``THROTTLED``);
- requests without a chat: a callback answer (``answerCallbackQuery``) is retried alone,
  keyed by nothing, within :data:`CALLBACK_ANSWER_MAX_WAIT_S` (Telegram drops a press's
  answer some 15 s after the press); others (``setMyCommands``, ``getMe``) likewise, within
  the default budget;
- a caller for whom a late request is worse than none passes ``rate_limit_args=NO_WAIT``:
  it skips the chat's queue and fails at once while the chat is throttled (the job
  watcher's queue positions, which a later check shows anew).

Every 429 is counted by method (``demix_telegram_429_total``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine, Hashable
from dataclasses import dataclass
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from common.keyed_locks import KeyedLocks
from common.telegram import retry_after_s

logger = logging.getLogger(__name__)

# Retries of one request after a 429: Telegram's retry_after is usually honest, so a third
# 429 in a row means the chat is flooded for longer than a user waits for an answer.
MAX_RETRIES = 3
# The longest one request waits in all (its retries and its chat's throttle before it):
# beyond a minute the reply is stale, and the handler's turn in its chat is held meanwhile.
MAX_WAIT_S = 60.0
# A press's answer is useless once Telegram has dropped the query (~15 s after the press);
# some of that has already gone by when the answer is sent.
CALLBACK_ANSWER_MAX_WAIT_S = 10.0

# Throttled chats remembered before the expired ones are dropped.
_SWEEP_AT = 1024

Result = bool | dict[str, Any] | list[dict[str, Any]]


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may wait out flood control: retries, and seconds in all. A
    ``max_wait_s`` of 0 means: do not queue behind the chat, fail at once."""

    max_retries: int = MAX_RETRIES
    max_wait_s: float = MAX_WAIT_S


DEFAULT_POLICY = RetryPolicy()
CALLBACK_ANSWER_POLICY = RetryPolicy(max_wait_s=CALLBACK_ANSWER_MAX_WAIT_S)
NO_WAIT = RetryPolicy(max_retries=0, max_wait_s=0.0)


def request_key(data: dict[str, Any]) -> Hashable | None:
    """The chat (or inline message) a request's order and flood control belong to; None for
    requests bound to neither (a callback answer, the command menu)."""
    chat_id = data.get("chat_id")
    if chat_id is not None:
        try:
            return int(chat_id)
        except (TypeError, ValueError):
            return str(chat_id)  # "@channelname"
    inline_message_id = data.get("inline_message_id")
    if inline_message_id is not None:
        return ("inline", str(inline_message_id))
    return None


class PerChatFloodControl(BaseRateLimiter[RetryPolicy]):
    """PTB's rate limiter hook, filled in: a 429 holds up its own chat only (see the module).

    ``on_429`` is told the method of every 429 Telegram answers (the metrics' counter)."""

    def __init__(
        self,
        on_429: Callable[[str], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_429 = on_429
        self._clock = clock
        self._turns = KeyedLocks()
        # key -> when its chat may be written to again (the clock's time).
        self._throttled_until: dict[Hashable, float] = {}

    async def initialize(self) -> None:
        """Nothing to open."""

    async def shutdown(self) -> None:
        """Nothing to close: requests still waiting belong to tasks PTB has awaited."""

    def throttled_for(self, key: Hashable) -> float:
        """Seconds until ``key``'s chat may be written to again (0 when it may now)."""
        until = self._throttled_until.get(key)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._throttled_until[key]
            return 0.0
        return left

    def _throttle(self, key: Hashable, seconds: float) -> None:
        now = self._clock()
        if len(self._throttled_until) >= _SWEEP_AT:
            # Chats throttled once and never written to again would stay forever.
            self._throttled_until = {k: t for k, t in self._throttled_until.items() if t > now}
        self._throttled_until[key] = now + seconds

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Result]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: RetryPolicy | None,
    ) -> Result:
        """Send the request in its chat's turn, waiting out 429s within its policy."""
        policy = rate_limit_args or (
            CALLBACK_ANSWER_POLICY if endpoint == "answerCallbackQuery" else DEFAULT_POLICY
        )
        key = request_key(data)
        send = _Send(callback, args, kwargs, endpoint, key)
        if key is None or policy.max_wait_s <= 0:
            # Nothing to keep in order with, or a caller that would rather fail than wait.
            return await self._send(send, policy)
        async with self._turns.hold(key):
            return await self._send(send, policy)

    async def _send(self, send: _Send, policy: RetryPolicy) -> Result:
        waited = 0.0
        retries = 0
        while True:
            # The chat may still be throttled by a request before this one that gave up.
            pause = 0.0 if send.key is None else self.throttled_for(send.key)
            if pause > 0:
                if waited + pause > policy.max_wait_s:
                    raise RetryAfter(dt.timedelta(seconds=pause))
                await asyncio.sleep(pause)
                waited += pause
            try:
                return await send.callback(*send.args, **send.kwargs)
            except RetryAfter as exc:
                delay = retry_after_s(exc)
                if self._on_429 is not None:
                    self._on_429(send.endpoint)
                if send.key is not None:
                    self._throttle(send.key, delay)
                if retries >= policy.max_retries or waited + delay > policy.max_wait_s:
                    if policy.max_wait_s > 0:
                        logger.warning(
                            "Telegram flood control on %s: giving up after %d retries and "
                            "%.0f s (asked to wait %.0f s more)",
                            send.endpoint,
                            retries,
                            waited,
                            delay,
                            extra=send.log_extra,
                        )
                    raise
                retries += 1
                logger.info(
                    "Telegram flood control on %s: sending again in %.0f s (retry %d); "
                    "other chats are not held up",
                    send.endpoint,
                    delay,
                    retries,
                    extra=send.log_extra,
                )
                if send.key is None:
                    await asyncio.sleep(delay)
                    waited += delay
                # Otherwise the pause at the loop's top waits it out.


@dataclass(frozen=True)
class _Send:
    """One request as PTB hands it over: how to send it, and what it is."""

    callback: Callable[..., Coroutine[Any, Any, Result]]
    args: Any
    kwargs: dict[str, Any]
    endpoint: str
    key: Hashable | None

    @property
    def log_extra(self) -> dict[str, Any]:
        return {} if self.key is None else {"chat_id": str(self.key)}
