"""Fixtures of the benchmark tests: ``bench/quality.py`` and ``bench/versus_cli.py`` loaded
as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="session")
def quality() -> ModuleType:
    """``bench/quality.py`` (a script, not a package module), imported from its file."""
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH / "quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def versus_cli() -> ModuleType:
    """``bench/versus_cli.py``, imported from its file; it imports ``songs`` from beside it,
    as it does when run as a script."""
    spec = importlib.util.spec_from_file_location("bench_versus_cli", BENCH / "versus_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module
