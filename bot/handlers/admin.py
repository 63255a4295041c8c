"""Admin commands: /stats."""

from __future__ import annotations

import logging

from telegram import Update

from bot import texts
from bot.experiments import current_report
from bot.handlers.context import Context, services_of, user_language
from common.experiments import format_report
from common.i18n import translate

logger = logging.getLogger(__name__)


async def show_stats(update: Update, context: Context) -> None:
    """/stats: usage and feedback figures (and the A/B experiment's), for admins only."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    services = services_of(context)
    lang = await user_language(context, user)
    if user.id not in services.settings.admin_ids:
        logger.info("stats refused", extra={"user_id": user.id})
        await message.reply_text(translate(texts.ADMINS_ONLY, lang))
        return
    reply = texts.stats_text((await services.db.stats()).to_dict(), lang)
    report = await current_report(services.db, services.experiment)
    if report is not None and any(variant.jobs for variant in report.variants):
        reply += "\n\n" + format_report(report)
    await message.reply_text(reply)
