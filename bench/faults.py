"""Workers killed at random points of their jobs: how long until each job resumes, and
whether any track reaches its chat twice or never.

Real parts: a redis-server, the fake Bot API over HTTP (latency on ``sendMediaGroup`` and
``sendAudio``, so uploads last long enough to be hit), tiny random models, and ``--workers``
real worker processes (``python -m demix worker``, a cache each, as on separate machines)
under a small supervisor in this script that starts a worker process again when it dies
(as ``demix up`` and compose's ``restart:`` do). One job per user and chat, songs of
``--seconds`` s, the stem picks of ``bench/load.py`` in turn (vocals only: 2 tracks; two
sources: 3; all six: 6).

The killer: each job gets a random point of its life (a fraction, seeded by ``--seed``, of
``--window`` seconds after its claim; by default the window of a pick is the life of one
job of that pick served first, unkilled, so the points fall on download, separation, encode
and upload alike). When that point comes the worker process that holds the job (the live
process that logged ``job started`` for it last) is SIGKILLed with its process group, as
when its machine is lost: at most one worker is down at a time, and only while every other
worker is up and ready. Every job that process held is interrupted (at a random point of
its life too: it is not killed again). For each interrupted job the script measures the
time from the kill to another claim: arq's ``arq:in-progress:<job id>`` holding a value
other than the one it held at the kill, or the job found complete. Jobs are fed so that the
survivors always have a free slot for what a killed worker held (at most ``(workers - 1) ×
max_jobs`` jobs unfinished at once), and a job is submitted only while every worker is up
(so that its point can be acted on): the time measured is the lease's, not a queue's.

At the end (every job complete, or ``--timeout``) it counts, per chat, the audio tracks
delivered against those planned (``Test Song - <track>.mp3``): tracks delivered more than
once (duplicates) and tracks never delivered (lost); rating messages (must be 1 per chat);
the final status (must be "✅ Done"). It prints markdown tables and writes ``--json``.
The fake Bot API acts on an upload that reached it even when its sender dies during the
latency, as Telegram does with a request it has received whole: a kill there is the
delivery ledger's stated window (worker/delivery.py), and the report counts the duplicates
of chats whose job was killed mid-upload apart (``duplicates_killed_mid_upload``).

Exits 1 when a track is duplicated or lost, a chat has other than one rating message, a
final status is not "Done", a job did not complete, a resume took longer than
``2 × lease + 1 s`` (or never came), or a worker exited that the script did not kill.

    python bench/faults.py [--jobs 20] [--lease 3] [--workers 2] [--max-jobs 1] [--seed 0]
                           [--seconds 3] [--latency 0.5] [--window S] [--json FILE]

With the service's default lease (target: a job resumes within 60 s of its worker's death):

    python bench/faults.py --lease 30 --jobs 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# The harness lives with the tests (fake Bot API, Redis server, worker environment, submit).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix
from arq.jobs import Job, JobStatus

from separation import plan_tracks
from separation.random_models import write_model_repo
from tests.support.audio import make_song
from tests.support.fake_bot_api import FakeBotApi
from tests.support.load import PICKS
from tests.support.processes import demix_process
from tests.support.redis_server import RedisServer
from tests.worker.conftest import Submitted, rating_messages, status_texts, submit, worker_env

FIRST_USER_ID = 7001
CALIBRATION_USER_ID = 6001
SONG_NAME = "Test Song"
POLL_S = 0.05
# Slack on the resume bound: the survivor's poll of the queue (0.5 s) and this script's.
BOUND_SLACK_S = 1.0
READY_TIMEOUT_S = 180.0


@dataclass
class WorkerProcess:
    """One run of one worker slot; the supervisor starts a new one when it dies."""

    slot: int
    run: int
    process: subprocess.Popen[bytes]
    log: Path
    started_at: float
    ready: bool = False
    killed: bool = False  # by this script
    exit_code: int | None = None
    _offset: int = 0
    _partial: bytes = b""

    @property
    def name(self) -> str:
        return f"w{self.slot}.{self.run}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def new_records(self) -> list[dict[str, Any]]:
        """The JSON log lines written since the last call."""
        try:
            with self.log.open("rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        records = []
        for line in lines:
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records


class Fleet:
    """The worker processes and their supervisor: a slot whose process died gets a new one."""

    def __init__(self, stack: contextlib.ExitStack, envs: list[dict[str, str]], root: Path):
        self.stack = stack
        self.envs = envs
        self.root = root
        self.current: list[WorkerProcess] = []
        self.all: list[WorkerProcess] = []
        # job id -> (log timestamp, process) of each "job started" line seen
        self.starts: dict[str, list[tuple[str, WorkerProcess]]] = {}
        for slot in range(len(envs)):
            self.current.append(self._start(slot, 0))

    def _start(self, slot: int, run: int) -> WorkerProcess:
        log = self.root / f"worker-{slot}.{run}.log"
        process = self.stack.enter_context(
            demix_process("worker", env=self.envs[slot], cwd=self.root, log=log)
        )
        worker = WorkerProcess(slot, run, process, log, time.monotonic())
        self.all.append(worker)
        return worker

    def supervise(self) -> None:
        """Read new log lines; start a slot's process again once it has exited."""
        for worker in self.all:
            self._read(worker)
        for slot, worker in enumerate(self.current):
            code = worker.process.poll()
            if code is not None:
                worker.exit_code = code
                self._read(worker)
                self.current[slot] = self._start(slot, worker.run + 1)

    def _read(self, worker: WorkerProcess) -> None:
        for record in worker.new_records():
            message = record.get("msg")
            if message == "worker ready":
                worker.ready = True
            elif message == "job started" and "job_id" in record:
                self.starts.setdefault(record["job_id"], []).append((record.get("ts", ""), worker))

    def holder(self, job_id: str) -> WorkerProcess | None:
        """The live process that logged ``job started`` for ``job_id`` last, if any."""
        starts = self.starts.get(job_id)
        if not starts:
            return None
        _, worker = max(starts, key=lambda start: start[0])
        return worker if worker.alive() and not worker.killed else None

    def all_ready(self) -> bool:
        return all(w.alive() and w.ready for w in self.current)

    def kill(self, worker: WorkerProcess) -> None:
        """SIGKILL the process and its group (its ffmpeg children): a lost machine."""
        worker.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=10)

    def unexpected_exits(self) -> list[dict[str, Any]]:
        return [
            {"worker": w.name, "exit_code": w.exit_code, "log": str(w.log)}
            for w in self.all
            if w.exit_code is not None and not w.killed
        ]


