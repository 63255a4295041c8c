"""A sent file: refuse it with a reason, or store the request and offer the stem picker."""

from __future__ import annotations

import dataclasses
import logging

from telegram import Update
from telegram.ext import filters

from bot import texts
from bot.handlers.context import Context, services_of
from bot.intake import Refusal, inspect_upload
from bot.keyboards import picker_keyboard
from bot.user_settings import choices_of
from common.telegram import size_limit_mb
from storage import NewRequest

logger = logging.getLogger(__name__)

SONG_MESSAGES = (
    filters.AUDIO
    | filters.VOICE
    | filters.Document.ALL
    | filters.VIDEO
    | filters.VIDEO_NOTE
    | filters.ANIMATION
    | filters.PHOTO
    | filters.Sticker.ALL
) & filters.UpdateType.MESSAGE  # an edited caption is not a new song

# In a group, photos, videos and PDFs are people talking to each other: no reply.
_SILENT_IN_GROUPS = (Refusal.NOT_AUDIO, Refusal.VIDEO)


async def offer_picker(update: Update, context: Context) -> None:
    """An audio file, voice message, document or video: refuse it or offer the picker."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    services = services_of(context)
    settings = services.settings
    verdict = inspect_upload(
        message,
        max_file_mb=settings.max_file_mb,
        local_mode=settings.telegram_local_mode,
        max_duration_s=settings.max_duration_s,
    )
    if verdict is None or (verdict in _SILENT_IN_GROUPS and message.chat.type != "private"):
        return
    choices = await choices_of(services.db, user.id, user.language_code)
    lang = choices.language
    if not await services.flood.allow_upload(user.id):
        logger.info("upload over the user's limit", extra={"user_id": user.id})
        if await services.flood.warn_once(user.id):
            reply = texts.too_many_uploads(settings.uploads_per_hour, lang)
            await message.reply_text(reply, do_quote=True)
        return
    if isinstance(verdict, Refusal):
        logger.info("upload refused: %s", verdict.value, extra={"user_id": user.id})
        limit_mb = size_limit_mb(settings.max_file_mb, settings.telegram_local_mode)
        reply = texts.refusal(
            verdict, limit_mb=limit_mb, max_duration_s=settings.max_duration_s, lang=lang
        )
        await message.reply_text(reply, do_quote=True)
        return
    request = await services.db.add_request(
        NewRequest(
            chat_id=message.chat_id,
            user_id=user.id,
            message_id=message.message_id,
            **dataclasses.asdict(verdict),
        )
    )
    picker = await message.reply_text(
        texts.picker_text(request.song_name, (), choices.output_format, lang),
        reply_markup=picker_keyboard(request.id, (), lang),
        do_quote=True,
    )
    await services.db.set_picker_message(request.id, picker.message_id)
    logger.info(
        "request stored",
        extra={"user_id": user.id, "request_id": request.id, "kind": verdict.kind},
    )
