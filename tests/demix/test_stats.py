"""`demix stats [--json]` and `demix stats --experiments [--json]` read the bot's SQLite file,
as an operator runs them from the shell."""

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
        await db.set_vote("sep:1:vocals", 1, "up")
        await db.set_vote("sep:1:vocals", 1, "down")
        await db.set_vote("sep:2:vocals", 2, "up")


def demix(*args: str, db_path: Path, cwd: Path, **env: object) -> subprocess.CompletedProcess[str]:
    return run_demix(*args, env=child_env(DEMIX_DB_PATH=db_path, **env), cwd=cwd)


EXPERIMENT = "blend-vs-route: route=50,blend=50"


async def fill_experiment(path: Path, name: str = "blend-vs-route") -> None:
    """Six jobs in the experiment: route 4 (👍 3, 👎 1), blend 2 (👎 2, one comment)."""
    async with await Database.open(path) as db:
        request = await db.add_request(
            NewRequest(chat_id=5, user_id=5, message_id=1, file_id="F", kind="audio", song_name="S")
        )
        votes = {"route": ["up", "up", "up", "down"], "blend": ["down", "down"]}
        for variant, cast in votes.items():
            for number, vote in enumerate(cast):
                job_id = f"sep:{request.id}:{variant}{number}"
                await db.add_job(
                    job_id=job_id, request_id=request.id, chat_id=5, user_id=5,
                    stems=["vocals"], status_message_id=2, experiment=name, variant=variant,
                )  # fmt: skip
                await db.set_vote(job_id, 5, vote)
        await db.add_comment(f"sep:{request.id}:blend0", 5, "the vocals sound metallic")


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


async def test_stats_json_keeps_its_keys_with_an_experiment_running(tmp_path: Path) -> None:
    db_path = tmp_path / "demix.sqlite3"
    await fill(db_path)
    await fill_experiment(db_path)
    result = demix("stats", "--json", db_path=db_path, cwd=tmp_path, DEMIX_EXPERIMENT=EXPERIMENT)
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    assert figures["requests"] == 3
    assert figures["jobs"]["queued"] == 7
    assert (figures["feedback"]["up"], figures["feedback"]["down"]) == (4, 4)
    assert "variants" not in figures


async def test_experiments_report_the_configured_experiment(tmp_path: Path) -> None:
    db_path = tmp_path / "demix.sqlite3"
    await fill_experiment(db_path)
    # A variant configured but without jobs yet is listed at 0.
    spec = "blend-vs-route: route=40,blend=40,refine=20"
    result = demix(
        "stats", "--experiments", "--json", db_path=db_path, cwd=tmp_path, DEMIX_EXPERIMENT=spec
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == "blend-vs-route"
    variants = {v["variant"]: v for v in report["variants"]}
    assert list(variants) == ["route", "blend", "refine"]
    assert {k: variants["route"][k] for k in ("jobs", "rated", "up", "down")} == {
        "jobs": 4,
        "rated": 4,
        "up": 3,
        "down": 1,
    }
    assert variants["route"]["up_share"] == 0.75
    low, high = variants["route"]["ci95"]
    assert 0 < low < 0.75 < high < 1
    assert (variants["blend"]["up"], variants["blend"]["down"]) == (0, 2)
    assert variants["blend"]["complaints"] == {"vocals": 1, "artifacts": 1}
    assert (variants["refine"]["jobs"], variants["refine"]["ci95"]) == (0, None)
    assert report["significant"] is False and report["p_value"] is None

    text = demix("stats", "--experiments", db_path=db_path, cwd=tmp_path, DEMIX_EXPERIMENT=spec)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == "experiment blend-vs-route"
    assert lines[2].split()[:5] == ["route", "4", "4", "3", "1"]
    assert lines[3].split()[:5] == ["blend", "2", "2", "0", "2"]
    assert lines[4].split()[:5] == ["refine", "0", "0", "0", "0"]


async def test_experiments_without_one_configured_report_the_latest_in_the_database(
    tmp_path: Path,
) -> None:
    db_path = tmp_path / "demix.sqlite3"
    await fill_experiment(db_path, name="an-earlier-one")
    await fill_experiment(db_path)
    result = demix("stats", "--experiments", "--json", db_path=db_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == "blend-vs-route"
    assert [v["variant"] for v in report["variants"]] == ["blend", "route"]
    assert report["p_value"] is not None


async def test_experiments_with_none_anywhere_say_so(tmp_path: Path) -> None:
    db_path = tmp_path / "demix.sqlite3"
    await fill(db_path)
    text = demix("stats", "--experiments", db_path=db_path, cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert text.stdout.startswith("no experiment")
    as_json = demix("stats", "--experiments", "--json", db_path=db_path, cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) is None
    assert "no experiment" in as_json.stderr
