"""bench/gpu.py end to end on CPU (tiny models, a short clip), so the GPU benchmark is ready
for the day a GPU is lent: every section runs, and its JSON holds figures that make sense.

The script runs in its own interpreter, as it is run by hand: it sets torch and module
state (a burst worker's timeout) that should not leak into this session. Its figures mean
nothing on CPU; only their presence and signs are checked.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
# One batch size: the 3 s clip is one chunk per pass, so a second batch size stacks nothing
# and only runs every pass again (each precision is a separator of its own either way).
BATCH_SIZES = (1,)
PRECISIONS = ("fp32", "bf16", "fp16")
SONGS = 2


def test_sdr_against_a_known_error(gpu_bench: ModuleType) -> None:
    reference = np.ones((2, 100), dtype=np.float32)
    # An error of 1/10 of the signal's amplitude everywhere: 20 dB.
    assert gpu_bench.sdr_db(reference, reference * 0.9) == pytest.approx(20.0)
    assert gpu_bench.sdr_db(reference, reference) == math.inf
    tracks = {"a": reference, "b": reference}
    # The worst track decides: 0.99 alone would be 40 dB.
    assert gpu_bench.min_sdr_db(tracks, {"a": reference * 0.99, "b": reference * 0.9}) == (
        pytest.approx(20.0)
    )


@pytest.mark.slow
def test_gpu_benchmark_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    command = [
        sys.executable,
        str(BENCH / "gpu.py"),
        *("--device", "cpu", "--size", "tiny", "--seconds", "3"),
        *("--batch-sizes", *map(str, BATCH_SIZES), "--precisions", *PRECISIONS),
        *("--songs", str(SONGS), "--song-seconds", "2", "--latency", "0.2"),
        *("--json", str(out)),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())

    assert {"setup", "plain", "ours", "throughput", "delivery", "targets", "problems"} <= set(
        report
    )
    assert report["problems"] == []
    assert report["setup"]["device"] == "cpu"
    assert "RSS" in report["setup"]["memory_measure"]  # labelled: no device memory on CPU

    plain = report["plain"]
    assert plain["seconds"] > 0 and plain["real_time_factor"] > 0

    rows = {(r["request"], r["batch_size"], r["precision"]): r for r in report["ours"]}
    assert set(rows) == {
        (request, batch, precision)
        for request in ("six", "vocals")
        for batch in BATCH_SIZES
        for precision in PRECISIONS
    }
    for (_, _, precision), row in rows.items():
        if precision == "fp16":
            assert row["status"] == "skipped"
            assert "fp16" in row["reason"] and "cpu" in row["reason"]
            continue
        assert row["status"] == "ok", row
        assert row["seconds"] > 0 and row["real_time_factor"] > 0 and row["peak_memory_mb"] > 0
        # Seconds of audio (3, give or take the mp3's padding) per second of work.
        assert row["real_time_factor"] == pytest.approx(3.0 / row["seconds"], rel=0.05)
    for request in ("six", "vocals"):
        assert rows[(request, 1, "fp32")]["vs_fp32"] == "reference"
        for batch in BATCH_SIZES:
            bf16 = rows[(request, batch, "bf16")]
            assert bf16["vs_fp32"] == "sdr", bf16
            # bf16 differs from fp32, yet stays an estimate of the same thing.
            assert math.isfinite(bf16["sdr_vs_fp32_db"]) and bf16["sdr_vs_fp32_db"] > 10

    throughput = report["throughput"]
    for mode, max_jobs in (("sequential", 1), ("pipelined", 3)):
        row = throughput[mode]
        assert row["max_jobs"] == max_jobs
        assert row["delivered"] == row["songs"] == SONGS, row
        assert row["problems"] == [] and row["songs_per_hour"] > 0
    assert throughput["ratio"] > 0

    delivery = report["delivery"]
    assert delivery["problems"] == [] and delivery["tracks"] == 6
    assert delivery["press_to_last_track_s"] > 0

    targets = {row["target"]: row for row in report["targets"]}
    assert len(targets) == 3
    # The 2 s and 8 s targets need a GPU and a 4-minute song: not judged here, and said so.
    judged = [row for row in targets.values() if row["met"] is not None]
    assert [row["goal"] for row in judged] == [">= 3x"]
    assert all("--device cuda" in row["note"] for row in targets.values() if row["met"] is None)
    assert "| target | measured | at | goal | result |" in done.stdout
