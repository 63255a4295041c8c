"""Leases: a running job's claim lives ``DEMIX_JOB_LEASE_S`` and is renewed while its
worker lives, so a worker that dies without a word (SIGKILL, OOM, power) holds its job for
at most one lease, not arq's whole job timeout.

arq claims a job by setting its in-progress key for ``in_progress_timeout_s`` and never
renews it (python-arq/arq#407, #343). The worker (:class:`worker.app.DemixWorker`) sets that
timeout to the lease, writes its own token into the key right after arq's claim, and a
:class:`LeaseKeeper` renews every key it holds every third of a lease. Renewal checks the
token (a Lua script: PEXPIRE only if the key still holds ours), so a worker never extends a
claim that another worker has taken over.

A lease is lost when:

- the key is gone or holds another token (Redis flushed or failed over to an empty
  replica; the lease lapsed while this process was stalled and another worker took the
  job): the job is stopped at once;
- renewals fail (Redis unreachable, partitioned) until too little of the lease is left to
  stop safely: the job is stopped :data:`STOP_MARGIN` of a lease before the lease lapses,
  so a second worker never runs alongside a live first one.

Stopping means cancelling the job's task: the separation stops at its next chunk and no new
send starts (:meth:`LeaseKeeper.check` is also asked before each send, for the window
between a lapse and the keeper's next look). A send already under way finishes and is
recorded (:func:`worker.delivery.finish_on_cancel`). arq must then not give the claim back
as it does for a cancelled job: it is no longer ours (:meth:`DemixWorker.finish_job`).

Renewals run on the worker's event loop, which the separation never blocks (it runs in a
thread), over a Redis client of their own with short timeouts: the worker's main client
waits out Redis outages without end, and a renewal must fail fast instead.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from arq.constants import in_progress_key_prefix
from redis.asyncio import Redis
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

# Renewals per lease: one may fail and the next still comes well before the lapse.
RENEWALS_PER_LEASE = 3
# The part of a lease left when a worker that cannot renew stops its job.
STOP_MARGIN = 1 / 6

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_TAKE = """
if redis.call('exists', KEYS[1]) == 1 then
  return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1
end
return 0
"""


class LeaseLost(enum.Enum):
    """Why a job's lease ended while it ran."""

    GONE = "gone"  # the key vanished or another worker holds it
    UNREACHABLE = "unreachable"  # no renewal reached Redis in time


@dataclass
class _Lease:
    confirmed_at: float  # monotonic time a renewal (or the claim) was sent and then confirmed
    on_lost: Callable[[LeaseLost], None]
    lost: LeaseLost | None = None


class LeaseKeeper:
    """The leases of one worker process's jobs; :meth:`run` renews them until cancelled."""

    def __init__(
        self,
        redis: Redis,
        lease_s: float,
        *,
        on_renewed: Callable[[], None] | None = None,
        on_lost: Callable[[LeaseLost], None] | None = None,
    ) -> None:
        self.redis = redis
        self.lease_s = lease_s
        # Unique per process and start: a restarted worker does not own its old claims.
        self.token = secrets.token_hex(8)
        self._leases: dict[str, _Lease] = {}
        self._on_renewed = on_renewed
        self._on_lost = on_lost
        self._renew = redis.register_script(_RENEW)
        self._take = redis.register_script(_TAKE)

    @property
    def interval_s(self) -> float:
        return self.lease_s / RENEWALS_PER_LEASE

    def key(self, job_id: str) -> str:
        return in_progress_key_prefix + job_id

    async def take(self, job_id: str, on_lost: Callable[[LeaseLost], None]) -> bool:
        """Mark arq's fresh claim of ``job_id`` as this worker's; False if it is gone."""
        sent = time.monotonic()
        lease = _Lease(sent, on_lost)
        self._leases[job_id] = lease
        try:
            taken = await asyncio.wait_for(
                self._take(keys=[self.key(job_id)], args=[self.token, self._ms()]),
                self.interval_s,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            # arq's claim (without our token) still runs for a lease; the next renewal cannot
            # confirm it, so the job stops before it lapses.
            logger.warning("lease of %s not marked as ours: %s", job_id, exc)
            return True
        if not taken:
            self._lose(job_id, lease, LeaseLost.GONE)
            return False
        return True

    def release(self, job_id: str) -> LeaseLost | None:
        """Stop renewing ``job_id``; return why its lease was lost, if it was."""
        lease = self._leases.pop(job_id, None)
        return None if lease is None else lease.lost

    def check(self, job_id: str) -> bool:
        """Whether ``job_id`` may still act (send): its lease was confirmed recently enough.

        Declares the lease lost (and stops the job) when the stop margin has been reached.
        """
        lease = self._leases.get(job_id)
        if lease is None:
            return True  # not a leased run (a job run outside the worker, as in tests)
        if lease.lost is None and self._past_stop_point(lease):
            self._lose(job_id, lease, LeaseLost.UNREACHABLE)
        return lease.lost is None

    async def run(self) -> None:
        """Renew every held lease each :attr:`interval_s` until cancelled; wake up at a
        lease's stop point too, should its renewals have failed until then."""
        while True:
            await self.renew_all()
            await asyncio.sleep(self._next_round_s())

    def _next_round_s(self) -> float:
        now = time.monotonic()
        wait = self.interval_s
        for lease in self._leases.values():
            if lease.lost is None:
                wait = min(wait, max(0.0, self._stop_point(lease) - now))
        return wait

    async def renew_all(self) -> None:
        """One round of renewals, concurrently (one slow reply delays no other lease)."""
        held = [(job_id, lease) for job_id, lease in self._leases.items() if lease.lost is None]
        if held:
            await asyncio.gather(*(self._renew_one(job_id, lease) for job_id, lease in held))

    async def _renew_one(self, job_id: str, lease: _Lease) -> None:
        sent = time.monotonic()
        left = self._stop_point(lease) - sent
        if left <= 0:
            self._lose(job_id, lease, LeaseLost.UNREACHABLE)
            return
        try:
            renewed = await asyncio.wait_for(
                self._renew(keys=[self.key(job_id)], args=[self.token, self._ms()]),
                min(self.interval_s, left),
            )
        except (RedisError, OSError, TimeoutError) as exc:
            logger.warning("lease of %s not renewed: %s", job_id, exc)
            if lease.lost is None and self._past_stop_point(lease):
                self._lose(job_id, lease, LeaseLost.UNREACHABLE)
            return
        if lease.lost is not None or job_id not in self._leases:
            return
        if renewed:
            lease.confirmed_at = sent
            if self._on_renewed is not None:
                self._on_renewed()
        else:
            self._lose(job_id, lease, LeaseLost.GONE)

    def _stop_point(self, lease: _Lease) -> float:
        """When a job whose lease was last confirmed at ``confirmed_at`` must stop."""
        return lease.confirmed_at + self.lease_s * (1 - STOP_MARGIN)

    def _past_stop_point(self, lease: _Lease) -> bool:
        return time.monotonic() >= self._stop_point(lease)

    def _lose(self, job_id: str, lease: _Lease, why: LeaseLost) -> None:
        lease.lost = why
        logger.warning("lease of %s lost (%s): the job stops here", job_id, why.value)
        if self._on_lost is not None:
            self._on_lost(why)
        lease.on_lost(why)

    def _ms(self) -> int:
        return round(self.lease_s * 1000)
