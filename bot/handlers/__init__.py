"""The bot's update handlers, grouped by feature, in the one order PTB tries them.

Handlers are thin: they read the update, call a use case or the database, and turn the
result into a reply. The services they use (settings, database, queue) are the process's
:class:`bot.services.BotServices`, reached through ``context.bot_data``.
"""

from __future__ import annotations

from typing import Any

from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, MessageHandler

from bot.handlers import admin, errors, feedback, picker, settings, songs, welcome
from common.callback_data import PATTERNS, Action


def ordered_handlers() -> list[BaseHandler[Any, Any, Any]]:
    """Every handler, first match wins: commands, buttons by action, then messages."""
    return [
        CommandHandler(["start", "help"], welcome.show_help),
        CommandHandler("settings", settings.show_settings),
        CommandHandler("stats", admin.show_stats),
        CallbackQueryHandler(picker.toggle_source, pattern=PATTERNS[Action.TOGGLE]),
        CallbackQueryHandler(picker.pick_all, pattern=PATTERNS[Action.ALL]),
        CallbackQueryHandler(picker.separate, pattern=PATTERNS[Action.SEPARATE]),
        CallbackQueryHandler(feedback.vote, pattern=PATTERNS[Action.VOTE]),
        CallbackQueryHandler(settings.choose, pattern=PATTERNS[Action.SETTING]),
        # Anything no pattern above matches: stale, forged or garbage data.
        CallbackQueryHandler(errors.unknown_button),
        MessageHandler(songs.SONG_MESSAGES, songs.offer_picker),
        MessageHandler(feedback.TEXT_MESSAGES, feedback.text),
    ]


__all__ = ["errors", "ordered_handlers"]
