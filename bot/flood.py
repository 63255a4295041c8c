"""Per-user rate limits on what costs the service: songs sent and buttons pressed.

One user's flood must not cost everyone else: uploads beyond the limit get no picker, and
presses beyond theirs change nothing. The refusal is said once per window, so a flood of
files is not answered with a flood of messages. Windows are moving windows, kept in Redis
(the `limits` library's async Redis storage, through redis-py as the queue is), so a bot
restart hands no flooder a fresh allowance and the bot keeps no state of its own but SQLite.
"""

from __future__ import annotations

import logging

from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError

logger = logging.getLogger(__name__)

KEY_PREFIX = "demix:limits"


class FloodGuard:
    """Counts each user's uploads per hour and button presses per minute."""

    def __init__(self, redis_url: str, uploads_per_hour: int, presses_per_minute: int) -> None:
        self.uploads = RateLimitItemPerHour(uploads_per_hour)
        self.presses = RateLimitItemPerMinute(presses_per_minute)
        self._warning = RateLimitItemPerHour(1)
        storage = RedisStorage(
            f"async+{redis_url}",
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=KEY_PREFIX,
        )
        self._limiter = MovingWindowRateLimiter(storage)

    async def allow_upload(self, user_id: int) -> bool:
        """Count one upload; False once the user is over the hourly limit."""
        return await self._hit(self.uploads, "upload", user_id)

    async def allow_press(self, user_id: int) -> bool:
        """Count one button press; False once the user is over the per-minute limit."""
        return await self._hit(self.presses, "press", user_id)

    async def warn_once(self, user_id: int) -> bool:
        """True the first time in an hour a user is told they are over the upload limit."""
        return await self._hit(self._warning, "warned", user_id)

    async def _hit(self, item: RateLimitItem, action: str, user_id: int) -> bool:
        try:
            return await self._limiter.hit(item, action, str(user_id))
        except StorageError as exc:
            # Redis down: let the user through. Songs and pickers then work as before, and a
            # Separate press is told the queue is down; refusing everyone would be worse.
            logger.warning("rate limits unavailable, not counted: %s", exc.storage_error)
            return True
