"""A crowd at once: a dozen users press Separate together on the whole service (the scenario
of ``bench/load.py``, defined in tests/support/load.py). Timings are the benchmark's; here
only correctness counts: everyone gets their own tracks once, FIFO, true queue positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from separation import EnsembleSeparator
from tests.support.fake_bot_api import FakeBotApi
from tests.support.load import run_load

USERS = 12
# One source each (one model pass, two tracks) and short songs keep the crowd quick.
PICKS = (("vocals",), ("guitar",))


@pytest.mark.slow
async def test_a_crowd_gets_own_tracks_once_in_order_with_true_positions(
    fake_bot_api: FakeBotApi,
    redis_url: str,
    model_repo: Path,
    separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    result = await run_load(
        tmp_path,
        users=USERS,
        model_repo=model_repo,
        separator=separator,
        song_seconds=1.0,
        picks=PICKS,
        redis_url=redis_url,
        api=fake_bot_api,
    )
    assert result.problems == []
    assert len(result.users) == USERS
    # The burst really queued behind a busy worker, so the positions were put to the test.
    assert max(run.shown_position or 0 for run in result.users) > 1
