"""The SQLite repository on a real file: migrations, requests, selections, jobs, feedback."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from storage import (
    MIGRATIONS,
    SCHEMA_VERSION,
    Database,
    JobRecord,
    NewRequest,
    SchemaTooNewError,
    UserSettings,
    VariantCounts,
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


async def add_job(
    db: Database, job_id: str, request_id: int, *, user_id: int = 7, **fields: object
) -> JobRecord:
    """Record a job of ``request_id`` (stems: vocals, unless given)."""
    values: dict[str, object] = {"stems": ["vocals"], "status_message_id": 1, **fields}
    return await db.add_job(
        job_id=job_id,
        request_id=request_id,
        chat_id=70,
        user_id=user_id,
        **values,
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
        raw.execute(
            "INSERT INTO jobs (job_id, request_id, chat_id, user_id, stems, status, queued_at)"
            " VALUES ('sep:1:vocals', 1, 1, 2, 'vocals', 'done', 0)"
        )
    async with await Database.open(path) as database:
        assert await database.schema_version() == SCHEMA_VERSION
        request = await database.get_request(1)
        assert request is not None and request.song_name == "Old song"
        await database.add_comment("sep:1:vocals", 2, "too quiet")
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
    await add_job(db, "j", request.id)
    assert await db.set_vote("j", 7, "up") is None
    assert await db.set_vote("j", 7, "down") == "up"
    assert await db.get_vote("j", 7) == "down"
    await db.set_vote("j", 8, "up")
    stats = await db.stats()
    assert (stats.votes_up, stats.votes_down) == (1, 1)


async def test_a_re_pick_of_the_same_song_is_rated_on_its_own(db: Database) -> None:
    request = await db.add_request(new_request())
    await add_job(db, "sep:1:vocals", request.id)
    await add_job(db, "sep:1:drums", request.id, stems=["drums"])
    await db.set_vote("sep:1:vocals", 7, "up")
    assert await db.get_vote("sep:1:drums", 7) is None
    assert await db.set_vote("sep:1:drums", 7, "down") is None
    assert await db.set_vote("sep:1:drums", 7, "down") == "down"
    assert (await db.get_vote("sep:1:vocals", 7), await db.get_vote("sep:1:drums", 7)) == (
        "up",
        "down",
    )
    stats = await db.stats()
    assert (stats.votes_up, stats.votes_down) == (1, 1), "voting again adds no vote"
    with pytest.raises(LookupError):
        await db.set_vote("sep:1:bass", 7, "up")


async def test_feedback_prompt_and_comment(db: Database) -> None:
    request = await db.add_request(new_request())
    await add_job(db, "sep:1:vocals", request.id)
    await add_job(db, "sep:1:bass", request.id, stems=["bass"])
    await db.add_feedback_prompt(chat_id=70, message_id=12, job_id="sep:1:bass", user_id=7)
    assert await db.feedback_prompt(70, 12) == ("sep:1:bass", 7)
    assert await db.feedback_prompt(70, 13) is None
    await db.add_comment("sep:1:bass", 7, "vocals bleed into drums")
    assert await db.comments(request.id) == ["vocals bleed into drums"]
    assert await db.job_comments("sep:1:bass") == ["vocals bleed into drums"]
    assert await db.job_comments("sep:1:vocals") == []


async def test_the_latest_job_of_a_request_is_a_done_one_first(db: Database) -> None:
    request = await db.add_request(new_request())
    assert await db.latest_job(request.id) is None
    await add_job(db, "older", request.id)
    await db.mark_done(
        "older", tracks=[], audio_seconds=1.0, timings={}, started_at=None, finished_at=None
    )
    await add_job(db, "newer", request.id)
    latest = await db.latest_job(request.id)
    assert latest is not None and latest.job_id == "older", "done beats newer but running"
    await db.mark_done(
        "newer", tracks=[], audio_seconds=1.0, timings={}, started_at=None, finished_at=None
    )
    latest = await db.latest_job(request.id)
    assert latest is not None and latest.job_id == "newer"


async def test_active_jobs_are_a_users_queued_and_running_ones(db: Database) -> None:
    request = await db.add_request(new_request())
    await add_job(db, "a", request.id)
    await add_job(db, "b", request.id)
    await add_job(db, "c", request.id)
    await add_job(db, "other user's", request.id, user_id=8)
    await db.mark_running("b")
    await db.mark_failed("c", "bad input")
    assert [job.job_id for job in await db.active_jobs(7)] == ["a", "b"]
    assert await db.active_job_count(7) == 2


def old_database(path: Path) -> None:
    """A database at schema version 4 (votes per request) with votes, 👎 questions and
    comments, written by the migrations as they shipped."""
    with sqlite3.connect(path) as raw:
        raw.executescript("\n".join(MIGRATIONS[:4]) + "\nPRAGMA user_version = 4;")
        for request_id in (1, 2, 3, 4):
            raw.execute(
                "INSERT INTO requests (id, chat_id, user_id, message_id, file_id, kind,"
                " song_name, created_at) VALUES (?, 70, 7, 1, 'F', 'audio', 'Song', 0)",
                (request_id,),
            )
        jobs = [
            # Request 1: two picks delivered, then a third that failed: votes go to the
            # later delivered one.
            ("sep:1:vocals", 1, "done", 10.0),
            ("sep:1:drums", 1, "done", 20.0),
            ("sep:1:bass", 1, "failed", 30.0),
            # Request 2: one pick in FLAC, delivered.
            ("sep:2:piano:flac", 2, "done", 40.0),
            # Request 3: nothing delivered: the latest job all the same.
            ("sep:3:guitar", 3, "failed", 50.0),
            ("sep:3:other", 3, "queued", 60.0),
            # Request 4: no job at all.
        ]
        raw.executemany(
            "INSERT INTO jobs (job_id, request_id, chat_id, user_id, stems, status, queued_at)"
            " VALUES (?, ?, 70, 7, 'x', ?, ?)",
            jobs,
        )
        raw.executemany(
            "INSERT INTO feedback (request_id, user_id, vote, created_at, updated_at)"
            " VALUES (?, ?, ?, 1, 2)",
            [(1, 7, "down"), (1, 8, "up"), (2, 7, "up"), (3, 7, "down"), (4, 7, "up")],
        )
        raw.execute(
            "INSERT INTO feedback_prompts (chat_id, message_id, request_id, user_id, created_at)"
            " VALUES (70, 100, 1, 7, 0)"
        )
        raw.execute(
            "INSERT INTO feedback_comments (request_id, user_id, text, created_at)"
            " VALUES (1, 7, 'drums are muddy', 0)"
        )


async def test_old_votes_are_kept_and_move_to_their_requests_latest_job(tmp_path: Path) -> None:
    path = tmp_path / "demix.sqlite3"
    old_database(path)
    async with await Database.open(path) as database:
        assert await database.schema_version() == SCHEMA_VERSION
        assert await database.get_vote("sep:1:drums", 7) == "down"
        assert await database.get_vote("sep:1:drums", 8) == "up"
        assert await database.get_vote("sep:1:vocals", 7) is None
        assert await database.get_vote("sep:1:bass", 7) is None
        assert await database.get_vote("sep:2:piano:flac", 7) == "up"
        assert await database.get_vote("sep:3:other", 7) == "down"
        stats = await database.stats()
        # Every vote kept but request 4's, which no job could have had a button for.
        assert (stats.votes_up, stats.votes_down) == (2, 2)
        # The 👎 question and its comment follow the vote.
        assert await database.feedback_prompt(70, 100) == ("sep:1:drums", 7)
        assert await database.job_comments("sep:1:drums") == ["drums are muddy"]
        assert await database.comments(1) == ["drums are muddy"]
        # Voting again on a migrated vote changes it; it adds none.
        assert await database.set_vote("sep:1:drums", 7, "up") == "down"
        stats = await database.stats()
        assert (stats.votes_up, stats.votes_down) == (3, 1)
        # A re-pick of request 1 is rated on its own.
        assert await database.set_vote("sep:1:vocals", 7, "down") is None
        assert await database.get_vote("sep:1:drums", 7) == "up"
        # Jobs from before experiments ran in none.
        job = await database.get_job("sep:1:drums")
        assert job is not None and (job.experiment, job.variant) == (None, None)
    with sqlite3.connect(path) as raw:
        keys = [row[1] for row in raw.execute("PRAGMA table_info(feedback)") if row[5]]
        assert keys == ["job_id", "user_id"]


async def test_jobs_record_their_experiment_and_variant(db: Database) -> None:
    request = await db.add_request(new_request())
    plain = await add_job(db, "plain", request.id)
    assert (plain.experiment, plain.variant) == (None, None)
    assigned = await add_job(db, "ab", request.id, experiment="e1", variant="blend")
    assert (assigned.experiment, assigned.variant) == ("e1", "blend")
    stored = await db.get_job("ab")
    assert stored is not None and (stored.experiment, stored.variant) == ("e1", "blend")


async def test_variant_tallies_count_jobs_votes_and_standing_down_comments(
    db: Database,
) -> None:
    assert await db.latest_experiment() is None
    assert await db.variant_tallies("e1") == []
    request = await db.add_request(new_request())
    jobs = {
        "r1": ("e1", "route"),
        "r2": ("e1", "route"),
        "r3": ("e1", "route"),
        "b1": ("e1", "blend"),
        "b2": ("e1", "blend"),
        "old": ("e0", "route"),
        "none": (None, None),
    }
    for job_id, (experiment, variant) in jobs.items():
        await add_job(db, job_id, request.id, experiment=experiment, variant=variant)
    await db.set_vote("r1", 7, "up")
    await db.set_vote("r2", 7, "down")
    await db.add_comment("r2", 7, "vocals bleed")
    await db.set_vote("b1", 7, "down")
    await db.add_comment("b1", 7, "changed my mind")
    await db.set_vote("b1", 7, "up")  # the 👎 and its comment no longer stand
    await db.set_vote("b2", 7, "down")
    await db.add_comment("b2", 7, "metallic drums")
    await db.set_vote("old", 7, "down")
    await db.set_vote("none", 7, "down")

    assert await db.variant_tallies("e1") == [
        VariantCounts("blend", jobs=2, up=1, down=1, down_comments=("metallic drums",)),
        VariantCounts("route", jobs=3, up=1, down=1, down_comments=("vocals bleed",)),
    ]
    assert await db.variant_tallies("e0") == [VariantCounts("route", 1, 0, 1)]
    assert await db.latest_experiment() == "e0", "the latest queued job's"
    await add_job(db, "r1", request.id, experiment="e1", variant="route")  # queued again
    assert await db.latest_experiment() == "e1"


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
    await db.set_vote("a", 1, "up")
    await db.add_comment("a", 1, "great")

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


async def test_a_mix_record_is_stored_once_and_read_back(db: Database) -> None:
    assert await db.get_mix("M" * 22) is None
    await db.add_mix(
        "M" * 22, job_id="sep:1:vocals", user_id=7, chat_id=7, record='{"a": 1}', created_at=1.0
    )
    # A second store of the same mix (the watcher seeing the job again) keeps the first.
    await db.add_mix(
        "M" * 22, job_id="sep:1:vocals", user_id=7, chat_id=7, record='{"a": 2}', created_at=2.0
    )
    assert await db.get_mix("M" * 22) == '{"a": 1}'
    assert await db.get_mix("N" * 22) is None
