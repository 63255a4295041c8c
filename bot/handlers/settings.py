"""/settings: the user's output format as buttons, and the presses that change it."""

from __future__ import annotations

from telegram import Update

from bot import texts
from bot.handlers.context import Context, pressed_setting, services_of
from bot.keyboards import settings_keyboard
from bot.user_settings import choose_setting, output_format_of
from common.telegram import MB, edit_message, upload_limit_bytes
from separation.formats import OutputFormat


async def show_settings(update: Update, context: Context) -> None:
    """/settings: the current choices, the current one of each marked ✅."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    fmt = await output_format_of(services_of(context).db, user.id)
    await message.reply_text(
        _settings_text(context, fmt), reply_markup=settings_keyboard(user.id, fmt)
    )


async def choose(update: Update, context: Context) -> None:
    """A /settings button: store the choice and redraw the message with it marked."""
    pressed = await pressed_setting(update, context)
    if pressed is None:
        return
    query, data = pressed
    user_id = query.from_user.id
    fmt = await choose_setting(services_of(context).db, user_id, *data.setting)
    try:
        await edit_message(
            query.edit_message_text(
                _settings_text(context, fmt), reply_markup=settings_keyboard(user_id, fmt)
            ),
            {"user_id": user_id},
        )
    finally:
        await query.answer(texts.setting_saved(fmt))


def _settings_text(context: Context, fmt: OutputFormat) -> str:
    limit_bytes = upload_limit_bytes(services_of(context).settings.telegram_local_mode)
    return texts.settings_text(fmt, limit_bytes / MB)
