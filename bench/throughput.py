"""Songs per hour of one worker process: sequential (one job at a time) against pipelined
(several jobs at once, one separation at a time), on the same songs, in one run.

Real parts: a redis-server, the fake Bot API over HTTP with a latency on downloads
(``getFile``) and uploads (``sendMediaGroup``) so there is I/O to overlap, arq's Worker in
this process, the tiny random models (or ``--size pretrained``) on the real separation path.
N jobs are queued, then one burst worker serves them all; the time from its start to the
queue being empty gives songs per hour. Checks, for each mode: every chat got its tracks,
each once; no two separations overlapped; then pipelined/sequential >= ``--min-ratio``.
Exits 1 when a check fails.

    python bench/throughput.py [--songs 12] [--seconds 4] [--max-jobs 3] [--latency 0.5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

# The harness lives with the tests (fake Bot API, Redis server, worker runner, submit).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arq import create_pool
from arq.connections import RedisSettings

from common.settings import Settings
from separation import plan_tracks
from separation.random_models import write_model_repo
from tests.support.audio import make_song
from tests.support.fake_bot_api import FakeBotApi
from tests.support.load import PICKS
from tests.support.redis_server import RedisServer
from tests.support.separators import RecordingSeparator, make_separator
from tests.support.workers import run_worker_burst
from tests.worker.conftest import Submitted, submit

FIRST_USER_ID = 9001


async def serve(
    workdir: Path, songs: list[Path], separator: Any, max_jobs: int, latency_s: float
) -> dict[str, Any]:
    """Queue one job per song, serve them with one burst worker; its figures and checks."""
    server = RedisServer(workdir / "redis").start()
    try:
        with FakeBotApi() as api:
            for method in ("getFile", "sendMediaGroup"):
                api.set_latency(method, latency_s)
            settings = Settings(
                _env_file=None,
                **api.settings_overrides(),
                redis_url=server.url,
                db_path=workdir / "unused.sqlite3",
                data_dir=workdir / "data",
                device="cpu",
                worker_max_jobs=max_jobs,
                progress_edit_interval_s=0.5,
            )
            pool = await create_pool(RedisSettings.from_dsn(server.url))
            try:
                jobs: list[Submitted] = [
                    await submit(
                        api,
                        pool,
                        song,
                        PICKS[i % len(PICKS)],
                        user_id=FIRST_USER_ID + i,
                        song_name=song.stem,
                    )
                    for i, song in enumerate(songs)
                ]
            finally:
                await pool.aclose()
            recorder = RecordingSeparator(separator)
            start = time.perf_counter()
            worker = await run_worker_burst(settings, recorder)
            elapsed = time.perf_counter() - start
            problems = []
            delivered = 0
            for job in jobs:
                expected = [f"{job.job.song_name} - {t}.mp3" for t in plan_tracks(job.job.stems)]
                got = [m.file_name for m in api.audio_messages(job.job.chat_id)]
                if Counter(got) != Counter(expected):
                    problems.append(f"user {job.job.user_id} got {got}, expected {expected}")
                else:
                    delivered += 1
            if worker.jobs_complete != len(jobs):
                problems.append(f"{worker.jobs_complete} of {len(jobs)} jobs completed")
            if recorder.max_running != 1:
                problems.append(f"{recorder.max_running} separations ran at once")
            separate_s = sum(end - begin for begin, end in recorder.intervals)
    finally:
        server.stop()
    return {
        "max_jobs": max_jobs,
        "seconds": round(elapsed, 2),
        "songs_per_hour": round(len(songs) / elapsed * 3600),
        "separating_share": round(separate_s / elapsed, 2),
        "songs": len(songs),
        "delivered": delivered,  # songs whose chat got exactly their tracks, each once
        "problems": problems,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=12, help="jobs queued")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each song")
    parser.add_argument("--max-jobs", type=int, default=3, help="jobs at once, pipelined")
    parser.add_argument(
        "--latency", type=float, default=0.5, help="seconds per getFile and sendMediaGroup"
    )
    parser.add_argument("--size", default="tiny", help="random models: tiny or pretrained")
    parser.add_argument("--min-ratio", type=float, default=1.2, help="pipelined/sequential")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="demix-throughput-") as tmp:
        workdir = Path(tmp)
        models = write_model_repo(workdir / "models", size=args.size)
        separator = make_separator(models)
        separator.warm_up()
        songs = [
            make_song(workdir / f"Song {i}.mp3", seconds=args.seconds, seed=i)
            for i in range(args.songs)
        ]
        rows = [
            asyncio.run(serve(workdir / f"run{m}", songs, separator, m, args.latency))
            # No cache: each mode separates every song.
            for m in (1, args.max_jobs)
        ]
    sequential, pipelined = rows
    ratio = pipelined["songs_per_hour"] / sequential["songs_per_hour"]
    print(f"{args.songs} songs of {args.seconds:g} s, latency {args.latency:g} s, {args.size}")
    print(f"{'max_jobs':>8} {'seconds':>8} {'songs/h':>8} {'separating':>10}")
    for row in rows:
        print(
            f"{row['max_jobs']:>8} {row['seconds']:>8.2f} {row['songs_per_hour']:>8} "
            f"{row['separating_share']:>10.0%}"
        )
        for problem in row["problems"]:
            print(f"PROBLEM max_jobs={row['max_jobs']}: {problem}")
    ok = not sequential["problems"] and not pipelined["problems"] and ratio >= args.min_ratio
    print(json.dumps({"ratio": round(ratio, 2), "min_ratio": args.min_ratio, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
