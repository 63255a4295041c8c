"""/settings: the user's output format and language as buttons, and the presses that
change them."""

from __future__ import annotations

from telegram import InlineKeyboardMarkup, Update

from bot import texts
from bot.handlers.context import Context, pressed_setting, services_of
from bot.keyboards import settings_keyboard
from bot.user_settings import Choices, choices_of, choose_setting
from common import callback_data as cd
from common.telegram import MB, edit_message, upload_limit_bytes


async def show_settings(update: Update, context: Context) -> None:
    """/settings: the current choices, the current one of each marked ✅."""
    message, user = update.effective_message, update.effective_user
    if message is None or user is None:
        return
    choices = await choices_of(services_of(context).db, user.id, user.language_code)
    await message.reply_text(
        _settings_text(context, choices), reply_markup=_keyboard(user.id, choices)
    )


async def choose(update: Update, context: Context) -> None:
    """A /settings button: store the choice and redraw the message with it marked (in the
    language now chosen)."""
    pressed = await pressed_setting(update, context)
    if pressed is None:
        return
    query, data = pressed
    user = query.from_user
    name, value = data.setting
    choices = await choose_setting(
        services_of(context).db, user.id, name, value, user.language_code
    )
    try:
        await edit_message(
            query.edit_message_text(
                _settings_text(context, choices), reply_markup=_keyboard(user.id, choices)
            ),
            {"user_id": user.id},
        )
    finally:
        if name == cd.LANGUAGE_SETTING:
            await query.answer(texts.language_saved(choices.language))
        else:
            await query.answer(texts.setting_saved(choices.output_format, choices.language))


def _keyboard(user_id: int, choices: Choices) -> InlineKeyboardMarkup:
    return settings_keyboard(user_id, choices.output_format, choices.language)


def _settings_text(context: Context, choices: Choices) -> str:
    limit_bytes = upload_limit_bytes(services_of(context).settings.telegram_local_mode)
    return texts.settings_text(choices.output_format, limit_bytes / MB, choices.language)
