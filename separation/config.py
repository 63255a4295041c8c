"""How the ensemble separates: its models, blend weights, chunking and cache (torch-free)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Literal, get_args

from separation.tracks import SOURCES

DEFAULT_MODELS: tuple[str, str] = ("htdemucs_ft", "htdemucs_6s")

# Fraction of each source taken from model A; B gives the rest. A has no guitar or piano,
# and A's `other` still holds them, so those three come from B.
DEFAULT_BLEND_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"drums": 1.0, "bass": 1.0, "vocals": 1.0, "guitar": 0.0, "piano": 0.0, "other": 0.0}
)

# Network precision: ``auto`` is bf16 on a CUDA device that supports it, else fp32.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


@dataclass(frozen=True)
class SeparatorConfig:
    """How an :class:`EnsembleSeparator` separates.

    Attributes:
        models: model A (4 sources, a bag such as ``htdemucs_ft``) and model B (6 sources,
            such as ``htdemucs_6s``), by demucs name.
        model_repo: a local model folder in demucs's repo format; None uses demucs's
            download.
        device: ``auto`` (cuda, else mps, else cpu), ``cuda``, ``cuda:N``, ``mps`` or ``cpu``.
        blend_weights: per source, the fraction taken from model A (0..1); B gives the rest.
            Sources left out keep their default.
        shifts: demucs's random-shift averaging: that many passes per sub-model, each
            over the song shifted by up to half a second (0 = deterministic, fastest).
        overlap: overlap between consecutive chunks (0 <= overlap < 1).
        batch_size: chunks of one sub-model stacked into one forward pass; 0 picks one for
            the device (what fits its free memory on CUDA, the measured best on CPU).
        precision: the network's arithmetic: ``fp32``, ``bf16`` or ``fp16`` (autocast
            around the forward pass; STFT, iSTFT and the cross-fade stay float32), or
            ``auto``: bf16 on a CUDA device that supports it, else fp32. fp16 is refused
            on CPU.
        cache_dir: folder of the source cache; None disables caching.
        cache_max_bytes: size cap of the cache; least recently used entries go first.
    """

    models: tuple[str, str] = DEFAULT_MODELS
    model_repo: Path | None = None
    device: str = "auto"
    blend_weights: Mapping[str, float] = field(
        default_factory=lambda: DEFAULT_BLEND_WEIGHTS, hash=False
    )
    shifts: int = 0
    overlap: float = 0.25
    batch_size: int = 0
    precision: str = "auto"
    cache_dir: Path | None = None
    cache_max_bytes: int = 20 * 10**9

    def __post_init__(self) -> None:
        unknown = set(self.blend_weights) - set(SOURCES)
        if unknown:
            raise ValueError(f"blend weights for unknown sources: {sorted(unknown)}")
        for source, weight in self.blend_weights.items():
            if not 0.0 <= float(weight) <= 1.0:
                raise ValueError(f"blend weight of {source} is {weight}, not within 0..1")
        merged = {**DEFAULT_BLEND_WEIGHTS, **{k: float(v) for k, v in self.blend_weights.items()}}
        object.__setattr__(self, "blend_weights", MappingProxyType(merged))
        if len(self.models) != 2:
            raise ValueError("models names two models: 4-source A, 6-source B")
        if self.shifts < 0:
            raise ValueError("shifts must be >= 0")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError("overlap must be within [0, 1)")
        if self.batch_size < 0:
            raise ValueError("batch_size must be >= 0 (0 picks one for the device)")
        check_precision(self.precision, self.device)


def check_precision(precision: str, device: str) -> None:
    """Refuse an unknown precision, and fp16 on CPU (CPU autocast has no fast fp16).

    Raises:
        ValueError: with the reason.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision is one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp16" and device == "cpu":
        raise ValueError("precision fp16 is not supported on cpu; use fp32 or bf16")
