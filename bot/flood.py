"""Per-user rate limits on what costs the service: songs sent and buttons pressed.

One user's flood must not cost everyone else: uploads beyond the limit get no picker, and
presses beyond theirs change nothing. The refusal is said once per window, so a flood of
files is not answered with a flood of messages. Windows are moving windows (the `limits`
library, in memory: the bot is one process).
"""

from __future__ import annotations

from limits import RateLimitItemPerHour, RateLimitItemPerMinute, storage, strategies


class FloodGuard:
    """Counts each user's uploads per hour and button presses per minute."""

    def __init__(self, uploads_per_hour: int, presses_per_minute: int) -> None:
        self.uploads = RateLimitItemPerHour(uploads_per_hour)
        self.presses = RateLimitItemPerMinute(presses_per_minute)
        self._warning = RateLimitItemPerHour(1)
        self._limiter = strategies.MovingWindowRateLimiter(storage.MemoryStorage())

    def allow_upload(self, user_id: int) -> bool:
        """Count one upload; False once the user is over the hourly limit."""
        return self._limiter.hit(self.uploads, "upload", str(user_id))

    def allow_press(self, user_id: int) -> bool:
        """Count one button press; False once the user is over the per-minute limit."""
        return self._limiter.hit(self.presses, "press", str(user_id))

    def warn_once(self, user_id: int) -> bool:
        """True the first time in an hour a user is told they are over the upload limit."""
        return self._limiter.hit(self._warning, "warned", str(user_id))
