"""Many users at once on the fake Bot API: each gets their own tracks once, the queue
positions shown are true, and how long they wait.

The whole service runs in this process on real parts: a redis-server, the fake Bot API over
HTTP, the bot's PTB Application and arq workers, tiny random models on the real separation
path (so the seconds are the service's overhead and queueing, not model speed). The scenario
and its checks are ``tests/support/load.py``, shared with ``tests/bot/test_load.py``; its
docstring says what "true" means for a position. Exits 1 when a check fails.

    python bench/load.py [--users 36] [--workers 1] [--max-jobs 1] [--seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

# The scenario lives with the test harness it is built from (fake Bot API, worker runner).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from separation.random_models import write_model_repo
from tests.support.load import LoadResult, run_load
from tests.support.separators import make_separator


def report(result: LoadResult) -> None:
    print(f"{'user':>6} {'pick':>5} {'shown':>5} {'wait s':>7} {'total s':>8}")
    for run in sorted(result.users, key=lambda run: run.enqueued_at):
        print(
            f"{run.user_id:>6} {len(run.expected):>5} {run.shown_position or '-':>5} "
            f"{run.wait_s:>7.2f} {run.total_s:>8.2f}"
        )
    for problem in result.problems:
        print(f"PROBLEM {problem}")
    print(json.dumps(result.summary()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=36, help="simulated users")
    parser.add_argument("--workers", type=int, default=1, help="arq workers")
    parser.add_argument("--max-jobs", type=int, default=1, help="jobs per worker at once")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each song")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="demix-load-") as tmp:
        workdir = Path(tmp)
        models = write_model_repo(workdir / "models")
        result = asyncio.run(
            run_load(
                workdir,
                users=args.users,
                model_repo=models,
                separator=make_separator(models),
                workers=args.workers,
                worker_max_jobs=args.max_jobs,
                song_seconds=args.seconds,
            )
        )
    report(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
