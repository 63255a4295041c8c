"""The bot's SQLite repository: one aiosqlite connection per process, WAL, migrations."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import aiosqlite

from storage.migrations import MIGRATIONS

logger = logging.getLogger(__name__)

JobStatus = Literal["queued", "running", "done", "failed"]
JOB_STATUSES: tuple[JobStatus, ...] = ("queued", "running", "done", "failed")
ACTIVE_STATUSES: tuple[JobStatus, ...] = ("queued", "running")
Vote = Literal["up", "down"]


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer version of this program."""


@dataclass(frozen=True)
class NewRequest:
    """A song someone sent, before it has an id."""

    chat_id: int
    user_id: int
    message_id: int
    file_id: str
    kind: str
    song_name: str
    file_unique_id: str | None = None
    file_size: int | None = None
    mime_type: str | None = None
    artist: str | None = None
    duration_s: float | None = None


@dataclass(frozen=True)
class Request:
    """A stored request: a song and where its picker lives."""

    id: int
    chat_id: int
    user_id: int
    message_id: int
    picker_message_id: int | None
    file_id: str
    file_unique_id: str | None
    file_size: int | None
    mime_type: str | None
    kind: str
    song_name: str
    artist: str | None
    duration_s: float | None
    created_at: float


@dataclass(frozen=True)
class JobRecord:
    """One separation job as the bot knows it."""

    job_id: str
    request_id: int
    chat_id: int
    user_id: int
    stems: tuple[str, ...]
    status: JobStatus
    status_message_id: int | None
    queue_position: int | None
    queued_at: float
    started_at: float | None = None
    finished_at: float | None = None
    tracks: tuple[str, ...] = ()
    error: str | None = None
    audio_seconds: float | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    output_format: str = "mp3"
    language: str = "en"
    # The A/B experiment and its variant the job separated with; None: no experiment ran.
    experiment: str | None = None
    variant: str | None = None


@dataclass(frozen=True)
class VariantCounts:
    """One variant of an experiment as stored: its jobs, the votes on them, and what users
    wrote after a 👎 on them (comments whose writer's vote is still 👎)."""

    variant: str
    jobs: int
    up: int
    down: int
    down_comments: tuple[str, ...] = ()


@dataclass(frozen=True)
class UserSettings:
    """What a user chose in /settings; a user who never chose has the defaults
    (``language`` ``None``: follow their Telegram language)."""

    user_id: int
    output_format: str = "mp3"
    language: str | None = None


@dataclass(frozen=True)
class Stats:
    """Usage and feedback figures."""

    requests: int
    users: int
    jobs: dict[str, int]
    votes_up: int
    votes_down: int
    comments: int
    audio_seconds: float
    mean_wait_s: float | None
    mean_run_s: float | None
    stems: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "users": self.users,
            "jobs": dict(self.jobs),
            "feedback": {"up": self.votes_up, "down": self.votes_down, "comments": self.comments},
            "audio_seconds": self.audio_seconds,
            "mean_wait_s": self.mean_wait_s,
            "mean_run_s": self.mean_run_s,
            "stems": dict(self.stems),
        }


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(part for part in (text or "").split(",") if part)


