"""The A/B experiment's report from the database: for the admin's /stats and `demix stats
--experiments`. Assigning variants is :func:`bot.separations.plan_separation`'s."""

from __future__ import annotations

import asyncio

from common.experiments import (
    Experiment,
    ExperimentReport,
    VariantTally,
    experiment_report,
)
from storage import Database


async def experiment_tallies(
    db: Database, experiment: Experiment | None
) -> tuple[str, list[VariantTally]] | None:
    """Which experiment to report on, and its counts per variant.

    The configured ``experiment`` (each of its variants, those without jobs yet at 0, then
    any other variant its jobs recorded, as when the spec changed while it ran); without
    one, the most recent experiment the database's jobs ran in. None: neither exists.
    """
    name = experiment.name if experiment is not None else await db.latest_experiment()
    if name is None:
        return None
    stored = {
        counts.variant: VariantTally(
            counts.variant, counts.jobs, counts.up, counts.down, counts.down_comments
        )
        for counts in await db.variant_tallies(name)
    }
    configured = [] if experiment is None else [variant.name for variant in experiment.variants]
    tallies = [stored.pop(variant, VariantTally(variant, 0, 0, 0)) for variant in configured]
    return name, tallies + list(stored.values())


async def current_report(db: Database, experiment: Experiment | None) -> ExperimentReport | None:
    """The report of :func:`experiment_tallies`'s experiment, or None without one.

    The statistics run in a thread: their first use imports scipy.
    """
    found = await experiment_tallies(db, experiment)
    if found is None:
        return None
    name, tallies = found
    return await asyncio.to_thread(experiment_report, name, tallies)
