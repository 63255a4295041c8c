"""A user's /settings, Telegram-free: what they chose, and storing a new choice.

Each setting is one row of buttons in /settings (``common.callback_data.SETTINGS`` lists
them with their values) and one column of the ``user_settings`` table: the output format,
and the language (``NULL`` until chosen: the user's Telegram language then decides).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common import callback_data as cd
from common.i18n import Language, language_for
from separation.formats import OutputFormat, output_format
from storage import Database

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choices:
    """What a user's separations and messages come in: their choices, else the defaults."""

    output_format: OutputFormat
    language: Language


async def choices_of(db: Database, user_id: int, language_code: str | None) -> Choices:
    """``user_id``'s format and language; ``language_code`` is their Telegram language,
    which decides when they never chose one."""
    stored = await db.user_settings(user_id)
    return Choices(
        output_format(stored.output_format), language_for(language_code, stored.language)
    )


async def output_format_of(db: Database, user_id: int) -> OutputFormat:
    """The format ``user_id``'s tracks come in: their choice, else the default (mp3)."""
    return output_format((await db.user_settings(user_id)).output_format)


async def language_of(db: Database, user_id: int, language_code: str | None) -> Language:
    """The language to speak to ``user_id`` in: their choice, else from ``language_code``."""
    return language_for(language_code, (await db.user_settings(user_id)).language)


async def choose_setting(
    db: Database, user_id: int, name: str, value: str, language_code: str | None = None
) -> Choices:
    """Store ``user_id``'s choice of ``value`` for setting ``name``; return their choices now.

    Raises:
        ValueError: not a setting and value of ``common.callback_data.SETTINGS``.
    """
    if value not in cd.SETTINGS.get(name, ()):
        raise ValueError(f"not a setting and value: {name!r}, {value!r}")
    if name == cd.LANGUAGE_SETTING:
        await db.set_language(user_id, value)
    else:
        await db.set_output_format(user_id, output_format(value))
    logger.info("setting changed", extra={"user_id": user_id, "setting": name, "value": value})
    return await choices_of(db, user_id, language_code)
