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
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix
from arq.worker import Worker, func
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError
from telegram import Bot
from telegram.error import InvalidToken, NetworkError
from telegram.request import HTTPXRequest

from common.exits import EXIT_CONFIG
from common.jobs import SEPARATE_JOB
from common.logs import configure_logging
from common.metrics import MetricsServer, serve_metrics
from common.settings import Settings
from separation import EnsembleSeparator, ModelUnavailableError
from worker.job import STATE_KEY, WorkerState, separate_job
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

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if self.on_job_start is not None or self.after_job_end is not None:
            raise TypeError("DemixWorker uses on_job_start and after_job_end itself")
        # Jobs arq has taken up to their function: from there on arq gives their claims
        # back itself (close() must not, or a finishing job could be claimed again).
        self._reached_function: set[str] = set()
        self.on_job_start = self._job_reaches_function
        self.after_job_end = self._job_ended

    async def _job_reaches_function(self, ctx: dict[str, Any]) -> None:
        self._reached_function.add(ctx["job_id"])

    async def _job_ended(self, ctx: dict[str, Any]) -> None:
        self._reached_function.discard(ctx["job_id"])

    async def start_jobs(self, job_ids: list[bytes]) -> None:
        for job_id in job_ids:
            try:
                await super().start_jobs([job_id])
            except WatchError:
                # arq took a slot for this job before its pipeline failed.
                self.job_counter -= 1
                self.sem.release()
                logger.warning("Redis went away while a job was claimed; it is claimed again")

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
    request = HTTPXRequest(
        connection_pool_size=8,
        connect_timeout=10.0,
        read_timeout=settings.telegram_read_timeout_s,
        write_timeout=60.0,
        media_write_timeout=settings.telegram_upload_timeout_s,
    )
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
    """Keyword arguments for ``arq.worker.Worker``: the separation function and its policy.

    ``separator`` lets a caller that runs workers in-process (tests) share already-loaded
    models; without it the worker builds one from the settings at startup.
    """
    timeout_s = arq_job_timeout_s(settings)
    return {
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
        "on_startup": _startup(settings, separator, WorkerMetrics()),
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
        DemixWorker(**worker_settings(settings)).run()
    except SystemExit as exc:
        # A rejected token or missing models: starting again cannot help.
        logger.error("worker stopped: %s", exc)
        return EXIT_CONFIG
    except Exception:
        # Logged (and so redacted) instead of a raw traceback that could quote a Bot API URL.
        logger.exception("worker crashed")
        return 1
    return 0
