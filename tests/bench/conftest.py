"""Fixtures of the benchmark tests: the ``bench/`` scripts loaded as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def load_bench_script(name: str) -> ModuleType:
    """``bench/<name>.py`` (a script, not a package module) imported from its file, with
    ``bench/`` on the path while it loads, as when it runs as a script (some import
    ``songs`` or ``throughput`` from beside them)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Dataclasses look their module up by name.
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.fixture(scope="session")
def quality() -> ModuleType:
    """``bench/quality.py``."""
    return load_bench_script("quality")


@pytest.fixture(scope="session")
def versus_cli() -> ModuleType:
    """``bench/versus_cli.py``."""
    return load_bench_script("versus_cli")


@pytest.fixture(scope="session")
def gpu_bench() -> ModuleType:
    """``bench/gpu.py``."""
    return load_bench_script("gpu")
