"""Inline keyboards: the stem picker and the 👍 / 👎 rating buttons."""

from __future__ import annotations

from collections.abc import Collection

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot import callback_data as cd

PICKED_MARK = "✅"


def picker_keyboard(request_id: int, picked: Collection[str]) -> InlineKeyboardMarkup:
    """One toggle per source (✅ on picked ones), then `All` and `Separate`."""
    toggles = [
        InlineKeyboardButton(
            f"{PICKED_MARK} {source}" if source in picked else source,
            callback_data=cd.toggle(request_id, source),
        )
        for source in cd.SOURCES
    ]
    rows = [toggles[i : i + 3] for i in range(0, len(toggles), 3)]
    rows.append(
        [
            InlineKeyboardButton("All", callback_data=cd.pick_all(request_id)),
            InlineKeyboardButton("▶️ Separate", callback_data=cd.separate(request_id)),
        ]
    )
    return InlineKeyboardMarkup(rows)


def rating_keyboard(request_id: int, chosen: str | None = None) -> InlineKeyboardMarkup:
    """👍 / 👎 under the delivered tracks (✅ on the ``chosen`` one); a new vote replaces it."""
    buttons = [
        InlineKeyboardButton(
            f"{label} {PICKED_MARK}" if vote == chosen else label,
            callback_data=cd.vote(request_id, vote),
        )
        for vote, label in (("up", "👍"), ("down", "👎"))
    ]
    return InlineKeyboardMarkup([buttons])
