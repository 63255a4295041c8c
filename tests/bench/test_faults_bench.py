"""bench/faults.py end to end, tiny: two jobs, two worker processes, a short lease and kill
points early in each job's life, so the script's kills, resumes and delivery counts are
exercised as in the real run (20 jobs), in well under a minute.

The script runs in its own interpreter, as it is run by hand: it starts and kills worker
processes and runs its own redis-server and fake Bot API.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.bench.conftest import load_bench_script

REPO = Path(__file__).resolve().parents[2]
JOBS = 2
LEASE_S = 2.0


@pytest.fixture(scope="module")
def faults() -> ModuleType:
    """``bench/faults.py``."""
    return load_bench_script("faults")


def test_percentiles_and_phases_of_the_report(faults: ModuleType) -> None:
    assert faults.percentile([3.0, 1.0, 2.0], 0.5) == 2.0
    assert faults.percentile([1.0, 2.0, 3.0, 4.0], 0.95) == 4.0
    assert faults.percentile([], 0.5) is None


@pytest.mark.slow
def test_the_faults_benchmark_kills_workers_and_every_job_resumes_and_delivers_once(
    tmp_path: Path,
) -> None:
    out = tmp_path / "faults.json"
    command = [
        sys.executable,
        str(REPO / "bench" / "faults.py"),
        # Kill points within half a second of the claim: since the passes reuse their heap,
        # a job on tiny models (2 s song) can end within 2 s, before a later point.
        *("--jobs", str(JOBS), "--lease", str(LEASE_S), "--window", "0.5", "--seconds", "2"),
        # Both jobs at once (a worker may hold both): one restart, not two, in the test.
        *("--max-jobs", "2"),
        # No upload latency: a kill that lands mid-upload would be the ledger's stated window
        # (a duplicate album), which the real run measures; here the mechanics are checked.
        *("--latency", "0"),
        *("--timeout", "120", "--json", str(out), "--keep", str(tmp_path / "run")),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())

    assert report["ok"] is True and report["problems"] == []
    assert report["setup"]["lease_s"] == LEASE_S and report["setup"]["jobs"] == JOBS
    # Each job's point came while it ran (it is killed at most 0.5 s after its claim,
    # sooner than a job ends on tiny models), so there was at least one kill.
    assert report["kills"] >= 1
    assert len(report["kill_log"]) == report["kills"]
    assert report["interrupted"] == len(report["resumes"]) >= report["kills"]
    resume = report["resume_s"]
    assert resume["bound"] == 2 * LEASE_S
    assert 0 < resume["p50"] <= resume["max"] <= 2 * LEASE_S + 1
    for gap in report["resumes"]:
        assert gap["how"] in ("claim", "complete") and gap["resumed_s"] is not None
    assert report["jobs_complete"] == JOBS
    assert report["tracks_delivered"] == report["tracks_expected"] > 0
    assert report["duplicates"] == 0 and report["lost"] == 0
    assert report["ratings_not_one"] == 0 and report["status_not_done"] == 0
    assert report["unexpected_exits"] == []
    chats = report["chats"]
    assert len(chats) == JOBS and all(c["ratings"] == 1 and c["done"] for c in chats)
    assert "| tracks delivered twice | 0 (" in done.stdout
    # The workers that were killed were started again by the script's supervisor.
    logs = sorted(p.name for p in (tmp_path / "run").glob("worker-*.log"))
    assert len(logs) == 2 + report["kills"], logs
