"""The one way tests build a separator: the tiny random models, on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from separation import EnsembleSeparator, SeparatorConfig


def make_separator(model_repo: Path, **config: Any) -> EnsembleSeparator:
    """An :class:`EnsembleSeparator` over ``model_repo`` on CPU, without a cache unless
    ``cache_dir=`` is given; other keywords are :class:`SeparatorConfig` fields.

    It holds no open resources (models live in memory), so there is nothing to close: a
    fixture of any scope may build one and drop it.
    """
    return EnsembleSeparator(SeparatorConfig(model_repo=model_repo, device="cpu", **config))