@dataclass
class Interruption:
    """One job that a kill took from its worker."""

    job_id: str
    chat_id: int
    kill: int  # index of the kill
    token: str | None  # the claim's value at the kill
    killed_at: float
    phase: str  # what the job's status showed at the kill
    resumed_s: float | None = None
    how: str | None = None  # "claim": another worker's claim; "complete": found complete


@dataclass
class Kill:
    index: int
    job_id: str  # the job whose random point it was
    worker: str
    at_s: float  # after the job's first claim
    phase: str  # what the job's status showed
    delivered_before: int  # audio messages in the job's chat at the kill
    interrupted: list[str] = field(default_factory=list)


@dataclass
class Tracked:
    """A submitted job, as the killer follows it."""

    submitted: Submitted
    # Where in its life its worker is killed, as a fraction of its pick's window; None for
    # a calibration job (never killed).
    kill_fraction: float | None
    claimed_at: float | None = None
    completed_at: float | None = None
    killed: bool = False  # its holder was killed (at its own point, or another job's)

    @property
    def complete(self) -> bool:
        return self.completed_at is not None

    @property
    def pick(self) -> tuple[str, ...]:
        return self.submitted.job.stems

    @property
    def job_id(self) -> str:
        return self.submitted.job_id


def phase_of(api: FakeBotApi, submitted: Submitted) -> str:
    """The job's phase as its status message shows it."""
    text = (status_texts(api, submitted)[-1] or "").lower()
    if "sending" in text:
        return "upload"
    if "separating" in text:
        return "encode" if "100%" in text else "separation"
    if "waiting for the separator" in text:
        return "waiting"
    if "downloading" in text:
        return "download"
    if "done" in text:
        return "finishing"
    return "start"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def claim_values(pool: ArqRedis, job_ids: list[str]) -> dict[str, str | None]:
    if not job_ids:
        return {}
    values = await pool.mget([in_progress_key_prefix + job_id for job_id in job_ids])
    return {
        job_id: None if value is None else value.decode(errors="replace")
        for job_id, value in zip(job_ids, values, strict=True)
    }


