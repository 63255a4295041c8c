"""`demix stats [--json]`: usage and feedback figures from the bot's database."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bot.texts import stats_text
from common.settings import Settings
from storage import Database


async def collect_stats(settings: Settings) -> dict[str, Any]:
    """The figures of ``Stats.to_dict()`` from the database named in the settings."""
    async with await Database.open(settings.db_path) as database:
        return (await database.stats()).to_dict()


def run_stats(settings: Settings, as_json: bool) -> int:
    """Print the figures as text or JSON; a missing database is reported, not created."""
    if not settings.db_path.is_file():
        print(f"no database at {settings.db_path} (DEMIX_DB_PATH)", file=sys.stderr)
        return 1
    figures = asyncio.run(collect_stats(settings))
    if as_json:
        print(json.dumps(figures, indent=2, ensure_ascii=False))
    else:
        print(stats_text(figures))
    return 0
