"""The job's one status message, edited in place without ever hitting Telegram's edit limits.

Telegram tolerates about one message edit per second per chat and answers bursts with
429 (RetryAfter). A job's progress changes far more often than that, so:

- :class:`EditThrottle` spaces edits per chat (one per ``interval_s``), process-wide, so two
  jobs of the same chat in one worker share the budget;
- :class:`StatusMessage` edits only when the text changes, drops progress texts that come
  too soon (the next one supersedes them) and makes stage texts (done, failed) wait for
  their turn; :func:`common.telegram.edit_message` classifies each edit's outcome;
- :class:`ProgressFeed` carries the latest fraction from the separation thread to the event
  loop, where :func:`report_progress` turns it into throttled edits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from telegram import Bot

from common.telegram import Edit, edit_message

logger = logging.getLogger(__name__)


class EditThrottle:
    """Per-chat spacing of message edits: at most one every ``interval_s`` seconds."""

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next_allowed: dict[int, float] = {}

    def wait_s(self, chat_id: int) -> float:
        """Seconds until ``chat_id`` may be edited again (0.0 when it may be now)."""
        return max(0.0, self._next_allowed.get(chat_id, 0.0) - self._clock())

    def record(self, chat_id: int) -> None:
        """Note an edit sent now."""
        now = self._clock()
        # Forget chats whose wait is over, so a long-running worker does not grow this.
        for done in [chat for chat, until in self._next_allowed.items() if until <= now]:
            del self._next_allowed[done]
        self._next_allowed[chat_id] = now + self.interval_s

    def tracked_chats(self) -> set[int]:
        """Chats with an edit spacing still on record."""
        return set(self._next_allowed)

    def back_off(self, chat_id: int, seconds: float) -> None:
        """Telegram asked to wait (RetryAfter): no edit in this chat before then."""
        until = self._clock() + max(seconds, self.interval_s)
        self._next_allowed[chat_id] = max(self._next_allowed.get(chat_id, 0.0), until)


class StatusMessage:
    """One job's status message (``chat_id``, ``message_id``), edited through a throttle.

    Edits never raise (except cancellation): a status message that cannot be edited (deleted
    by the user, Telegram briefly down) must not fail a job whose tracks can still arrive.
    """

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        message_id: int,
        throttle: EditThrottle,
        log_extra: Mapping[str, Any] | None = None,
        max_wait_s: float | None = None,
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.message_id = message_id
        self.throttle = throttle
        self.log_extra = dict(log_extra or {})
        self.max_wait_s = max_wait_s if max_wait_s is not None else max(5.0, throttle.interval_s)
        self.text: str | None = None
        self.edits = 0
        # A line under every text from now on (a resumed job says so to the end).
        self.footer: str | None = None

    def _with_footer(self, text: str) -> str:
        return text if self.footer is None else f"{text}\n{self.footer}"

    async def update(self, text: str) -> bool:
        """Show ``text`` if it is new and the chat's turn has come; otherwise drop it."""
        text = self._with_footer(text)
        if text == self.text or self.throttle.wait_s(self.chat_id) > 0:
            return False
        return await self._edit(text)

    async def show(self, text: str) -> bool:
        """Show ``text``, waiting for the chat's turn (stage changes, the final state).

        Waits at most :attr:`max_wait_s` at a time: under a long flood-control ban the text
        is dropped rather than holding the job (and its worker slot) open.
        """
        text = self._with_footer(text)
        if text == self.text:
            return False
        for _ in range(3):
            wait = self.throttle.wait_s(self.chat_id)
            if wait > self.max_wait_s:
                logger.warning(
                    "status edit dropped: chat held back %.0fs", wait, extra=self.log_extra
                )
                return False
            if wait > 0:
                await asyncio.sleep(wait)
            if await self._edit(text):
                return True
            if self.throttle.wait_s(self.chat_id) == 0:
                # Failed for a reason other than flood control: waiting will not help.
                return False
        return False

    async def _edit(self, text: str) -> bool:
        self.throttle.record(self.chat_id)
        result = await edit_message(
            self.bot.edit_message_text(text, chat_id=self.chat_id, message_id=self.message_id),
            self.log_extra,
        )
        if result.edit is Edit.THROTTLED:
            self.throttle.back_off(self.chat_id, result.retry_after_s)
        if not result.shown:
            return False
        self.text = text
        if result.edit is Edit.EDITED:
            self.edits += 1
        return True


class ProgressFeed:
    """The latest progress fraction: written by the separation thread, read by the loop.

    A float attribute store is atomic under the GIL, so no lock is needed; the feed never
    goes backwards, so a late smaller value from a second model pass cannot show a drop.
    """

    def __init__(self) -> None:
        self.fraction = 0.0

    def __call__(self, fraction: float) -> None:
        self.fraction = max(self.fraction, min(1.0, max(0.0, float(fraction))))


async def report_progress(
    status: StatusMessage,
    feed: ProgressFeed,
    render: Callable[[float], str],
    poll_s: float = 0.25,
) -> None:
    """Edit ``status`` with ``render(feed.fraction)`` whenever allowed, until cancelled."""
    while True:
        await status.update(render(feed.fraction))
        await asyncio.sleep(poll_s)
