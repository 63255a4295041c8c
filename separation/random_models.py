"""Randomly initialised HTDemucs models written in demucs's own repository format.

Tests and benchmarks cannot download the pretrained weights, so they write models of the
same kind (a 4-source bag of per-source models, and a 6-source model) to a folder laid out
as demucs's ``LocalRepo`` expects (``<name>.yaml`` + ``<sig>-<sha8>.th``) and load them
through the real loading path. The separated audio is meaningless; shapes, code paths and
costs are real.
"""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from demucs.htdemucs import HTDemucs
from demucs.states import save_with_checksum

FOUR_SOURCES = ["drums", "bass", "other", "vocals"]
SIX_SOURCES = ["drums", "bass", "other", "vocals", "guitar", "piano"]

# Small enough for a test to separate seconds of audio in well under a second per model.
TINY_KWARGS: dict[str, Any] = {
    "channels": 4,
    "depth": 4,
    "t_layers": 1,
    # Even, as the published 8: PyTorch's attention fast path takes only even head counts,
    # so the tiny models' attention runs down the same kernels as the real ones'.
    "t_heads": 2,
    "t_hidden_scale": 1.0,
    "dconv_depth": 1,
    "dconv_comp": 4,
    "bottom_channels": 0,
    "segment": Fraction(39, 5),
}

# The shapes of the pretrained packages (their file sizes pin them): htdemucs and each
# htdemucs_ft sub-model use bottom_channels=512; htdemucs_6s uses none.
PRETRAINED_KWARGS_4: dict[str, Any] = {
    "channels": 48,
    "depth": 4,
    "dconv_mode": 3,
    "bottom_channels": 512,
    "t_layers": 5,
    "segment": Fraction(39, 5),
}
PRETRAINED_KWARGS_6: dict[str, Any] = {**PRETRAINED_KWARGS_4, "bottom_channels": 0}

Size = Literal["tiny", "pretrained"]


def _kwargs(size: Size, six: bool) -> dict[str, Any]:
    if size == "tiny":
        return dict(TINY_KWARGS)
    return dict(PRETRAINED_KWARGS_6 if six else PRETRAINED_KWARGS_4)


def _write_model(root: Path, sig: str, sources: list[str], kwargs: dict[str, Any]) -> Path:
    model = HTDemucs(sources, **kwargs)
    package = {
        "klass": HTDemucs,
        "args": (),
        "kwargs": {"sources": sources, **kwargs},
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    save_with_checksum(package, root / f"{sig}.th")
    return next(root.glob(f"{sig}-*.th"))


def write_model_repo(
    root: Path,
    *,
    names: tuple[str, str] = ("htdemucs_ft", "htdemucs_6s"),
    size: Size = "tiny",
    bag_size: int = 4,
    seed: int = 0,
) -> Path:
    """Write model A (a bag of ``bag_size`` 4-source models, one per source, as
    htdemucs_ft is) and model B (one 6-source model, as htdemucs_6s is) under ``root``.

    Args:
        root: the folder to write; created if missing. Use it as ``DEMIX_MODEL_REPO``.
        names: the model names (file stems of the two ``.yaml`` files).
        size: ``"tiny"`` for tests, ``"pretrained"`` for the real architectures.
        bag_size: sub-models in model A; 4 gives the per-source identity weights of
            htdemucs_ft, 1 gives a single model like htdemucs.
        seed: seeds the weights and the signatures, so a repo is reproducible.

    Returns:
        ``root``.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    name_a, name_b = names

    sigs_a = [f"{rng.getrandbits(32):08x}" for _ in range(bag_size)]
    for sig in sigs_a:
        _write_model(root, sig, FOUR_SOURCES, _kwargs(size, six=False))
    bag: dict[str, Any] = {"models": sigs_a}
    if bag_size == len(FOUR_SOURCES):
        bag["weights"] = [
            [1.0 if i == j else 0.0 for j in range(len(FOUR_SOURCES))] for i in range(bag_size)
        ]
    (root / f"{name_a}.yaml").write_text(yaml.safe_dump(bag))

    sig_b = f"{rng.getrandbits(32):08x}"
    _write_model(root, sig_b, SIX_SOURCES, _kwargs(size, six=True))
    (root / f"{name_b}.yaml").write_text(yaml.safe_dump({"models": [sig_b]}))
    return root
