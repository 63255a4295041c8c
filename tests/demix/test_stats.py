"""`demix stats [--json]` reads the bot's SQLite file, as an operator runs it from the shell."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from storage import Database, NewRequest
from tests.support.processes import child_env, run_demix


async def fill(path: Path) -> None:
    async with await Database.open(path) as db:
        for user_id in (1, 2):
            request = await db.add_request(
                NewRequest(
                    chat_id=user_id, user_id=user_id, message_id=1, file_id="F",
                    kind="audio", song_name="Song",
                )
            )  # fmt: skip
            await db.add_job(
                job_id=f"sep:{request.id}:vocals", request_id=request.id, chat_id=user_id,
                user_id=user_id, stems=["vocals"], status_message_id=2,
            )  # fmt: skip
        await db.mark_done(
            "sep:1:vocals", tracks=["vocals", "no_vocals"], audio_seconds=180.0, timings={},
            started_at=100.0, finished_at=130.0,
        )  # fmt: skip
        await db.set_vote(1, 1, "up")
        await db.set_vote(1, 1, "down")
        await db.set_vote(2, 2, "up")


def demix(*args: str, db_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_demix(*args, env=child_env(DEMIX_DB_PATH=db_path), cwd=cwd)


async def test_stats_json_has_the_designed_keys(tmp_path: Path) -> None:
    db_path = tmp_path / "demix.sqlite3"
    await fill(db_path)
    result = demix("stats", "--json", db_path=db_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["requests"] == 2
    assert figures["jobs"] == {"queued": 1, "running": 0, "done": 1, "failed": 0}
    assert figures["feedback"]["up"] == 1 and figures["feedback"]["down"] == 1
    assert figures["audio_seconds"] == 180.0
    assert figures["mean_run_s"] == 30.0


async def test_stats_text(tmp_path: Path) -> None:
    db_path = tmp_path / "demix.sqlite3"
    await fill(db_path)
    result = demix("stats", db_path=db_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Requests: 2 from 2 users" in result.stdout
    assert "done 1" in result.stdout and "👍 1, 👎 1" in result.stdout


def test_stats_without_a_database_says_so_and_creates_nothing(tmp_path: Path) -> None:
    db_path = tmp_path / "missing" / "demix.sqlite3"
    result = demix("stats", "--json", db_path=db_path, cwd=tmp_path)
    assert result.returncode == 1
    assert "no database" in result.stderr
    assert not db_path.parent.exists()
