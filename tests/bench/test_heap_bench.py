"""bench/heap.py: each allocator setting runs in its own process and the table compares them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.bench.conftest import load_bench_script


def test_tiny_run_times_both_settings_in_their_own_processes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    heap = load_bench_script("heap")
    out = tmp_path / "heap.json"
    args = ["--size", "tiny", "--rounds", "1", "--repeat", "1", "--json", str(out)]
    assert heap.main(args) == 0
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"default", "heap"}
    for rows in runs.values():
        (row,) = rows
        assert row["median_s"] > 0 and row["first_s"] > 0
    table = capsys.readouterr().out
    assert "| heap |" in table
    assert "| default | " in table and " | 1.00 | " in table, "default is the ratios' base"
