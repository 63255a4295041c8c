"""The inline keyboards the bot draws: the stem picker and /settings.

The picker's buttons keep one order in every language (DESIGN.md): the six sources
(their own names, as the tracks are named), then All, then Separate.
"""

from __future__ import annotations

from collections.abc import Collection

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.texts import ALL_BUTTON, SEPARATE_BUTTON, format_label
from common import callback_data as cd
from common.i18n import LANGUAGE_NAMES, LANGUAGES, Language, translate
from common.rating import PICKED_MARK
from separation.formats import OUTPUT_FORMATS, OutputFormat
from separation.tracks import SOURCES


def picker_keyboard(
    request_id: int, picked: Collection[str], lang: str = "en"
) -> InlineKeyboardMarkup:
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
            InlineKeyboardButton(
                translate(ALL_BUTTON, lang), callback_data=cd.pick_all(request_id)
            ),
            InlineKeyboardButton(
                translate(SEPARATE_BUTTON, lang), callback_data=cd.separate(request_id)
            ),
        ]
    )
    return InlineKeyboardMarkup(rows)


def _choice(label: str, current: bool) -> str:
    return f"{PICKED_MARK} {label}" if current else label


def settings_keyboard(
    user_id: int, output_format: OutputFormat, language: Language = "en"
) -> InlineKeyboardMarkup:
    """One row per setting, one button per value (✅ on the current one): the formats, then
    the languages (each named in itself)."""
    formats = [
        InlineKeyboardButton(
            _choice(format_label(fmt, language), fmt == output_format),
            callback_data=cd.setting(user_id, cd.FORMAT_SETTING, fmt),
        )
        for fmt in OUTPUT_FORMATS
    ]
    languages = [
        InlineKeyboardButton(
            _choice(LANGUAGE_NAMES[lang], lang == language),
            callback_data=cd.setting(user_id, cd.LANGUAGE_SETTING, lang),
        )
        for lang in LANGUAGES
    ]
    return InlineKeyboardMarkup([formats, languages])
