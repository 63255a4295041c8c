"""Updates of different chats at once, each chat's in the order they came.

PTB processes updates one at a time unless ``ApplicationBuilder.concurrent_updates`` is given
a :class:`telegram.ext.BaseUpdateProcessor`; its ``SimpleUpdateProcessor`` runs everything
at once, with no order at all. One at a time, a handler that waits out chat A's flood control
(see :mod:`common.flood_control`) holds up chat B; all at once, two presses of one picker could
be handled out of order. :class:`PerChatUpdateProcessor` is what this module adds: a
``BaseUpdateProcessor`` that runs the updates of one chat one after another, in arrival
order, and those of different chats concurrently, at most :data:`MAX_RUNNING_UPDATES` at a
time. :class:`common.keyed_locks.KeyedLocks` (a FIFO lock per key, dropped when unused) is
shared with the flood control, which keeps each chat's requests in order the same way.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Hashable
from typing import Any

from telegram import Update
from telegram.ext import BaseUpdateProcessor

from common.keyed_locks import KeyedLocks

# Handlers running at once. Each may hold an HTTP connection to the Bot API, and PTB's pool
# has 256 (with a 1 s pool timeout): staying well below keeps a busy bot from timing out on
# its own pool. A handler waiting out a 429 holds its slot, so this many flooded chats at
# once would make the others wait.
MAX_RUNNING_UPDATES = 64
# Updates accepted at once, waiting for their chat's turn included (PTB's own bound, which
# counts waiting updates too). PTB creates a task per fetched update whatever this is, so
# this bounds no memory; it only must not make another chat's update wait behind a backlog
# of one chat, which a bound near MAX_RUNNING_UPDATES would.
MAX_PENDING_UPDATES = 100_000
# The key of updates with neither a chat nor a user (polls, for instance): one after another.
GLOBAL_KEY = "global"


def update_key(update: object) -> Hashable:
    """Whose turn an update waits for: its chat, else its user (a private chat's id is its
    user's id, so both name the same person), else everyone's."""
    if isinstance(update, Update):
        if update.effective_chat is not None:
            return update.effective_chat.id
        if update.effective_user is not None:
            return update.effective_user.id
    return GLOBAL_KEY


class PerChatUpdateProcessor(BaseUpdateProcessor):
    """PTB's update processor hook, filled in: per chat in order, across chats at once."""

    def __init__(
        self,
        max_running: int = MAX_RUNNING_UPDATES,
        max_pending: int = MAX_PENDING_UPDATES,
    ) -> None:
        super().__init__(max_pending)
        if max_running < 1:
            raise ValueError("max_running must be a positive integer")
        self.max_running = max_running
        self._turns = KeyedLocks()
        self._running = asyncio.Semaphore(max_running)

    async def do_process_update(self, update: object, coroutine: Awaitable[Any]) -> None:
        """Wait for the chat's turn (without a running slot), then for a slot, then run."""
        try:
            async with self._turns.hold(update_key(update)), self._running:
                await coroutine
        except asyncio.CancelledError:
            # Cancelled while waiting (the Application stopping): never started, so close it
            # rather than leave a "never awaited" warning behind.
            if inspect.iscoroutine(coroutine):
                coroutine.close()
            raise

    async def initialize(self) -> None:
        """Nothing to open: the locks and the slots are made as they are needed."""

    async def shutdown(self) -> None:
        """Nothing to close: PTB awaits every update's task before it shuts this down."""
