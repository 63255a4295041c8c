"""Fault injection: Bot API calls (and downloads) that fail on purpose, or answer late."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A test's filter on a call's decoded parameters: the fault hits only calls it accepts.
ParamsFilter = Callable[[dict[str, Any]], bool]


@dataclass
class Fault:
    """How the next calls of one method fail, and how many more of them will."""

    method: str  # lowercased: Telegram's method names are case-insensitive
    status: int
    description: str
    retry_after: int | None
    remaining: int
    applied: bool  # the call takes effect; only its answer is lost
    when: ParamsFilter | None
    # A stall answers this late (a client's read timeout fires first); status is then unused.
    stall_s: float = 0.0


class Faults:
    """The failures and delays a test asked for, taken by the calls they are meant for."""

    def __init__(self, lock: threading.RLock) -> None:
        self._lock = lock
        self._faults: list[Fault] = []
        self._latency: dict[str, float] = {}

    def fail_next(
        self,
        method: str,
        *,
        status: int,
        description: str | None,
        retry_after: int | None,
        times: int,
        applied: bool,
        when: ParamsFilter | None,
        stall_s: float = 0.0,
    ) -> None:
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._faults.append(
                Fault(
                    method=method.lower(),
                    status=status,
                    description=description or _default_description(status, retry_after),
                    retry_after=retry_after,
                    remaining=times,
                    applied=applied,
                    when=when,
                    stall_s=stall_s,
                )
            )

    def take(self, method: str, params: dict[str, Any]) -> Fault | None:
        """The fault this call meets, if any; each call uses up one of its ``times``."""
        with self._lock:
            for fault in self._faults:
                if fault.method == method.lower() and (fault.when is None or fault.when(params)):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def set_latency(self, method: str, seconds: float) -> None:
        """``method`` must be spelled as the server dispatches it (see FakeBotApi.set_latency)."""
        with self._lock:
            self._latency[method] = seconds

    def latency(self, method: str) -> float:
        return self._latency.get(method, 0.0)


def _default_description(status: int, retry_after: int | None) -> str:
    if status == 429:
        return f"Too Many Requests: retry after {retry_after or 1}"
    return {
        400: "Bad Request: injected failure",
        401: "Unauthorized",
        403: "Forbidden: bot was blocked by the user",
        404: "Not Found",
        409: "Conflict: terminated by other getUpdates request",
        500: "Internal Server Error",
        502: "Bad Gateway",
    }.get(status, f"Error {status}")
