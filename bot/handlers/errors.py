"""The error handler and the answer to buttons no pattern matches."""

from __future__ import annotations

import logging

from telegram import Update

from bot.handlers.context import Context, answer_stale, user_language

logger = logging.getLogger(__name__)


async def unknown_button(update: Update, context: Context) -> None:
    """A button whose data is of no known action: stale, forged or garbage."""
    query = update.callback_query
    if query is not None:
        await answer_stale(query, await user_language(context, query.from_user))


async def log_error(update: object, context: Context) -> None:
    """Log any handler error with its traceback; the bot keeps serving."""
    user_id = None
    if isinstance(update, Update) and update.effective_user is not None:
        user_id = update.effective_user.id
    logger.error(
        "handler error: %r", context.error, exc_info=context.error, extra={"user_id": user_id}
    )
