"""/start and /help."""

from __future__ import annotations

from telegram import Update

from bot import texts
from bot.handlers.context import Context, services_of
from common.telegram import size_limit_mb


async def show_help(update: Update, context: Context) -> None:
    """/start and /help: what to send and what comes back."""
    if update.effective_message is None:
        return
    settings = services_of(context).settings
    limit_mb = size_limit_mb(settings.max_file_mb, settings.telegram_local_mode)
    await update.effective_message.reply_text(texts.help_text(limit_mb, settings.max_duration_s))
