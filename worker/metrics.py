"""A worker process's Prometheus metrics: job runs by outcome, time per stage, audio served.

One :class:`WorkerMetrics` per process, built in :func:`worker.app.worker_settings` over
its own registry (see :mod:`common.metrics`) and shared by its jobs through
:class:`worker.job.WorkerState`. Counted per run (try) of a job: the bot's
``demix_jobs_total`` counts each job once, when it ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from common.metrics import DURATION_BUCKETS, PREFIX, new_registry
from worker.lease import LeaseLost

# The stages of a run, as JobOutcome.timings names them with an `_s` suffix.
STAGES = ("download", "decode", "separate", "encode", "upload")
# `reason` of a run that ended well, and of one that raised something unforeseen.
NO_REASON = "none"
CRASH = "crash"


class WorkerMetrics:
    """The worker's figures; every method is cheap and never raises."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.in_progress = Gauge(
            PREFIX + "worker_jobs_in_progress",
            "Jobs this worker is running now",
            registry=self.registry,
        )
        self.runs = Counter(
            PREFIX + "worker_job_runs",
            "Job runs (tries) that ended: outcome done, failed or retried; reason a failure "
            "reason, or what a retry waits out (flood_control, telegram, redis)",
            ["outcome", "reason"],
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            PREFIX + "worker_stage_seconds",
            "Time per stage of a run (download, decode, separate, encode, upload); a stage "
            "counts once it finished",
            ["stage"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.job_seconds = Histogram(
            PREFIX + "worker_job_seconds",
            "Time of a run that delivered the tracks, start to done message",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.audio_seconds = Counter(
            PREFIX + "worker_audio_seconds",
            "Seconds of audio separated and delivered",
            registry=self.registry,
        )
        self.lease_renewals = Counter(
            PREFIX + "worker_lease_renewals",
            "Job leases renewed (a running job's claim, kept alive every third of a lease)",
            registry=self.registry,
        )
        self.leases_lost = Counter(
            PREFIX + "worker_leases_lost",
            "Job leases lost while the job ran, which stopped the job: reason gone (the "
            "claim vanished or another worker holds it) or unreachable (Redis did not answer)",
            ["reason"],
            registry=self.registry,
        )
        self.resumed = Counter(
            PREFIX + "worker_jobs_resumed",
            "Runs that took up a job an earlier run had started (a worker died, was stopped "
            "or lost its lease)",
            registry=self.registry,
        )
        # Series that exist from the start read 0 instead of missing in rates and ratios.
        self.runs.labels("done", NO_REASON)
        for reason in ("gone", "unreachable"):
            self.leases_lost.labels(reason)
        for stage in STAGES:
            self.stage_seconds.labels(stage)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """While a run is in progress (cancelled runs included)."""
        self.in_progress.inc()
        try:
            yield
        finally:
            self.in_progress.dec()

    def run_ended(self, outcome: str, reason: str = NO_REASON) -> None:
        self.runs.labels(outcome, reason).inc()

    def stages_timed(self, timings: Mapping[str, float]) -> None:
        """Observe the stages in ``timings`` (``<stage>_s`` keys; others are ignored)."""
        for stage in STAGES:
            seconds = timings.get(f"{stage}_s")
            if seconds is not None:
                self.stage_seconds.labels(stage).observe(seconds)

    def delivered(self, audio_seconds: float) -> None:
        self.audio_seconds.inc(audio_seconds)

    def job_done(self, total_s: float) -> None:
        self.job_seconds.observe(total_s)

    def lease_renewed(self) -> None:
        self.lease_renewals.inc()

    def lease_lost(self, why: LeaseLost) -> None:
        self.leases_lost.labels(why.value).inc()

    def job_resumed(self) -> None:
        self.resumed.inc()
