"""`demix bot`: the Telegram front end as a python-telegram-bot Application (long polling).

This module's import graph stays free of torch: the bot process never loads the models.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from telegram import Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, InvalidToken, NetworkError
from telegram.ext import Application, Defaults
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential

from bot.handlers import errors, ordered_handlers
from bot.handlers.context import SERVICES_KEY
from bot.ordering import PerChatUpdateProcessor
from bot.services import BotServices
from common.exits import EXIT_CONFIG
from common.flood_control import PerChatFloodControl
from common.logs import configure_logging
from common.settings import Settings

logger = logging.getLogger(__name__)

# Between tries to reach Telegram at start: 1 s, doubling to a minute.
STARTUP_RETRY_MAX_S = 60.0


def build_application(settings: Settings, *, watch_interval_s: float = 2.0) -> Application:
    """The bot's Application: Bot API endpoints from the settings, handlers, lifecycle hooks.

    The database, the queue client and the job watcher open in ``post_init`` and close in
    ``post_stop`` / ``post_shutdown``; whoever runs the Application must run those hooks
    (``run_polling`` does). Every text the bot sends is HTML (user text is escaped).

    Updates of different chats are handled concurrently, each chat's in order
    (:class:`bot.ordering.PerChatUpdateProcessor`), and a 429 on a request holds up that
    request's chat alone (:class:`common.flood_control.PerChatFloodControl`).
    """
    services = BotServices(settings, watch_interval_s=watch_interval_s)
    application = (
        Application.builder()
        .token(settings.require_token())
        .base_url(settings.telegram_api_base_url)
        .base_file_url(settings.telegram_file_base_url)
        .local_mode(settings.telegram_local_mode)
        .defaults(Defaults(parse_mode=ParseMode.HTML))
        .concurrent_updates(PerChatUpdateProcessor())
        .rate_limiter(PerChatFloodControl(on_429=services.metrics.telegram_throttled))
        .post_init(services.start)
        .post_stop(services.stop_watching)
        .post_shutdown(services.close)
        .build()
    )
    application.bot_data[SERVICES_KEY] = services
    application.add_handlers(ordered_handlers())
    application.add_error_handler(errors.log_error)
    return application


def _telegram_unreachable(exc: BaseException) -> bool:
    # A 400 or a rejected token will not go away by waiting; no network or a 5xx may.
    return isinstance(exc, NetworkError) and not isinstance(exc, BadRequest)


def _warn_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    logger.warning(
        "Telegram not reachable (%s); trying again in %.0f s (try %d)",
        error,
        wait,
        state.attempt_number,
    )


async def wait_for_telegram(
    application: Application, max_wait_s: float = STARTUP_RETRY_MAX_S
) -> None:
    """Initialize ``application`` (``getMe``), trying again while Telegram cannot be reached:
    one warning per try, waits doubling from 1 s to ``max_wait_s``. A rejected token raises."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(_telegram_unreachable),
        wait=wait_exponential(multiplier=1, min=1, max=max_wait_s),
        before_sleep=_warn_retry,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            await application.initialize()


def run_bot(settings: Settings) -> int:
    """Run the bot until SIGINT/SIGTERM."""
    configure_logging(settings.log_level, "bot", settings.log_format)
    application = build_application(settings)
    logger.info(
        "bot starting",
        extra={"db_path": str(settings.db_path), "local_mode": settings.telegram_local_mode},
    )
    try:
        if not _wait_until_reachable(application):
            logger.info("stopped before Telegram could be reached")
            return 0
        # Initialized above; a network error while polling is PTB's to retry.
        application.run_polling(allowed_updates=Update.ALL_TYPES, bootstrap_retries=-1)
    except InvalidToken:
        # PTB's message quotes the token; say it without.
        logger.error("TELEGRAM_BOT_TOKEN was rejected by the Bot API")
        return EXIT_CONFIG
    except Exception:
        # Logged (and so redacted): a raw traceback could quote a Bot API URL with the token.
        logger.exception("bot crashed")
        return 1
    return 0


def _wait_until_reachable(application: Application) -> bool:
    """Run :func:`wait_for_telegram` in the loop ``run_polling`` will use; False when
    SIGINT or SIGTERM came first."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    waiting = loop.create_task(wait_for_telegram(application))
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    for sig in stop_signals:
        loop.add_signal_handler(sig, waiting.cancel)
    try:
        loop.run_until_complete(waiting)
    except asyncio.CancelledError:
        return False
    finally:
        for sig in stop_signals:
            loop.remove_signal_handler(sig)
    return True
