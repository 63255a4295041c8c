"""The 👍 / 👎 message: the worker sends it after the tracks, the bot redraws it on a vote."""

from __future__ import annotations

from collections.abc import Iterable

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, WebAppInfo

from common import callback_data as cd
from common.i18n import N_, translate
from separation.formats import DEFAULT_OUTPUT_FORMAT, OutputFormat

PICKED_MARK = "✅"
# The mixer's Web App button (DESIGN.md: its text contains `Mix`, in every language).
MIX_BUTTON = "🎚 Mix"
RATING_PROMPT = N_("How did the separation turn out? Rate it:")


def rating_prompt(lang: str = "en") -> str:
    """The text above the 👍 / 👎 buttons, in ``lang``."""
    return translate(RATING_PROMPT, lang)


def rating_keyboard(
    request_id: int,
    stems: Iterable[str],
    output_format: OutputFormat = DEFAULT_OUTPUT_FORMAT,
    chosen: str | None = None,
    mix_url: str | None = None,
) -> InlineKeyboardMarkup:
    """👍 / 👎 under one job's tracks (the request's pick of ``stems`` in ``output_format``),
    ✅ on the ``chosen`` one; a new vote replaces it. With ``mix_url`` (the mixer's page of
    these tracks; private chats only, where Telegram allows Web App buttons), a second row
    holds the ``🎚 Mix`` button that opens it."""
    picked = tuple(stems)
    buttons = [
        InlineKeyboardButton(
            f"{label} {PICKED_MARK}" if vote == chosen else label,
            callback_data=cd.vote(request_id, vote, picked, output_format),
        )
        for vote, label in (("up", "👍"), ("down", "👎"))
    ]
    rows = [buttons]
    if mix_url is not None:
        rows.append([InlineKeyboardButton(MIX_BUTTON, web_app=WebAppInfo(mix_url))])
    return InlineKeyboardMarkup(rows)


def mix_url_of(markup: InlineKeyboardMarkup | None) -> str | None:
    """The Mix button's URL on a rating message's keyboard, if it has one (a redraw keeps it)."""
    if markup is None:
        return None
    for row in markup.inline_keyboard:
        for button in row:
            if button.web_app is not None:
                return button.web_app.url
    return None
