"""`demix worker`: the arq worker process that serves separation jobs.

It needs only Redis and the bot token: it talks to the Bot API directly (download, status
edits, uploads) and never opens SQLite; the bot learns each outcome from arq's job result.
Models load once, at startup, into one :class:`separation.EnsembleSeparator` that every job
of the process shares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Worker, func
from telegram import Bot
from telegram.error import InvalidToken, NetworkError
from telegram.request import HTTPXRequest

from common.jobs import SEPARATE_JOB
from common.logs import configure_logging
from common.settings import Settings
from separation import EnsembleSeparator, ModelUnavailableError
from worker.job import STATE_KEY, WorkerState, separate_job
from worker.policy import arq_job_timeout_s
from worker.progress import EditThrottle

logger = logging.getLogger(__name__)

WORKER_HEALTH_CHECK_INTERVAL_S = 60


def make_bot(settings: Settings) -> Bot:
    """A Bot API client from the settings; uploads get generous write timeouts."""
    request = HTTPXRequest(
        connection_pool_size=8,
        connect_timeout=10.0,
        read_timeout=60.0,
        write_timeout=60.0,
        media_write_timeout=300.0,
    )
    return Bot(
        settings.require_token(),
        base_url=settings.telegram_api_base_url,
        base_file_url=settings.telegram_file_base_url,
        local_mode=settings.telegram_local_mode,
        request=request,
        get_updates_request=HTTPXRequest(connection_pool_size=1),
    )


def _startup(
    settings: Settings, separator: EnsembleSeparator | None
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def on_startup(ctx: dict[str, Any]) -> None:
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
            settings, bot, model, EditThrottle(settings.progress_edit_interval_s)
        )

    return on_startup


async def _shutdown(ctx: dict[str, Any]) -> None:
    state: WorkerState | None = ctx.get(STATE_KEY)
    if state is not None:
        with contextlib.suppress(Exception):
            await state.bot.shutdown()


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
        "redis_settings": RedisSettings.from_dsn(settings.redis_url),
        "on_startup": _startup(settings, separator),
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
    configure_logging(settings.log_level, "worker")
    settings.require_token()
    try:
        Worker(**worker_settings(settings)).run()
    except SystemExit as exc:
        logger.error("worker stopped: %s", exc)
        return 1
    except Exception:
        # Logged (and so redacted) instead of a raw traceback that could quote a Bot API URL.
        logger.exception("worker crashed")
        return 1
    return 0
