"""A user's /settings, Telegram-free: what they chose, and storing a new choice.

Each setting is one row of buttons in /settings (``common.callback_data.SETTINGS`` lists
them with their values) and one column of the ``user_settings`` table; today the output
format, later the language.
"""

from __future__ import annotations

import logging

from common import callback_data as cd
from separation.formats import OutputFormat, output_format
from storage import Database

logger = logging.getLogger(__name__)


async def output_format_of(db: Database, user_id: int) -> OutputFormat:
    """The format ``user_id``'s tracks come in: their choice, else the default (mp3)."""
    return output_format((await db.user_settings(user_id)).output_format)


async def choose_setting(db: Database, user_id: int, name: str, value: str) -> OutputFormat:
    """Store ``user_id``'s choice of ``value`` for setting ``name``; return their format now.

    Raises:
        ValueError: not a setting and value of ``common.callback_data.SETTINGS``.
    """
    if value not in cd.SETTINGS.get(name, ()):
        raise ValueError(f"not a setting and value: {name!r}, {value!r}")
    stored = await db.set_output_format(user_id, output_format(value))
    logger.info("setting changed", extra={"user_id": user_id, "setting": name, "value": value})
    return output_format(stored.output_format)
