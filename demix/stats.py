"""`demix stats [--json]`: usage and feedback figures from the bot's database;
`demix stats --experiments [--json]`: the A/B experiment's report."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from bot.experiments import current_report
from bot.texts import stats_text
from common.experiments import ExperimentReport, format_report
from common.settings import Settings
from storage import Database

NO_EXPERIMENT = "no experiment: DEMIX_EXPERIMENT is unset and no job in the database ran in one"


async def collect_stats(settings: Settings) -> dict[str, Any]:
    """The figures of ``Stats.to_dict()`` from the database named in the settings."""
    async with await Database.open(settings.db_path) as database:
        return (await database.stats()).to_dict()


async def collect_experiment(settings: Settings) -> ExperimentReport | None:
    """The configured experiment's report, else the latest one's in the database; None
    when there is neither."""
    async with await Database.open(settings.db_path) as database:
        return await current_report(database, settings.experiment_spec())


def run_stats(settings: Settings, as_json: bool, experiments: bool = False) -> int:
    """Print the figures (or the experiment's report) as text or JSON; a missing database is
    reported, not created."""
    if not settings.db_path.is_file():
        print(f"no database at {settings.db_path} (DEMIX_DB_PATH)", file=sys.stderr)
        return 1
    if experiments:
        return _print_experiment(asyncio.run(collect_experiment(settings)), as_json)
    figures = asyncio.run(collect_stats(settings))
    if as_json:
        print(json.dumps(figures, indent=2, ensure_ascii=False))
    else:
        print(stats_text(figures))
    return 0


def _print_experiment(report: ExperimentReport | None, as_json: bool) -> int:
    if report is None:
        # JSON readers get null; everyone gets the sentence (on stderr beside JSON).
        if as_json:
            print("null")
        print(NO_EXPERIMENT, file=sys.stderr if as_json else sys.stdout)
        return 0
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(format_report(report))
    return 0
