"""The bot process's Prometheus metrics: the queue, the jobs as recorded, the votes, and
Telegram's flood control on the bot's own requests.

One :class:`BotMetrics` per process, built by :class:`bot.services.BotServices` over its own
registry (see :mod:`common.metrics`). The job watcher, the vote use case and the flood
control (:mod:`common.flood_control`) update it; handlers do not touch it beyond that.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.metrics import DURATION_BUCKETS, PREFIX, new_registry

# `reason` of a job that ended well.
NO_REASON = "none"
# `reason` of a job that vanished from Redis (see bot.watcher).
LOST = "lost"


class BotMetrics:
    """The bot's figures; every method is cheap and never raises."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.queue_depth = Gauge(
            PREFIX + "queue_depth",
            "Jobs waiting in the queue for a worker (not those being run), at the bot's last look",
            registry=self.registry,
        )
        self.queue_reachable = Gauge(
            PREFIX + "queue_reachable",
            "1 when the bot's last look at the Redis queue succeeded, else 0",
            registry=self.registry,
        )
        self.jobs = Counter(
            PREFIX + "jobs",
            "Jobs finished, as the bot recorded them: outcome done or failed; reason a "
            "failure reason (none for done)",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.job_wait = Histogram(
            PREFIX + "job_wait_seconds",
            "Time from enqueue to a worker starting the job (jobs that finished)",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.votes = Counter(
            PREFIX + "votes",
            "Votes stored, by value; a changed vote counts under its new value",
            ["vote"],
            registry=self.registry,
        )
        self.telegram_429 = Counter(
            PREFIX + "telegram_429",
            "Bot API requests of the bot answered 429 (flood control), by method; each is "
            "waited out for its chat alone and sent again, within bounds",
            ["method"],
            registry=self.registry,
        )
        # Series that exist from the start read 0 instead of missing in rates and ratios.
        self.jobs.labels("done", NO_REASON)
        for value in ("up", "down"):
            self.votes.labels(value)

    def queue_seen(self, waiting: int) -> None:
        self.queue_depth.set(waiting)
        self.queue_reachable.set(1)

    def queue_unreachable(self) -> None:
        self.queue_reachable.set(0)

    def job_finished(
        self,
        outcome: str,
        reason: str = NO_REASON,
        *,
        enqueued_at: float | None = None,
        started_at: float | None = None,
    ) -> None:
        self.jobs.labels(outcome, reason).inc()
        if enqueued_at is not None and started_at is not None:
            self.job_wait.observe(max(0.0, started_at - enqueued_at))

    def telegram_throttled(self, method: str) -> None:
        """Telegram answered one of the bot's ``method`` requests with a 429."""
        self.telegram_429.labels(method).inc()

    def vote_stored(self, vote: str, previous: str | None) -> None:
        """A 👍 / 👎 press; pressing the button already chosen changes nothing."""
        if vote != previous:
            self.votes.labels(vote).inc()