class Database:
    """Requests, selections, jobs and feedback. Open with :meth:`open`, close with :meth:`close`."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Open (creating if needed) and migrate the database at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path)
        connection.row_factory = aiosqlite.Row
        try:
            # WAL lets `demix stats` read while the bot writes.
            await connection.execute("PRAGMA journal_mode=WAL")
            await connection.execute("PRAGMA foreign_keys=ON")
            await connection.execute("PRAGMA busy_timeout=5000")
            database = cls(connection, path)
            await database._migrate()
        except BaseException:
            await connection.close()
            raise
        return database

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def _migrate(self, migrations: Sequence[str] = MIGRATIONS) -> None:
        version = await self.schema_version()
        if version > len(migrations):
            raise SchemaTooNewError(
                f"{self.path} has schema version {version}; this program knows {len(migrations)}"
            )
        for number, script in enumerate(migrations[version:], start=version + 1):
            # executescript commits first, so each migration and its version bump are one
            # explicit transaction: a crash leaves the schema at the previous version.
            await self._db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )
            logger.info("database migrated", extra={"schema_version": number})

    # Requests and selections

    async def add_request(self, new: NewRequest) -> Request:
        fields = dataclasses.asdict(new)
        cursor = await self._db.execute(
            f"INSERT INTO requests ({', '.join(fields)}, created_at)"
            f" VALUES ({', '.join(':' + name for name in fields)}, :created_at)",
            {**fields, "created_at": time.time()},
        )
        await self._db.commit()
        request_id = cursor.lastrowid
        assert request_id is not None
        request = await self.get_request(request_id)
        assert request is not None
        return request

    async def get_request(self, request_id: int) -> Request | None:
        async with self._db.execute("SELECT * FROM requests WHERE id = ?", (request_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return Request(**dict(row))

    async def set_picker_message(self, request_id: int, message_id: int) -> None:
        await self._db.execute(
            "UPDATE requests SET picker_message_id = ? WHERE id = ?", (message_id, request_id)
        )
        await self._db.commit()

    async def selection(self, request_id: int) -> frozenset[str]:
        async with self._db.execute(
            "SELECT source FROM selections WHERE request_id = ?", (request_id,)
        ) as cursor:
            return frozenset(row[0] for row in await cursor.fetchall())

    async def toggle_source(self, request_id: int, source: str) -> frozenset[str]:
        """Flip one source in the request's selection; returns the new selection."""
        cursor = await self._db.execute(
            "DELETE FROM selections WHERE request_id = ? AND source = ?", (request_id, source)
        )
        if cursor.rowcount == 0:
            await self._db.execute(
                "INSERT INTO selections (request_id, source) VALUES (?, ?)", (request_id, source)
            )
        await self._db.commit()
        return await self.selection(request_id)

    async def set_selection(self, request_id: int, sources: Iterable[str]) -> frozenset[str]:
        await self._db.execute("DELETE FROM selections WHERE request_id = ?", (request_id,))
        await self._db.executemany(
            "INSERT INTO selections (request_id, source) VALUES (?, ?)",
            [(request_id, source) for source in sorted(set(sources))],
        )
        await self._db.commit()
        return await self.selection(request_id)

    # Jobs

    async def add_job(
        self,
        *,
        job_id: str,
        request_id: int,
        chat_id: int,
        user_id: int,
        stems: Iterable[str],
        status_message_id: int | None,
        queue_position: int | None = None,
        output_format: str = "mp3",
        language: str = "en",
        experiment: str | None = None,
        variant: str | None = None,
    ) -> JobRecord:
        """Record a job just enqueued; a job id seen before (re-run of a failed one) restarts.

        ``experiment`` and ``variant``: the A/B experiment's variant the job separates
        with (both None when no experiment runs).
        """
        await self._db.execute(
            "INSERT INTO jobs (job_id, request_id, chat_id, user_id, stems, status,"
            " status_message_id, queue_position, queued_at, output_format, language,"
            " experiment, variant)"
            " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (job_id) DO UPDATE SET status = 'queued',"
            " status_message_id = excluded.status_message_id,"
            " queue_position = excluded.queue_position, queued_at = excluded.queued_at,"
            " language = excluded.language,"
            " experiment = excluded.experiment, variant = excluded.variant,"
            " started_at = NULL, finished_at = NULL, tracks = NULL, error = NULL,"
            " audio_seconds = NULL, timings = NULL",
            (
                job_id,
                request_id,
                chat_id,
                user_id,
                ",".join(stems),
                status_message_id,
                queue_position,
                time.time(),
                output_format,
                language,
                experiment,
                variant,
            ),
        )
        await self._db.commit()
        job = await self.get_job(job_id)
        assert job is not None
        return job

    @staticmethod
    def _job(row: aiosqlite.Row) -> JobRecord:
        return JobRecord(
            **{
                **dict(row),
                "stems": _split(row["stems"]),
                "tracks": _split(row["tracks"]),
                "timings": json.loads(row["timings"]) if row["timings"] else {},
            }
        )

    async def get_job(self, job_id: str) -> JobRecord | None:
        async with self._db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        return None if row is None else self._job(row)

    async def jobs_for_request(self, request_id: int) -> list[JobRecord]:
        async with self._db.execute(
            "SELECT * FROM jobs WHERE request_id = ? ORDER BY queued_at", (request_id,)
        ) as cursor:
            return [self._job(row) for row in await cursor.fetchall()]

    async def latest_job(self, request_id: int) -> JobRecord | None:
        """The request's latest job, a done one first: what a rating button from before
        ratings were per job rates."""
        async with self._db.execute(
            "SELECT * FROM jobs WHERE request_id = ?"
            " ORDER BY status = 'done' DESC, queued_at DESC, rowid DESC LIMIT 1",
            (request_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else self._job(row)

    async def jobs_in_flight(self) -> list[JobRecord]:
        """Jobs queued or running, oldest first: what the watcher follows (also after a restart)."""
        async with self._db.execute(
            "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY queued_at"
        ) as cursor:
            return [self._job(row) for row in await cursor.fetchall()]

    async def active_job_count(self, user_id: int) -> int:
        async with self._db.execute(
            "SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')",
            (user_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def active_jobs(self, user_id: int) -> list[JobRecord]:
        """``user_id``'s jobs recorded as queued or running, oldest first."""
        async with self._db.execute(
            "SELECT * FROM jobs WHERE user_id = ? AND status IN ('queued', 'running')"
            " ORDER BY queued_at",
            (user_id,),
        ) as cursor:
            return [self._job(row) for row in await cursor.fetchall()]

    async def set_queue_position(self, job_id: str, position: int | None) -> None:
        await self._db.execute(
            "UPDATE jobs SET queue_position = ? WHERE job_id = ?", (position, job_id)
        )
        await self._db.commit()

    async def mark_running(self, job_id: str, started_at: float | None = None) -> None:
        await self._db.execute(
            "UPDATE jobs SET status = 'running', queue_position = NULL,"
            " started_at = COALESCE(started_at, ?) WHERE job_id = ? AND status = 'queued'",
            (started_at if started_at is not None else time.time(), job_id),
        )
        await self._db.commit()

    async def mark_done(
        self,
        job_id: str,
        *,
        tracks: Sequence[str],
        audio_seconds: float | None,
        timings: Mapping[str, float],
        started_at: float | None,
        finished_at: float | None,
    ) -> None:
        await self._db.execute(
            "UPDATE jobs SET status = 'done', queue_position = NULL, tracks = ?,"
            " audio_seconds = ?, timings = ?, started_at = COALESCE(?, started_at),"
            " finished_at = ?, error = NULL WHERE job_id = ?",
            (
                ",".join(tracks),
                audio_seconds,
                json.dumps(dict(timings)),
                started_at,
                finished_at if finished_at is not None else time.time(),
                job_id,
            ),
        )
        await self._db.commit()

    async def mark_failed(
        self,
        job_id: str,
        error: str,
        *,
        started_at: float | None = None,
        finished_at: float | None = None,
    ) -> None:
        await self._db.execute(
            "UPDATE jobs SET status = 'failed', queue_position = NULL, error = ?,"
            " started_at = COALESCE(?, started_at), finished_at = ? WHERE job_id = ?",
            (
                error,
                started_at,
                finished_at if finished_at is not None else time.time(),
                job_id,
            ),
        )
        await self._db.commit()

    # The mixer's records (common/mixes.py): stored as the worker wrote them

    async def add_mix(
        self,
        mix_id: str,
        *,
        job_id: str,
        user_id: int,
        chat_id: int,
        record: str,
        created_at: float,
    ) -> None:
        """Store one mix record (JSON); a record already stored under ``mix_id`` is kept."""
        await self._db.execute(
            "INSERT OR IGNORE INTO mixes (mix_id, job_id, user_id, chat_id, record, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (mix_id, job_id, user_id, chat_id, record, created_at),
        )
        await self._db.commit()

    async def get_mix(self, mix_id: str) -> str | None:
        """The JSON record of ``mix_id``, or None."""
        return await self._scalar_with("SELECT record FROM mixes WHERE mix_id = ?", (mix_id,))

    async def _scalar_with(self, sql: str, params: tuple[Any, ...]) -> Any:
        async with self._db.execute(sql, params) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    # User settings

    async def user_settings(self, user_id: int) -> UserSettings:
        """``user_id``'s settings; the defaults when they never changed one."""
        async with self._db.execute(
            "SELECT output_format, language FROM user_settings WHERE user_id = ?", (user_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return UserSettings(user_id) if row is None else UserSettings(user_id, row[0], row[1])

    async def set_output_format(self, user_id: int, output_format: str) -> UserSettings:
        """Store the format ``user_id``'s later separations come in; returns the settings."""
        await self._db.execute(
            "INSERT INTO user_settings (user_id, output_format, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET output_format = excluded.output_format,"
            " updated_at = excluded.updated_at",
            (user_id, output_format, time.time()),
        )
        await self._db.commit()
        return await self.user_settings(user_id)

    async def set_language(self, user_id: int, language: str | None) -> UserSettings:
        """Store the language ``user_id`` is spoken to in (``None``: follow Telegram's)."""
        await self._db.execute(
            "INSERT INTO user_settings (user_id, language, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO UPDATE SET language = excluded.language,"
            " updated_at = excluded.updated_at",
            (user_id, language, time.time()),
        )
        await self._db.commit()
        return await self.user_settings(user_id)

    # Feedback: one vote per job (a delivered set of tracks) and user

    async def set_vote(self, job_id: str, user_id: int, vote: Vote) -> Vote | None:
        """Store a vote on ``job_id``, replacing this user's earlier one; returns the earlier
        vote.

        Raises:
            LookupError: no job has that id.
        """
        previous = await self.get_vote(job_id, user_id)
        now = time.time()
        # A SELECT with a WHERE clause, so SQLite reads ON CONFLICT as the upsert's.
        cursor = await self._db.execute(
            "INSERT INTO feedback (job_id, request_id, user_id, vote, created_at, updated_at)"
            " SELECT job_id, request_id, ?, ?, ?, ? FROM jobs WHERE job_id = ?"
            " ON CONFLICT (job_id, user_id)"
            " DO UPDATE SET vote = excluded.vote, updated_at = excluded.updated_at",
            (user_id, vote, now, now, job_id),
        )
        await self._db.commit()
        if cursor.rowcount == 0:
            raise LookupError(f"no job {job_id!r} to vote on")
        return previous

    async def get_vote(self, job_id: str, user_id: int) -> Vote | None:
        async with self._db.execute(
            "SELECT vote FROM feedback WHERE job_id = ? AND user_id = ?", (job_id, user_id)
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def add_feedback_prompt(
        self, *, chat_id: int, message_id: int, job_id: str, user_id: int
    ) -> None:
        """Remember the 👎 follow-up question ``message_id`` asked about ``job_id``."""
        await self._db.execute(
            "INSERT OR REPLACE INTO feedback_prompts"
            " (chat_id, message_id, request_id, job_id, user_id, created_at)"
            " SELECT ?, ?, request_id, job_id, ?, ? FROM jobs WHERE job_id = ?",
            (chat_id, message_id, user_id, time.time(), job_id),
        )
        await self._db.commit()

    async def feedback_prompt(self, chat_id: int, message_id: int) -> tuple[str, int] | None:
        """``(job_id, user_id)`` of the 👎 follow-up question with this message id."""
        async with self._db.execute(
            "SELECT job_id, user_id FROM feedback_prompts"
            " WHERE chat_id = ? AND message_id = ? AND job_id IS NOT NULL",
            (chat_id, message_id),
        ) as cursor:
            row = await cursor.fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    async def add_comment(self, job_id: str, user_id: int, text: str) -> None:
        """Store what ``user_id`` wrote about ``job_id``'s tracks (nothing for an unknown job)."""
        await self._db.execute(
            "INSERT INTO feedback_comments (request_id, job_id, user_id, text, created_at)"
            " SELECT request_id, job_id, ?, ?, ? FROM jobs WHERE job_id = ?",
            (user_id, text, time.time(), job_id),
        )
        await self._db.commit()

    async def comments(self, request_id: int) -> list[str]:
        """What was written about the request's tracks, all its jobs, oldest first."""
        async with self._db.execute(
            "SELECT text FROM feedback_comments WHERE request_id = ? ORDER BY id", (request_id,)
        ) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    async def job_comments(self, job_id: str) -> list[str]:
        """What was written about one job's tracks, oldest first."""
        async with self._db.execute(
            "SELECT text FROM feedback_comments WHERE job_id = ? ORDER BY id", (job_id,)
        ) as cursor:
            return [row[0] for row in await cursor.fetchall()]

    # Experiments

    async def latest_experiment(self) -> str | None:
        """The experiment of the most recently queued job that ran in one, or None."""
        return await self._scalar(
            "SELECT experiment FROM jobs WHERE experiment IS NOT NULL"
            " ORDER BY queued_at DESC, rowid DESC LIMIT 1"
        )

    async def variant_tallies(self, experiment: str) -> list[VariantCounts]:
        """Per variant of ``experiment`` that has jobs (by name): its jobs, the 👍 and 👎 on
        them, and the comments written after a 👎 that still stands."""
        jobs: dict[str, int] = {}
        async with self._db.execute(
            "SELECT variant, COUNT(*) FROM jobs WHERE experiment = ? AND variant IS NOT NULL"
            " GROUP BY variant ORDER BY variant",
            (experiment,),
        ) as cursor:
            for variant, count in await cursor.fetchall():
                jobs[variant] = int(count)
        votes: dict[tuple[str, str], int] = {}
        async with self._db.execute(
            "SELECT j.variant, f.vote, COUNT(*) FROM feedback AS f"
            " JOIN jobs AS j ON j.job_id = f.job_id WHERE j.experiment = ?"
            " GROUP BY j.variant, f.vote",
            (experiment,),
        ) as cursor:
            for variant, vote, count in await cursor.fetchall():
                votes[(variant, vote)] = int(count)
        comments: dict[str, list[str]] = {}
        async with self._db.execute(
            "SELECT j.variant, c.text FROM feedback_comments AS c"
            " JOIN jobs AS j ON j.job_id = c.job_id"
            " JOIN feedback AS f ON f.job_id = c.job_id AND f.user_id = c.user_id"
            " WHERE j.experiment = ? AND f.vote = 'down' ORDER BY c.id",
            (experiment,),
        ) as cursor:
            for variant, text in await cursor.fetchall():
                comments.setdefault(variant, []).append(text)
        return [
            VariantCounts(
                variant=variant,
                jobs=count,
                up=votes.get((variant, "up"), 0),
                down=votes.get((variant, "down"), 0),
                down_comments=tuple(comments.get(variant, ())),
            )
            for variant, count in jobs.items()
        ]

    # Figures

    async def _scalar(self, sql: str) -> Any:
        async with self._db.execute(sql) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def stats(self) -> Stats:
        jobs: dict[str, int] = dict.fromkeys(JOB_STATUSES, 0)
        async with self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status") as cur:
            for status, count in await cur.fetchall():
                jobs[status] = int(count)
        votes = {"up": 0, "down": 0}
        async with self._db.execute("SELECT vote, COUNT(*) FROM feedback GROUP BY vote") as cur:
            for vote, count in await cur.fetchall():
                votes[vote] = int(count)
        stems: dict[str, int] = {}
        async with self._db.execute("SELECT stems FROM jobs") as cur:
            for (text,) in await cur.fetchall():
                for stem in _split(text):
                    stems[stem] = stems.get(stem, 0) + 1
        mean_wait = await self._scalar(
            "SELECT AVG(started_at - queued_at) FROM jobs WHERE started_at IS NOT NULL"
        )
        mean_run = await self._scalar(
            "SELECT AVG(finished_at - started_at) FROM jobs"
            " WHERE status = 'done' AND started_at IS NOT NULL"
        )
        return Stats(
            requests=int(await self._scalar("SELECT COUNT(*) FROM requests")),
            users=int(await self._scalar("SELECT COUNT(DISTINCT user_id) FROM requests")),
            jobs=jobs,
            votes_up=votes["up"],
            votes_down=votes["down"],
            comments=int(await self._scalar("SELECT COUNT(*) FROM feedback_comments")),
            audio_seconds=float(
                await self._scalar(
                    "SELECT COALESCE(SUM(audio_seconds), 0) FROM jobs WHERE status = 'done'"
                )
            ),
            mean_wait_s=None if mean_wait is None else float(mean_wait),
            mean_run_s=None if mean_run is None else float(mean_run),
            stems=dict(sorted(stems.items(), key=lambda item: (-item[1], item[0]))),
        )
