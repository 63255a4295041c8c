"""The inline keyboards the bot draws: the stem picker and /settings."""

from __future__ import annotations

from collections.abc import Collection

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.texts import FORMAT_LABELS
from common import callback_data as cd
from common.rating import PICKED_MARK
from separation.formats import OUTPUT_FORMATS, OutputFormat
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


def settings_keyboard(user_id: int, output_format: OutputFormat) -> InlineKeyboardMarkup:
    """One row per setting, one button per value (✅ on the current one): the formats."""
    formats = [
        InlineKeyboardButton(
            f"{PICKED_MARK} {FORMAT_LABELS[fmt]}" if fmt == output_format else FORMAT_LABELS[fmt],
            callback_data=cd.setting(user_id, cd.FORMAT_SETTING, fmt),
        )
        for fmt in OUTPUT_FORMATS
    ]
    return InlineKeyboardMarkup([formats])
