"""The 👍 / 👎 message: the worker sends it after the tracks, the bot redraws it on a vote."""

from __future__ import annotations

from collections.abc import Iterable

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from common import callback_data as cd
from common.i18n import N_, translate
from separation.formats import DEFAULT_OUTPUT_FORMAT, OutputFormat

PICKED_MARK = "✅"
RATING_PROMPT = N_("How did the separation turn out? Rate it:")


def rating_prompt(lang: str = "en") -> str:
    """The text above the 👍 / 👎 buttons, in ``lang``."""
    return translate(RATING_PROMPT, lang)


def rating_keyboard(
    request_id: int,
    stems: Iterable[str],
    output_format: OutputFormat = DEFAULT_OUTPUT_FORMAT,
    chosen: str | None = None,
) -> InlineKeyboardMarkup:
    """👍 / 👎 under one job's tracks (the request's pick of ``stems`` in ``output_format``),
    ✅ on the ``chosen`` one; a new vote replaces it."""
    picked = tuple(stems)
    buttons = [
        InlineKeyboardButton(
            f"{label} {PICKED_MARK}" if vote == chosen else label,
            callback_data=cd.vote(request_id, vote, picked, output_format),
        )
        for vote, label in (("up", "👍"), ("down", "👎"))
    ]
    return InlineKeyboardMarkup([buttons])
