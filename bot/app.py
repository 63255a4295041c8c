"""`demix bot`: the Telegram front end as a python-telegram-bot Application (long polling).

This module's import graph stays free of torch: the bot process never loads the models.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ParseMode
from telegram.error import InvalidToken
from telegram.ext import Application, Defaults

from bot.handlers import errors, ordered_handlers
from bot.handlers.context import SERVICES_KEY
from bot.services import BotServices
from common.logs import configure_logging
from common.settings import Settings

logger = logging.getLogger(__name__)


def build_application(settings: Settings, *, watch_interval_s: float = 2.0) -> Application:
    """The bot's Application: Bot API endpoints from the settings, handlers, lifecycle hooks.

    The database, the queue client and the job watcher open in ``post_init`` and close in
    ``post_stop`` / ``post_shutdown``; whoever runs the Application must run those hooks
    (``run_polling`` does). Every text the bot sends is HTML (user text is escaped).
    """
    services = BotServices(settings, watch_interval_s=watch_interval_s)
    application = (
        Application.builder()
        .token(settings.require_token())
        .base_url(settings.telegram_api_base_url)
        .base_file_url(settings.telegram_file_base_url)
        .local_mode(settings.telegram_local_mode)
        .defaults(Defaults(parse_mode=ParseMode.HTML))
        .post_init(services.start)
        .post_stop(services.stop_watching)
        .post_shutdown(services.close)
        .build()
    )
    application.bot_data[SERVICES_KEY] = services
    application.add_handlers(ordered_handlers())
    application.add_error_handler(errors.log_error)
    return application


def run_bot(settings: Settings) -> int:
    """Run the bot until SIGINT/SIGTERM."""
    configure_logging(settings.log_level, "bot")
    application = build_application(settings)
    logger.info(
        "bot starting",
        extra={"db_path": str(settings.db_path), "local_mode": settings.telegram_local_mode},
    )
    try:
        application.run_polling(allowed_updates=Update.ALL_TYPES)
    except InvalidToken:
        # PTB's message quotes the token; say it without.
        logger.error("TELEGRAM_BOT_TOKEN was rejected by the Bot API")
        return 1
    except Exception:
        # Logged (and so redacted): a raw traceback could quote a Bot API URL with the token.
        logger.exception("bot crashed")
        return 1
    return 0
