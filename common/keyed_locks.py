"""A FIFO lock per key: the bot's per-chat update order (:mod:`bot.ordering`) and the per-chat
flood control of every process that talks to the Bot API (:mod:`common.flood_control`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable


class KeyedLocks:
    """One FIFO lock per key: holders of one key take turns in the order they asked,
    different keys never wait for each other. A key's lock lives while someone holds or
    waits for it."""

    def __init__(self) -> None:
        # key -> (its lock, how many hold it or wait for it)
        self._locks: dict[Hashable, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        """Keys held or waited for now."""
        return len(self._locks)

    def locked(self, key: Hashable) -> bool:
        """True while someone holds ``key``."""
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    @contextlib.asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        """Hold ``key``'s lock; asyncio's Lock is fair, so turns go in arrival order."""
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)
