"""What every handler needs from its context: the services, and a pressed button's request."""

from __future__ import annotations

import logging

from telegram import CallbackQuery, Update, User
from telegram.ext import ContextTypes

from bot import texts
from bot.services import BotServices
from bot.user_settings import language_of
from common import callback_data as cd
from common.i18n import Language, translate
from storage import Request

logger = logging.getLogger(__name__)

Context = ContextTypes.DEFAULT_TYPE
SERVICES_KEY = "services"


def services_of(context: Context) -> BotServices:
    """The process's services, put into ``bot_data`` by :func:`bot.app.build_application`."""
    services = context.bot_data[SERVICES_KEY]
    assert isinstance(services, BotServices)
    return services


async def user_language(context: Context, user: User) -> Language:
    """The language to speak to ``user`` in: their /settings choice, else Telegram's."""
    return await language_of(services_of(context).db, user.id, user.language_code)


async def _allowed_press(update: Update, context: Context) -> tuple[CallbackQuery, Language] | None:
    """The press and the presser's language, or ``None``: no press, or one over the
    presser's flood limit (they get an alert)."""
    query = update.callback_query
    if query is None:
        return None
    lang = await user_language(context, query.from_user)
    services = services_of(context)
    if await services.flood.allow_press(query.from_user.id):
        return query, lang
    limit = services.settings.presses_per_minute
    await query.answer(texts.too_many_presses(limit, lang), show_alert=True)
    return None


async def pressed_request(
    update: Update, context: Context
) -> tuple[CallbackQuery, cd.CallbackData, Request, Language] | None:
    """The press, its data, its request and the presser's language, or ``None`` after an
    alert: the request is gone or belongs to another chat (stale, forged), or the presser
    did not send the song."""
    allowed = await _allowed_press(update, context)
    if allowed is None:
        return None
    query, lang = allowed
    services = services_of(context)
    data = cd.parse(query.data)
    request = None if data is None else await services.db.get_request(data.request_id)
    message = query.message
    if (
        data is None
        or request is None
        # A button is only valid on a message in the request's own chat.
        or (message is not None and message.chat.id != request.chat_id)
    ):
        await answer_stale(query, lang)
        return None
    if query.from_user.id != request.user_id:
        await query.answer(translate(texts.NOT_YOUR_SONG, lang), show_alert=True)
        return None
    return query, data, request, lang


async def pressed_setting(
    update: Update, context: Context
) -> tuple[CallbackQuery, cd.CallbackData] | None:
    """A /settings press and its data, or ``None`` after an alert: garbage, or the settings
    of another user (a /settings message in a group, a forged id)."""
    allowed = await _allowed_press(update, context)
    if allowed is None:
        return None
    query, lang = allowed
    data = cd.parse(query.data)
    if data is None or data.action is not cd.Action.SETTING:
        await answer_stale(query, lang)
        return None
    if data.request_id != query.from_user.id:
        logger.info(
            "settings press by another user",
            extra={"user_id": query.from_user.id, "data": (query.data or "")[:64]},
        )
        await query.answer(translate(texts.NOT_YOUR_SETTINGS, lang), show_alert=True)
        return None
    return query, data


async def answer_stale(query: CallbackQuery, lang: str = "en") -> None:
    """Alert on a button that no longer works (in the presser's ``lang``), and log what it
    carried."""
    logger.info(
        "stale or forged button",
        extra={"user_id": query.from_user.id, "data": (query.data or "")[:64]},
    )
    await query.answer(translate(texts.STALE_BUTTON, lang), show_alert=True)