async def is_complete(pool: ArqRedis, job_id: str) -> bool:
    return await Job(job_id, pool).status() == JobStatus.complete


@dataclass(frozen=True)
class Order:
    """A job to submit: its song, pick, user, and where in its life its worker dies."""

    song: Path
    pick: tuple[str, ...]
    user_id: int
    kill_fraction: float | None


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.rng = random.Random(args.seed)
        self.kills: list[Kill] = []
        self.interruptions: list[Interruption] = []
        self.jobs: list[Tracked] = []
        self.calibration: list[Tracked] = []
        # Pick -> the window its jobs' kill points fall in (seconds after the claim).
        self.windows: dict[tuple[str, ...], float] = {}
        self.problems: list[str] = []

    async def run(self) -> dict[str, Any]:
        args = self.args
        models = write_model_repo(self.root / "models")
        picks = [PICKS[i % len(PICKS)] for i in range(args.jobs)]
        calibrated = [] if args.window is not None else sorted(set(picks), key=PICKS.index)
        songs = [
            make_song(self.root / f"song-{i}.mp3", seconds=args.seconds, seed=args.seed * 1000 + i)
            for i in range(args.jobs + len(calibrated))
        ]
        orders = [
            Order(songs[i], pick, FIRST_USER_ID + i, self.rng.random())
            for i, pick in enumerate(picks)
        ]
        calibration = [
            Order(songs[args.jobs + i], pick, CALIBRATION_USER_ID + i, None)
            for i, pick in enumerate(calibrated)
        ]
        server = RedisServer(self.root / "redis").start()
        started = time.monotonic()
        try:
            with FakeBotApi() as api, contextlib.ExitStack() as stack:
                for method in ("sendMediaGroup", "sendAudio"):
                    api.set_latency(method, args.latency)
                envs = [self._env(api, server.url, models, slot) for slot in range(args.workers)]
                pool = await create_pool(RedisSettings.from_dsn(server.url))
                try:
                    fleet = Fleet(stack, envs, self.root)
                    await self._wait_ready(fleet)
                    if calibration:
                        self.calibration = await self._serve(fleet, pool, api, calibration)
                        self._calibrate()
                    else:
                        self.windows = dict.fromkeys(picks, args.window)
                    if not self.problems:
                        self.jobs = await self._serve(fleet, pool, api, orders)
                finally:
                    await pool.aclose()
                # The workers stop here (the stack kills them); then the chats are read.
                stack.close()
                chats = self._check_chats(api)
                exits = fleet.unexpected_exits()
        finally:
            server.stop()
        return self._report(chats, exits, time.monotonic() - started)

    def _env(self, api: FakeBotApi, redis_url: str, models: Path, slot: int) -> dict[str, str]:
        args = self.args
        env = worker_env(api, redis_url, models, self.root)
        env.update(
            DEMIX_CACHE_DIR=str(self.root / f"cache-{slot}"),
            DEMIX_DATA_DIR=str(self.root / f"data-{slot}"),
            DEMIX_JOB_LEASE_S=str(args.lease),
            DEMIX_WORKER_MAX_JOBS=str(args.max_jobs),
            DEMIX_PROGRESS_EDIT_INTERVAL_S="0.2",
            DEMIX_MAX_DURATION_S=str(max(4, int(args.seconds) + 2)),
            # Two shared cores, several processes: deadlines far from the figures measured.
            DEMIX_JOB_TIMEOUT_BASE_S="120",
            DEMIX_LOG_LEVEL="INFO",
            DEMIX_LOG_FORMAT="json",
        )
        return env

    async def _wait_ready(self, fleet: Fleet) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not fleet.all_ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the workers were not ready in {READY_TIMEOUT_S:.0f} s")
            await asyncio.sleep(POLL_S)
            fleet.supervise()

    def _calibrate(self) -> None:
        """Each pick's window: the life (claim to complete) of its calibration job, served
        unkilled, as many at once as the killed jobs will be."""
        for job in self.calibration:
            if job.claimed_at is None or job.completed_at is None:
                self.problems.append(f"calibration job {job.job_id} did not complete")
            else:
                self.windows[job.pick] = job.completed_at - job.claimed_at

    async def _serve(
        self, fleet: Fleet, pool: ArqRedis, api: FakeBotApi, orders: list[Order]
    ) -> list[Tracked]:
        """Submit ``orders`` (no more unfinished at once than the survivors of a kill can
        take up), kill workers at the jobs' points, until every job is complete."""
        args = self.args
        limit = max(1, (args.workers - 1) * args.max_jobs)
        deadline = time.monotonic() + args.timeout
        queued = list(orders)
        jobs: list[Tracked] = []
        while True:
            fleet.supervise()
            now = time.monotonic()
            for job in jobs:
                if not job.complete and await is_complete(pool, job.job_id):
                    job.completed_at = now
            open_jobs = [job for job in jobs if not job.complete]
            claims = await claim_values(pool, [job.job_id for job in open_jobs])
            self._follow_resumes(claims, {job.job_id for job in jobs if job.complete}, now)
            if not queued and not open_jobs:
                return jobs
            if now > deadline:
                self.problems.append(
                    f"timed out after {args.timeout:.0f} s with {len(open_jobs)} job(s) "
                    f"unfinished and {len(queued)} not queued"
                )
                return jobs
            # A job starts only with every worker up, so that its point can be acted on.
            while queued and len(open_jobs) < limit and fleet.all_ready():
                order = queued.pop(0)
                submitted = await submit(
                    api, pool, order.song, order.pick, user_id=order.user_id, song_name=SONG_NAME
                )
                job = Tracked(submitted, order.kill_fraction)
                jobs.append(job)
                open_jobs.append(job)
            for job in open_jobs:
                if job.claimed_at is None and claims.get(job.job_id) is not None:
                    job.claimed_at = now
            await self._maybe_kill(fleet, pool, api, open_jobs, now)
            await asyncio.sleep(POLL_S)

    def _follow_resumes(self, claims: dict[str, str | None], done: set[str], now: float) -> None:
        for gap in self.interruptions:
            if gap.resumed_s is not None:
                continue
            if gap.job_id in done:
                gap.resumed_s, gap.how = now - gap.killed_at, "complete"
            elif claims.get(gap.job_id) not in (None, gap.token):
                gap.resumed_s, gap.how = now - gap.killed_at, "claim"

    async def _maybe_kill(
        self,
        fleet: Fleet,
        pool: ArqRedis,
        api: FakeBotApi,
        open_jobs: list[Tracked],
        now: float,
    ) -> None:
        if not fleet.all_ready():
            return  # a worker is down or starting: only one at a time
        for job in open_jobs:
            if job.killed or job.claimed_at is None or job.kill_fraction is None:
                continue
            if now < job.claimed_at + job.kill_fraction * self.windows[job.pick]:
                continue
            victim = fleet.holder(job.job_id)
            if victim is None:
                continue  # between a lapse and the next claim, or its start not yet logged
            held = [j.job_id for j in open_jobs if fleet.holder(j.job_id) is victim]
            tokens = await claim_values(pool, held)
            held = [job_id for job_id in held if tokens[job_id] is not None]
            if job.job_id not in held:
                continue
            kill = Kill(
                index=len(self.kills),
                job_id=job.job_id,
                worker=victim.name,
                at_s=round(now - job.claimed_at, 3),
                phase=phase_of(api, job.submitted),
                delivered_before=len(api.audio_messages(job.submitted.job.chat_id)),
                interrupted=held,
            )
            fleet.kill(victim)
            killed_at = time.monotonic()
            self.kills.append(kill)
            for other in open_jobs:
                if other.job_id in held:
                    # Its life is cut at a random point too: that is its kill.
                    other.killed = True
                    self.interruptions.append(
                        Interruption(
                            other.job_id,
                            other.submitted.job.chat_id,
                            kill.index,
                            tokens[other.job_id],
                            killed_at,
                            phase_of(api, other.submitted),
                        )
                    )
            return  # one worker down at a time

    def _check_chats(self, api: FakeBotApi) -> list[dict[str, Any]]:
        rows = []
        calibration = {job.job_id for job in self.calibration}
        phases: dict[str, list[str]] = {}
        for gap in self.interruptions:
            phases.setdefault(gap.job_id, []).append(gap.phase)
        for job in [tracked.submitted for tracked in self.calibration + self.jobs]:
            chat_id = job.job.chat_id
            expected = [f"{job.job.song_name} - {t}.mp3" for t in plan_tracks(job.job.stems)]
            got = Counter(m.file_name for m in api.audio_messages(chat_id))
            final = status_texts(api, job)[-1] or ""
            rows.append(
                {
                    "job_id": job.job_id,
                    "chat_id": chat_id,
                    "stems": list(job.job.stems),
                    "expected": len(expected),
                    "delivered": sum(got.values()),
                    "duplicates": sum(n - 1 for n in got.values() if n > 1),
                    "lost": sum(1 for name in expected if got[name] == 0),
                    "unexpected": sum(n for name, n in got.items() if name not in expected),
                    "ratings": len(rating_messages(api, chat_id)),
                    "done": final.startswith("✅ Done"),
                    "resumed_shown": "Resumed after an interruption" in final,
                    # What its status showed at each kill that interrupted it.
                    "interrupted_in": phases.get(job.job_id, []),
                    "calibration": job.job_id in calibration,
                }
            )
        return rows

    def _report(
        self, chats: list[dict[str, Any]], exits: list[dict[str, Any]], elapsed: float
    ) -> dict[str, Any]:
        args = self.args
        bound = 2 * args.lease
        resumes = [g.resumed_s for g in self.interruptions if g.resumed_s is not None]
        never = [g.job_id for g in self.interruptions if g.resumed_s is None]
        slow = [g for g in self.interruptions if (g.resumed_s or 0) > bound + BOUND_SLACK_S]
        duplicates = sum(c["duplicates"] for c in chats)
        # Those of chats whose job was killed while it sent: the upload had reached the Bot
        # API, which acted on it after the worker died, before the ledger could record it.
        upload_duplicates = sum(c["duplicates"] for c in chats if "upload" in c["interrupted_in"])
        lost = sum(c["lost"] for c in chats)
        unexpected = sum(c["unexpected"] for c in chats)
        bad_ratings = [c["job_id"] for c in chats if c["ratings"] != 1]
        not_done = [c["job_id"] for c in chats if not c["done"]]
        interrupted_ids = {g.job_id for g in self.interruptions}
        resumed_not_shown = [
            c["job_id"] for c in chats if c["job_id"] in interrupted_ids and not c["resumed_shown"]
        ]
        problems = list(self.problems)
        if duplicates:
            problems.append(f"{duplicates} track(s) delivered twice")
        if lost:
            problems.append(f"{lost} track(s) never delivered")
        if unexpected:
            problems.append(f"{unexpected} track(s) not of the chat's pick")
        if bad_ratings:
            problems.append(f"not one rating message: {', '.join(bad_ratings)}")
        if not_done:
            problems.append(f"final status not Done: {', '.join(not_done)}")
        if never:
            problems.append(f"never resumed: {', '.join(never)}")
        for gap in slow:
            problems.append(
                f"{gap.job_id} resumed in {gap.resumed_s:.2f} s > 2 × lease + {BOUND_SLACK_S:g} s"
            )
        for worker_exit in exits:
            problems.append(
                f"worker {worker_exit['worker']} exited with {worker_exit['exit_code']} unkilled"
            )
        phases = Counter(kill.phase for kill in self.kills)
        return {
            "setup": {
                "jobs": args.jobs,
                "lease_s": args.lease,
                "workers": args.workers,
                "max_jobs": args.max_jobs,
                "song_s": args.seconds,
                "upload_latency_s": args.latency,
                "seed": args.seed,
                "window": args.window,
            },
            # Per pick: the seconds after a job's claim its kill point falls within.
            "windows_s": {
                "+".join(pick): round(seconds, 2) for pick, seconds in self.windows.items()
            },
            "seconds": round(elapsed, 1),
            "kills": len(self.kills),
            "kill_phases": dict(sorted(phases.items())),
            "interrupted": len(self.interruptions),
            "jobs_interrupted": len(interrupted_ids),
            "resume_s": {
                "p50": None if not resumes else round(statistics.median(resumes), 3),
                "p95": None if not resumes else round(percentile(resumes, 0.95) or 0, 3),
                "max": None if not resumes else round(max(resumes), 3),
                "bound": bound,
            },
            "jobs_complete": sum(1 for job in self.jobs if job.complete),
            "tracks_expected": sum(c["expected"] for c in chats if not c["calibration"]),
            "tracks_delivered": sum(c["delivered"] for c in chats if not c["calibration"]),
            "duplicates": duplicates,
            "duplicates_killed_mid_upload": upload_duplicates,
            "lost": lost,
            "ratings_not_one": len(bad_ratings),
            "status_not_done": len(not_done),
            "resumed_not_shown": resumed_not_shown,
            "unexpected_exits": exits,
            "kill_log": [asdict(kill) for kill in self.kills],
            "resumes": [asdict(gap) for gap in self.interruptions],
            "chats": chats,
            "problems": problems,
            "ok": not problems,
        }


