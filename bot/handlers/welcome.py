"""/start and /help."""

from __future__ import annotations

from telegram import Update

from bot import texts
from bot.handlers.context import Context, services_of, user_language
from common.telegram import size_limit_mb


async def show_help(update: Update, context: Context) -> None:
    """/start and /help: what to send and what comes back."""
    message, user = update.effective_message, update.effective_user
    if message is None:
        return
    settings = services_of(context).settings
    lang = "en" if user is None else await user_language(context, user)
    limit_mb = size_limit_mb(settings.max_file_mb, settings.telegram_local_mode)
    await message.reply_text(texts.help_text(limit_mb, settings.max_duration_s, lang))
