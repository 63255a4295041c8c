"""The stem picker's inline keyboard."""

from __future__ import annotations

from collections.abc import Collection

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from common import callback_data as cd
from common.rating import PICKED_MARK
from separation.tracks import SOURCES


def picker_keyboard(request_id: int, picked: Collection[str]) -> InlineKeyboardMarkup:
    """One toggle per source (✅ on picked ones), then `All` and `Separate`."""
    toggles = [
        InlineKeyboardButton(
            f"{PICKED_MARK} {source}" if source in picked else source,
            callback_data=cd.toggle(request_id, source),
        )
        for source in SOURCES
    ]
    rows = [toggles[i : i + 3] for i in range(0, len(toggles), 3)]
    rows.append(
        [
            InlineKeyboardButton("All", callback_data=cd.pick_all(request_id)),
            InlineKeyboardButton("▶️ Separate", callback_data=cd.separate(request_id)),
        ]
    )
    return InlineKeyboardMarkup(rows)
