"""The SQLite repository on a real file: migrations, requests, selections, jobs, feedback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Database,
    NewRequest,
    SchemaTooNewError,
    UserSettings,
)


def new_request(user_id: int = 7, chat_id: int = 70) -> NewRequest:
    return NewRequest(
        chat_id=chat_id,
        user_id=user_id,
        message_id=1,
        file_id="FILE",
        kind="audio",
        song_name="Song",
        file_size=1234,
        mime_type="audio/mpeg",
        artist="Artist",
        duration_s=3.0,
    )


@pytest.fixture
async def db(tmp_path: Path):
    database = await Database.open(tmp_path / "sub" / "demix.sqlite3")
    try:
        yield database
    finally:
        await database.close()


async def test_fresh_database_is_migrated_to_latest_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "demix.sqlite3"
    async with await Database.open(path) as database:
        assert await database.schema_version() == len(MIGRATIONS)
    with sqlite3.connect(path) as raw:
        # Every migration ran and recorded itself in the file, not only in memory.
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master")}
    assert {"requests", "selections", "jobs", "feedback", "feedback_comments"} <= tables


async def test_old_database_is_migrated_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "demix.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.executescript(MIGRATIONS[0] + "\nPRAGMA user_version = 1;")
        raw.execute(
            "INSERT INTO requests (chat_id, user_id, message_id, file_id, kind, song_name,"
            " created_at) VALUES (1, 2, 3, 'F', 'audio', 'Old song', 0)"
        )
    async with await Database.open(path) as database:
        assert await database.schema_version() == SCHEMA_VERSION
        request = await database.get_request(1)
        assert request is not None and request.song_name == "Old song"
        await database.add_comment(1, 2, "too quiet")
        assert await database.comments(1) == ["too quiet"]


async def test_database_from_a_newer_program_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "demix.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaTooNewError):
        await Database.open(path)


async def test_requests_and_selections_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "demix.sqlite3"
    async with await Database.open(path) as database:
        request = await database.add_request(new_request())
        await database.set_picker_message(request.id, 99)
        assert await database.toggle_source(request.id, "vocals") == {"vocals"}
        assert await database.toggle_source(request.id, "drums") == {"vocals", "drums"}
        assert await database.toggle_source(request.id, "vocals") == {"drums"}
    async with await Database.open(path) as database:
        stored = await database.get_request(request.id)
        assert stored is not None
        assert stored.picker_message_id == 99
        assert (stored.song_name, stored.artist, stored.file_size) == ("Song", "Artist", 1234)
        assert await database.selection(request.id) == {"drums"}
        assert await database.set_selection(request.id, ["bass", "bass", "piano"]) == {
            "bass",
            "piano",
        }
        assert await database.get_request(request.id + 1) is None


async def test_job_lifecycle_and_active_count(db: Database) -> None:
    request = await db.add_request(new_request())
    job = await db.add_job(
        job_id="sep:1:vocals",
        request_id=request.id,
        chat_id=70,
        user_id=7,
        stems=("vocals",),
        status_message_id=5,
        queue_position=2,
    )
    assert (job.status, job.queue_position, job.stems) == ("queued", 2, ("vocals",))
    assert await db.active_job_count(7) == 1
    assert await db.active_job_count(8) == 0
    assert [j.job_id for j in await db.jobs_in_flight()] == ["sep:1:vocals"]

    await db.mark_running("sep:1:vocals", started_at=100.0)
    running = await db.get_job("sep:1:vocals")
    assert running is not None and running.status == "running" and running.started_at == 100.0

    await db.mark_done(
        "sep:1:vocals",
        tracks=("vocals", "no_vocals"),
        audio_seconds=3.0,
        timings={"separate": 1.5},
        started_at=None,
        finished_at=104.0,
    )
    done = await db.get_job("sep:1:vocals")
    assert done is not None
    assert done.status == "done"
    assert done.tracks == ("vocals", "no_vocals")
    assert done.timings == {"separate": 1.5}
    assert (done.started_at, done.finished_at) == (100.0, 104.0)
    assert await db.active_job_count(7) == 0
    assert await db.jobs_in_flight() == []


async def test_running_is_not_recorded_over_a_finished_job(db: Database) -> None:
    request = await db.add_request(new_request())
    await db.add_job(
        job_id="j", request_id=request.id, chat_id=70, user_id=7, stems=["bass"],
        status_message_id=None,
    )  # fmt: skip
    await db.mark_failed("j", "bad input")
    await db.mark_running("j")
    failed = await db.get_job("j")
    assert failed is not None and failed.status == "failed" and failed.error == "bad input"


async def test_re_enqueued_job_id_starts_over(db: Database) -> None:
    request = await db.add_request(new_request())
    for _ in range(2):
        await db.add_job(
            job_id="j", request_id=request.id, chat_id=70, user_id=7, stems=["bass"],
            status_message_id=1,
        )  # fmt: skip
        await db.mark_failed("j", "lost")
    again = await db.add_job(
        job_id="j", request_id=request.id, chat_id=70, user_id=7, stems=["bass"],
        status_message_id=2,
    )  # fmt: skip
    assert (again.status, again.error, again.status_message_id) == ("queued", None, 2)
    assert len(await db.jobs_for_request(request.id)) == 1


async def test_a_second_vote_replaces_the_first(db: Database) -> None:
    request = await db.add_request(new_request())
    assert await db.set_vote(request.id, 7, "up") is None
    assert await db.set_vote(request.id, 7, "down") == "up"
    assert await db.get_vote(request.id, 7) == "down"
    await db.set_vote(request.id, 8, "up")
    stats = await db.stats()
    assert (stats.votes_up, stats.votes_down) == (1, 1)


async def test_feedback_prompt_and_comment(db: Database) -> None:
    request = await db.add_request(new_request())
    await db.add_feedback_prompt(chat_id=70, message_id=12, request_id=request.id, user_id=7)
    assert await db.feedback_prompt(70, 12) == (request.id, 7)
    assert await db.feedback_prompt(70, 13) is None
    await db.add_comment(request.id, 7, "vocals bleed into drums")
    assert await db.comments(request.id) == ["vocals bleed into drums"]


async def test_stats_counts(db: Database) -> None:
    empty = await db.stats()
    assert empty.to_dict()["jobs"] == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    assert empty.mean_run_s is None

    first = await db.add_request(new_request(user_id=1))
    second = await db.add_request(new_request(user_id=2))
    await db.add_request(new_request(user_id=2))
    await db.add_job(
        job_id="a", request_id=first.id, chat_id=1, user_id=1, stems=["vocals"],
        status_message_id=1,
    )  # fmt: skip
    await db.mark_running("a", started_at=10.0)
    await db.mark_done(
        "a", tracks=["vocals", "no_vocals"], audio_seconds=30.0, timings={},
        started_at=10.0, finished_at=14.0,
    )  # fmt: skip
    await db.add_job(
        job_id="b", request_id=second.id, chat_id=2, user_id=2, stems=["vocals", "drums"],
        status_message_id=2,
    )  # fmt: skip
    await db.mark_failed("b", "not audio")
    await db.set_vote(first.id, 1, "up")
    await db.add_comment(first.id, 1, "great")

    figures = (await db.stats()).to_dict()
    assert figures["requests"] == 3
    assert figures["users"] == 2
    assert figures["jobs"] == {"queued": 0, "running": 0, "done": 1, "failed": 1}
    assert figures["feedback"] == {"up": 1, "down": 0, "comments": 1}
    assert figures["audio_seconds"] == 30.0
    assert figures["mean_run_s"] == pytest.approx(4.0)
    assert figures["stems"] == {"vocals": 2, "drums": 1}


async def test_user_settings_default_then_stored_per_user(tmp_path: Path) -> None:
    path = tmp_path / "demix.sqlite3"
    async with await Database.open(path) as database:
        assert (await database.user_settings(7)).output_format == "mp3"
        stored = await database.set_output_format(7, "flac")
        assert stored == UserSettings(7, "flac")
        assert (await database.user_settings(8)).output_format == "mp3", "per user"
    async with await Database.open(path) as database:
        assert (await database.user_settings(7)).output_format == "flac", "kept on disk"
        await database.set_output_format(7, "mp3")
        assert (await database.user_settings(7)).output_format == "mp3"


async def test_a_job_records_its_format_and_old_jobs_read_as_mp3(tmp_path: Path) -> None:
    path = tmp_path / "demix.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.executescript("\n".join(MIGRATIONS[:2]) + "\nPRAGMA user_version = 2;")
        raw.execute(
            "INSERT INTO requests (chat_id, user_id, message_id, file_id, kind, song_name,"
            " created_at) VALUES (1, 2, 3, 'F', 'audio', 'Old song', 0)"
        )
        raw.execute(
            "INSERT INTO jobs (job_id, request_id, chat_id, user_id, stems, status, queued_at)"
            " VALUES ('sep:1:vocals', 1, 1, 2, 'vocals', 'done', 0)"
        )
    async with await Database.open(path) as database:
        old = await database.get_job("sep:1:vocals")
        assert old is not None and old.output_format == "mp3"
        new = await database.add_job(
            job_id="sep:1:vocals:flac",
            request_id=1,
            chat_id=1,
            user_id=2,
            stems=["vocals"],
            status_message_id=9,
            output_format="flac",
        )
        assert new.output_format == "flac"
        assert [job.job_id for job in await database.jobs_for_request(1)] == [
            "sep:1:vocals",
            "sep:1:vocals:flac",
        ]
