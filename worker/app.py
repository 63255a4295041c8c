"""`demix worker`: the arq worker process that serves separation jobs.

It needs only Redis and the bot token: it talks to the Bot API directly (download, status
edits, uploads) and never opens SQLite; the bot learns each outcome from arq's job result.
Models load once, at startup, into one :class:`separation.EnsembleSeparator` that every job
of the process shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import inspect
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import Worker, func
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from telegram import Bot
from telegram.error import InvalidToken, NetworkError
from telegram.request import HTTPXRequest

from common.exits import EXIT_CONFIG, EXIT_DEVICE_STUCK
from common.jobs import SEPARATE_JOB
from common.logs import configure_logging
from common.metrics import MetricsServer, serve_metrics
from common.settings import Settings
from common.telegram import UPLOAD_CONNECTIONS, uploading_request
from separation import EnsembleSeparator, ModelUnavailableError
from worker.delivery import LedgerTraceTransport
from worker.job import DEVICE_STUCK_KEY, LEASES_KEY, STATE_KEY, WorkerState, separate_job
from worker.lease import LeaseKeeper, LeaseLost
from worker.metrics import WorkerMetrics
from worker.policy import arq_job_timeout_s
from worker.progress import EditThrottle

logger = logging.getLogger(__name__)

WORKER_HEALTH_CHECK_INTERVAL_S = 60
# While Redis is unreachable: tries from 0.1 s apart, doubling to this, one warning each.
REDIS_RETRY_MAX_S = 5.0

T = TypeVar("T")


class RedisOutageRetry(Retry):
    """redis-py's own retry, without end and logged: while Redis restarts, every command
    of the worker (arq's polling, a job's delivery ledger, its result) waits for it.

    A job in flight therefore finishes and records what it delivered instead of dying
    between an upload and its ledger entry, which would make its re-run deliver twice.
    The job's deadline still applies: it cancels a command that waits too long.
    """

    def __init__(self) -> None:
        super().__init__(ExponentialBackoff(cap=REDIS_RETRY_MAX_S, base=0.1), retries=-1)

    async def call_with_retry(
        self, do: Callable[[], Awaitable[T]], fail: Callable[[RedisError], Any]
    ) -> T:
        failures = 0

        async def note(error: RedisError) -> None:
            nonlocal failures
            failures += 1
            logger.warning("Redis unreachable (%s); waiting for it (try %d)", error, failures)
            outcome = fail(error)
            if inspect.isawaitable(outcome):
                await outcome

        return await super().call_with_retry(do, note)


# How long a stopping worker tries to give back the claims of jobs it never began.
CLAIM_RETURN_TIMEOUT_S = 5.0


class DemixWorker(Worker):
    """arq's Worker, taking jobs through a Redis restart.

    Every command waits out an outage (:class:`RedisOutageRetry`) except those inside the
    WATCH with which arq claims a job: redis-py cannot retry them (the watch is lost with
    the connection) and raises WatchError, which arq expects only from the final EXEC. The
    claim is then given up and the job's slot returned, as arq does when another worker
    wins the claim; the next poll tries again.
    """

    def __init__(
        self,
        *,
        lease_s: float | None = None,
        lease_redis_url: str | None = None,
        stop_grace_s: float = 0.0,
        metrics: WorkerMetrics | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if self.on_job_start is not None or self.after_job_end is not None:
            raise TypeError("DemixWorker uses on_job_start and after_job_end itself")
        # Jobs arq has taken up to their function: from there on arq gives their claims
        # back itself (close() must not, or a finishing job could be claimed again).
        self._reached_function: set[str] = set()
        self.on_job_start = self._job_reaches_function
        self.after_job_end = self._job_ended
        self.stop_grace_s = stop_grace_s
        # Non-zero once the worker must be replaced (a separation that cannot be stopped).
        self.exit_code = 0
        self.metrics = metrics
        self.leases: LeaseKeeper | None = None
        if lease_s is not None:
            if lease_redis_url is None:
                raise TypeError("a lease needs lease_redis_url")
            # arq's claim is the lease, kept alive by renewals (worker.lease).
            self.in_progress_timeout_s = lease_s
            self.leases = LeaseKeeper(
                Redis.from_url(
                    lease_redis_url,
                    socket_timeout=lease_s / 6,
                    socket_connect_timeout=lease_s / 6,
                ),
                lease_s,
                on_renewed=None if metrics is None else metrics.lease_renewed,
                on_lost=None if metrics is None else metrics.lease_lost,
            )
            self.ctx[LEASES_KEY] = self.leases
        self.ctx[DEVICE_STUCK_KEY] = self.device_stuck
        self._lease_task: asyncio.Task[None] | None = None

    async def _job_reaches_function(self, ctx: dict[str, Any]) -> None:
        self._reached_function.add(ctx["job_id"])

    async def _job_ended(self, ctx: dict[str, Any]) -> None:
        self._reached_function.discard(ctx["job_id"])
        if self.leases is not None:
            self.leases.release(ctx["job_id"])

    async def main(self) -> None:
        if self.leases is not None and self._lease_task is None:
            self._lease_task = asyncio.create_task(self.leases.run(), name="demix-leases")
        try:
            await super().main()
        finally:
            if self._lease_task is not None:
                self._lease_task.cancel()
                await asyncio.gather(self._lease_task, return_exceptions=True)
                self._lease_task = None
            if self.leases is not None:
                await self.leases.redis.aclose()

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            before = self.tasks.get(job_id.decode())
            try:
                await super().start_jobs([job_id])
            except WatchError:
                # arq took a slot for this job before its pipeline failed.
                self.job_counter -= 1
                self.sem.release()
                logger.warning("Redis went away while a job was claimed; it is claimed again")
                continue
            claimed = self.tasks.get(job_id.decode())
            if self.leases is not None and claimed is not None and claimed is not before:
                name = job_id.decode()
                await self.leases.take(name, functools.partial(self._lease_lost, name))

    def _lease_lost(self, job_id: str, why: LeaseLost) -> None:
        self._cancel_job(job_id)

    def _cancel_job(self, job_id: str) -> None:
        """Stop a job's work now: its function, or arq's run of it before the function."""
        task = self.job_tasks.get(job_id) or self.tasks.get(job_id)
        if task is not None and not task.done():
            task.cancel()

    async def finish_job(
        self,
        job_id: str,
        finish: bool,
        result_data: bytes | None,
        result_timeout_s: float | None,
        keep_result_forever: bool,
        incr_score: int | None,
        keep_in_progress: float | None,
    ) -> None:
        lost = None if self.leases is None else self.leases.release(job_id)
        if lost is not None:
            # The claim is not ours any more (another worker's, or gone with Redis's data):
            # arq's bookkeeping for a cancelled job would delete it, or a result would
            # finish a job that another worker is serving.
            logger.warning("job %s stopped after its lease was lost (%s)", job_id, lost.value)
            return
        await super().finish_job(
            job_id,
            finish,
            result_data,
            result_timeout_s,
            keep_result_forever,
            incr_score,
            keep_in_progress,
        )

    def handle_sig(self, signum: signal.Signals) -> None:
        """SIGTERM with a grace (a spot instance's notice): jobs sending their tracks get
        up to ``stop_grace_s`` to finish; every other job is given back at once, so another
        worker resumes it now rather than after the grace."""
        if signum != signal.SIGTERM or self.stop_grace_s <= 0 or not self.tasks:
            super().handle_sig(signum)
            return
        self.allow_pick_jobs = False
        state: WorkerState | None = self.ctx.get(STATE_KEY)
        sending = set() if state is None else state.sending
        finishing, given_back = [], 0
        for job_id, task in self.tasks.items():
            if task.done():
                continue
            if job_id in sending:
                finishing.append(task)
            else:
                self._cancel_job(job_id)
                given_back += 1
        logger.info(
            "stopping: %d job(s) given back, %d finishing their sends (at most %.0fs)",
            given_back,
            len(finishing),
            self.stop_grace_s,
            extra={"signal": signal.Signals(signum).name},
        )
        self.loop.create_task(self._stop_after(finishing, signum))

    async def _stop_after(self, finishing: list[asyncio.Task[Any]], signum: signal.Signals) -> None:
        if finishing:
            await asyncio.wait(finishing, timeout=self.stop_grace_s)
        super().handle_sig(signum)

    def device_stuck(self) -> None:
        """A separation that cannot be stopped holds the device: take no more jobs, give
        back the others, and stop with a non-zero exit so the supervisor replaces this
        process (the stuck job is handed back by the job itself)."""
        if self.exit_code:
            return
        logger.error("the separation device is stuck: this worker stops and must be replaced")
        self.exit_code = EXIT_DEVICE_STUCK
        self.allow_pick_jobs = False
        # This worker's other jobs would wait for, or run on, the stuck device: given back.
        current = asyncio.current_task()
        for job_task in self.job_tasks.values():
            if job_task is not current and not job_task.done():
                job_task.cancel()
        self.loop.create_task(self._stop_when_idle())

    async def _stop_when_idle(self) -> None:
        running = [task for task in self.tasks.values() if not task.done()]
        if running:
            await asyncio.wait(running)
        super().handle_sig(signal.SIGTERM)

    async def close(self) -> None:
        """arq's close, which also survives a job cancelled before arq's own handling began.

        A job cancelled while arq still reads it from Redis ends in CancelledError, and arq's
        close re-raises that from its gather: the process would die without ``on_shutdown``,
        and the claim would hold the job until it expires (the job timeout, hours). Such jobs
        are reaped first and their claims given back, so another worker serves them now.
        """
        if not self._handle_signals:
            # As arq's close does (it will again, harmlessly): polling stops, jobs cancelled.
            self.handle_sig(signal.SIGUSR1)
        outcomes = await asyncio.gather(*self.tasks.values(), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                logger.error("a job's task failed", exc_info=outcome)
        unstarted = [
            job_id
            for job_id, task in self.tasks.items()
            if task.cancelled() and job_id not in self._reached_function
        ]
        # Every task has ended; arq's close would only re-raise their cancellations.
        self.tasks.clear()
        if self._pool is not None and unstarted:
            keys = [in_progress_key_prefix + job_id for job_id in unstarted]
            try:
                # Bounded: Redis outages are otherwise waited out, and this is shutdown.
                await asyncio.wait_for(self._pool.delete(*keys), CLAIM_RETURN_TIMEOUT_S)
            except (RedisError, TimeoutError):
                logger.warning("claims not given back on shutdown; they expire with the lease")
            else:
                logger.info("claims given back on shutdown", extra={"jobs": len(unstarted)})
        await super().close()


def worker_redis_settings(redis_url: str) -> RedisSettings:
    """arq's connection settings for a worker: connection errors are waited out, not fatal."""
    return dataclasses.replace(
        RedisSettings.from_dsn(redis_url),
        retry=RedisOutageRetry(),
        # OSError: redis-py retries a refused connect only when told to.
        retry_on_error=[RedisConnectionError, RedisTimeoutError, OSError],
    )


def make_bot(settings: Settings) -> Bot:
    """A Bot API client from the settings; uploads get generous write timeouts."""
    # The ledger learns when an upload has left whole (worker.delivery's module docstring).
    transport = LedgerTraceTransport(
        limits=httpx.Limits(
            max_connections=UPLOAD_CONNECTIONS, max_keepalive_connections=UPLOAD_CONNECTIONS
        )
    )
    request = uploading_request(settings, transport)
    return Bot(
        settings.require_token(),
        base_url=settings.telegram_api_base_url,
        base_file_url=settings.telegram_file_base_url,
        local_mode=settings.telegram_local_mode,
        request=request,
        get_updates_request=HTTPXRequest(connection_pool_size=1),
    )


METRICS_SERVER_KEY = "demix_metrics_server"


def _startup(
    settings: Settings, separator: EnsembleSeparator | None, metrics: WorkerMetrics
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def on_startup(ctx: dict[str, Any]) -> None:
        if ctx.get(METRICS_SERVER_KEY) is None:
            # First thing: Prometheus sees the worker while it connects and loads models.
            ctx[METRICS_SERVER_KEY] = serve_metrics(
                metrics.registry, settings.metrics_host, settings.metrics_port
            )
        bot = make_bot(settings)
        try:
            await bot.initialize()
        except InvalidToken:
            # PTB's message quotes the token; say it without.
            raise SystemExit("TELEGRAM_BOT_TOKEN was rejected by the Bot API") from None
        except NetworkError as exc:
            # Jobs retry on their own; a worker can start while Telegram is unreachable.
            logger.warning("Bot API not reachable at startup: %s", exc)
        model = separator or EnsembleSeparator(settings.separator_config())
        started = time.monotonic()
        try:
            # Loading here, not in the first job, keeps the first user's wait honest.
            await asyncio.to_thread(model.warm_up)
        except ModelUnavailableError as exc:
            raise SystemExit(f"the separation models are not available: {exc}") from None
        logger.info("worker ready", extra={"models_load_s": round(time.monotonic() - started, 2)})
        ctx[STATE_KEY] = WorkerState(
            settings, bot, model, EditThrottle(settings.progress_edit_interval_s), metrics
        )

    return on_startup


async def _shutdown(ctx: dict[str, Any]) -> None:
    state: WorkerState | None = ctx.get(STATE_KEY)
    if state is not None:
        with contextlib.suppress(Exception):
            await state.bot.shutdown()
    server: MetricsServer | None = ctx.pop(METRICS_SERVER_KEY, None)
    if server is not None:
        await asyncio.to_thread(server.close)


def worker_settings(
    settings: Settings,
    *,
    separator: EnsembleSeparator | None = None,
    burst: bool = False,
    handle_signals: bool = True,
    poll_delay_s: float = 0.5,
) -> dict[str, Any]:
    """Keyword arguments for :class:`DemixWorker`: the separation function and its policy.

    ``separator`` lets a caller that runs workers in-process (tests) share already-loaded
    models; without it the worker builds one from the settings at startup.
    """
    timeout_s = arq_job_timeout_s(settings)
    metrics = WorkerMetrics()
    return {
        # The claim is a lease renewed while the job runs (worker.lease), not the timeout.
        "lease_s": settings.job_lease_s,
        "lease_redis_url": settings.redis_url,
        "stop_grace_s": settings.worker_stop_grace_s,
        "metrics": metrics,
        "functions": [
            func(
                separate_job,
                name=SEPARATE_JOB,
                timeout=timeout_s,
                max_tries=settings.job_max_tries,
                keep_result=settings.job_keep_result_s,
            )
        ],
        "redis_settings": worker_redis_settings(settings.redis_url),
        "on_startup": _startup(settings, separator, metrics),
        "on_shutdown": _shutdown,
        "max_jobs": settings.worker_max_jobs,
        "job_timeout": timeout_s,
        "max_tries": settings.job_max_tries,
        "keep_result": settings.job_keep_result_s,
        "allow_abort_jobs": True,
        # The health key outlives its interval by a second: a hung worker shows within a
        # minute (arq's default interval is an hour).
        "health_check_interval": WORKER_HEALTH_CHECK_INTERVAL_S,
        "burst": burst,
        "handle_signals": handle_signals,
        "poll_delay": poll_delay_s,
    }


def run_worker(settings: Settings) -> int:
    """`demix worker`: run an arq worker until SIGINT/SIGTERM."""
    configure_logging(settings.log_level, "worker", settings.log_format)
    settings.require_token()
    try:
        worker = DemixWorker(**worker_settings(settings))
        worker.run()
    except SystemExit as exc:
        # A rejected token or missing models: starting again cannot help.
        logger.error("worker stopped: %s", exc)
        return EXIT_CONFIG
    except Exception:
        # Logged (and so redacted) instead of a raw traceback that could quote a Bot API URL.
        logger.exception("worker crashed")
        return 1
    if worker.exit_code:
        # A separation thread that cannot be stopped would keep the interpreter from
        # exiting (it joins its threads): leave at once, for the supervisor to replace us.
        logging.shutdown()
        os._exit(worker.exit_code)
    return 0