def print_report(report: dict[str, Any]) -> None:
    setup = report["setup"]
    resume = report["resume_s"]

    def seconds(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    print(
        f"{setup['jobs']} jobs, {setup['workers']} workers × {setup['max_jobs']} jobs, "
        f"lease {setup['lease_s']:g} s, songs of {setup['song_s']:g} s, upload latency "
        f"{setup['upload_latency_s']:g} s, seed {setup['seed']}, {report['seconds']:.0f} s "
        f"in all; kill windows (s after the claim): "
        + ", ".join(f"{pick} {s:.1f}" for pick, s in report["windows_s"].items())
    )
    print()
    phases = ", ".join(f"{name} {n}" for name, n in report["kill_phases"].items()) or "-"
    rows = [
        ("kills (phase of the job)", f"{report['kills']} ({phases})"),
        (
            "interruptions (jobs interrupted)",
            f"{report['interrupted']} ({report['jobs_interrupted']} of {setup['jobs']})",
        ),
        ("kill → resume p50", f"{seconds(resume['p50'])} s"),
        ("kill → resume max", f"{seconds(resume['max'])} s"),
        ("bound (2 × lease)", f"{resume['bound']:g} s"),
        ("jobs complete", f"{report['jobs_complete']} / {setup['jobs']}"),
        (
            "tracks delivered / expected",
            f"{report['tracks_delivered']} / {report['tracks_expected']}",
        ),
        (
            "tracks delivered twice",
            f"{report['duplicates']} ({report['duplicates_killed_mid_upload']} in chats whose "
            "job was killed mid-upload)",
        ),
        ("tracks lost", str(report["lost"])),
        ("chats without exactly 1 rating", str(report["ratings_not_one"])),
        ("final status not Done", str(report["status_not_done"])),
    ]
    print("| figure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    print()
    print("| kill | job | worker | at (s after claim) | phase | interrupted | resumed in (s) |")
    print("|---|---|---|---|---|---|---|")
    resumes: dict[int, list[str]] = {}
    for gap in report["resumes"]:
        resumes.setdefault(gap["kill"], []).append(seconds(gap["resumed_s"]))
    for kill in report["kill_log"]:
        print(
            f"| {kill['index']} | {kill['job_id']} | {kill['worker']} | {kill['at_s']:.2f} | "
            f"{kill['phase']} | {len(kill['interrupted'])} | "
            f"{', '.join(resumes.get(kill['index'], []))} |"
        )
    for problem in report["problems"]:
        print(f"PROBLEM: {problem}")
    print(json.dumps({"ok": report["ok"]}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20, help="jobs, one per user and chat")
    parser.add_argument("--lease", type=float, default=3.0, help="DEMIX_JOB_LEASE_S, seconds")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (at least 2)")
    parser.add_argument("--max-jobs", type=int, default=1, help="DEMIX_WORKER_MAX_JOBS")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each song")
    parser.add_argument(
        "--latency", type=float, default=0.5, help="seconds per sendMediaGroup and sendAudio"
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds the kill points and songs")
    parser.add_argument(
        "--window",
        type=float,
        default=None,
        help="kill points fall in this many seconds after a job's claim "
        "(default: the life of one job served alone first)",
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="for all jobs, seconds")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work in this folder and keep it (worker logs)"
    )
    args = parser.parse_args(argv)
    if args.workers < 2:
        parser.error("--workers: at least 2 (a job resumes on a survivor)")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        report = asyncio.run(Bench(args, args.keep.resolve()).run())
    else:
        with tempfile.TemporaryDirectory(prefix="demix-faults-") as tmp:
            report = asyncio.run(Bench(args, Path(tmp)).run())
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
