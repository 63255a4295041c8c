"""Updates for the bot: the queue, getUpdates long polling, and the webhook that forbids it."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import threading
from typing import Any

from tests.support.fake_bot_api.calls import Handler, MethodCall
from tests.support.fake_bot_api.telegram import ApiError


class UpdateQueue:
    """Updates not yet confirmed by the bot, and the getUpdates long polls waiting for them.

    Users act from any thread; a long poll waits in the server loop. Queuing wakes the polls
    through that loop, so the server hands it over while it runs (:meth:`attach`).
    """

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._allowed_updates: frozenset[str] | None = None
        self._webhook_url = ""
        self._poller = 0  # ticket of the getUpdates request allowed to answer
        self._polls_waiting = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False

    def handlers(self) -> dict[str, Handler]:
        return {
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
        }

    # -- the server's lifecycle --------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wake polls through the server's loop from now on (it is starting, or restarting)."""
        self._loop = loop
        self._closing = False

    def detach(self) -> None:
        """The server has stopped: queued updates wait for the next start."""
        self._loop = None

    def open(self) -> None:
        """Start accepting long polls (runs in the server loop)."""
        self._wakeup = asyncio.Event()

    def close(self) -> None:
        """Answer every waiting long poll now, so the server can shut down (server loop)."""
        self._closing = True
        self._notify()

    def _notify(self) -> None:
        """Wake every waiting getUpdates (runs in the server loop)."""
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = asyncio.Event()

    def _wake_pollers(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._notify)

    # -- updates -------------------------------------------------------------------------------

    def queue(self, kind: str, payload: dict[str, Any]) -> int:
        """Queue an update of ``kind`` ("message", "callback_query", ...); returns its id."""
        with self._lock:
            update_id = self._next_update_id
            self._next_update_id += 1
            self._updates.append({"update_id": update_id, kind: payload})
        self._wake_pollers()
        return update_id

    def pending(self) -> int:
        with self._lock:
            return len(self._updates)

    def is_polling(self) -> bool:
        with self._lock:
            return self._polls_waiting > 0

    async def get_updates(self, call: MethodCall) -> list[dict[str, Any]]:
        params = call.params
        offset = params.get("offset")
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = max(float(params.get("timeout") or 0), 0.0)
        allowed = params.get("allowed_updates")
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._webhook_url:
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use "
                    "deleteWebhook to delete the webhook first",
                )
            if isinstance(allowed, list):
                self._allowed_updates = frozenset(allowed) or None
            if isinstance(offset, int):
                self._confirm(offset)
            self._poller += 1
            ticket = self._poller
        # A newer getUpdates terminates this one, as Telegram does.
        self._notify()
        deadline = loop.time() + timeout
        while True:
            wakeup = self._wakeup
            with self._lock:
                if self._poller != ticket:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; make "
                        "sure that only one bot instance is running",
                    )
                batch = [
                    copy.deepcopy(update)
                    for update in self._updates
                    if self._allowed_updates is None
                    or _update_type(update) in self._allowed_updates
                ][:limit]
            remaining = deadline - loop.time()
            if batch or self._closing or remaining <= 0 or wakeup is None:
                return batch
            with self._lock:
                self._polls_waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=remaining)
            finally:
                with self._lock:
                    self._polls_waiting -= 1

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            self._updates = self._updates[offset:]
        else:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

    # -- webhook -------------------------------------------------------------------------------

    def _delete_webhook(self, call: MethodCall) -> bool:
        self._webhook_url = ""
        if call.params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _set_webhook(self, call: MethodCall) -> bool:
        self._webhook_url = str(call.params.get("url") or "")
        if call.params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _get_webhook_info(self, call: MethodCall) -> dict[str, Any]:
        return {
            "url": self._webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }


def _update_type(update: dict[str, Any]) -> str:
    return next(key for key in update if key != "update_id")
