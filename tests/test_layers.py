"""The package graph is a DAG with entry points on top, and the bot process stays light.

Layers (each may import only those listed; `demix/` holds the entry points):

    separation   the engine, a pure library        -> (nothing of ours)
    storage      SQLite                            -> (nothing of ours)
    common       what bot and worker both speak    -> separation
    bot          the Telegram front end            -> common, separation, storage
    web          the mixer's web server            -> common, separation, storage
    worker       the arq separation worker         -> common, separation
    demix        entry points                      -> everything
"""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("separation", "storage", "common", "bot", "web", "worker", "demix")
ALLOWED: dict[str, set[str]] = {
    "separation": set(),
    "storage": set(),
    "common": {"separation"},
    "bot": {"common", "separation", "storage"},
    "web": {"common", "separation", "storage"},
    "worker": {"common", "separation"},
    "demix": {"separation", "storage", "common", "bot", "web", "worker"},
}
# What the bot process must never load: the bot image has no torch at all.
HEAVY = ("torch", "torchaudio", "demucs", "numpy", "worker")


def package_imports() -> dict[str, set[str]]:
    """Package -> the other first-party packages its modules import (anywhere in a module)."""
    graph: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top in PACKAGES and top != package:
                        graph[package].add(top)
    return graph


def cycle_in(graph: Mapping[str, set[str]]) -> list[str] | None:
    """A cycle of the graph, or None when it is a DAG."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        return list(exc.args[1])
    return None


def test_each_package_imports_only_the_layers_below_it() -> None:
    graph = package_imports()
    extra = {package: sorted(uses - ALLOWED[package]) for package, uses in graph.items()}
    assert not any(extra.values()), f"imports across the layers: {extra}"
    assert cycle_in(graph) is None


def test_the_cycle_check_sees_a_cycle() -> None:
    assert cycle_in({"bot": {"demix"}, "demix": {"bot"}}) is not None
    assert cycle_in(ALLOWED) is None


def _modules_after(imports: str) -> set[str]:
    script = textwrap.dedent(
        f"""
        import sys
        {imports}
        print("\\n".join(sorted(sys.modules)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        cwd=ROOT,
    )
    return set(result.stdout.split())


def _heavy_in(modules: set[str]) -> list[str]:
    return [name for name in HEAVY if any(m == name or m.startswith(name + ".") for m in modules)]


def test_bot_process_imports_neither_the_worker_nor_torch() -> None:
    modules = _modules_after(
        "import demix.cli, bot.app, demix.stats, demix.health, demix.up, common.logs, separation,"
        " web.app"
    )
    assert _heavy_in(modules) == []


def test_the_probe_sees_heavy_imports() -> None:
    # The same probe does notice torch, so the test above can fail.
    assert {"torch", "worker"} <= set(_heavy_in(_modules_after("import worker.app")))


def test_demix_separate_imports_torch_only_after_its_checks() -> None:
    # The first song decodes while torch imports (separation/cli.py): importing the
    # command's module must not import torch already.
    modules = _modules_after("import separation.cli")
    assert "torch" not in _heavy_in(modules)
