"""How the ensemble separates: its models, how their estimates combine, chunking and cache
(torch-free: the bot reads the strategies' names and parses experiments' variants too)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

from separation.tracks import SOURCES

DEFAULT_MODELS: tuple[str, str] = ("htdemucs_ft", "htdemucs_6s")

Strategy = Literal["route", "blend", "refine"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
# Blend: MVSEP-MDX23's ensemble (ZFTurbo, Sound Demixing Challenge 2023) weighs
# htdemucs_ft : htdemucs_6s as 18 : 4 for drums, 19 : 5 for bass and 10 : 8 for vocals; costs
# nothing where B runs anyway (all six) and is published evidence, so it is the default.
DEFAULT_STRATEGY: Strategy = "blend"

# Fraction of each source taken from model A; B gives the rest. A has no guitar or piano,
# and A's `other` still holds them, so those three come from B.
DEFAULT_BLEND_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "drums": 18 / 22,
        "bass": 19 / 24,
        "vocals": 10 / 18,
        "guitar": 0.0,
        "piano": 0.0,
        "other": 0.0,
    }
)


@dataclass(frozen=True)
class Ensemble:
    """How the two models' estimates of a source combine (see :mod:`separation.strategies`).

    Attributes:
        strategy: ``route`` (each source from one model: drums, bass, vocals from A; guitar,
            piano, other from B), ``blend`` (per source ``w * A + (1 - w) * B`` with
            ``w = blend_weights[source]``, where the pick runs both models), or ``refine``
            (A's drums, bass and vocals; guitar, piano and other split out of A's remainder
            ``mix - drums - bass - vocals`` with B's estimates as soft masks, where the pick
            runs A's three anyway).
        blend_weights: per source, the fraction taken from model A (0..1); sources left out
            keep their default. 1 or 0 name the one model that serves the source.
        always: combine even where the pick would run a model only for the combination
            (``blend``: B for a vocals pick; ``refine``: A's three for a piano pick).
    """

    strategy: str = DEFAULT_STRATEGY
    blend_weights: Mapping[str, float] = field(
        default_factory=lambda: DEFAULT_BLEND_WEIGHTS, hash=False, compare=False
    )
    always: bool = False

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"ensemble strategy is one of {', '.join(STRATEGIES)}, not {self.strategy!r}"
            )
        unknown = set(self.blend_weights) - set(SOURCES)
        if unknown:
            raise ValueError(f"blend weights for unknown sources: {sorted(unknown)}")
        for source, weight in self.blend_weights.items():
            if not 0.0 <= float(weight) <= 1.0:
                raise ValueError(f"blend weight of {source} is {weight}, not within 0..1")
        merged = {**DEFAULT_BLEND_WEIGHTS, **{k: float(v) for k, v in self.blend_weights.items()}}
        object.__setattr__(self, "blend_weights", MappingProxyType(merged))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ensemble):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.describe())

    def describe(self) -> str:
        """A stable one-line form, e.g. ``blend(drums=0.818,...)`` (logs, experiments)."""
        weights = ",".join(f"{s}={self.blend_weights[s]:.3g}" for s in SOURCES)
        suffix = ",always" if self.always else ""
        return f"{self.strategy}({weights}{suffix})"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (the job payload carries it from bot to worker)."""
        return {
            "strategy": self.strategy,
            "blend_weights": {s: self.blend_weights[s] for s in SOURCES},
            "always": self.always,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Ensemble:
        """The inverse of :meth:`to_dict`; missing keys take their defaults.

        Raises:
            ValueError: an unknown strategy or source, a weight outside 0..1.
        """
        return cls(
            strategy=str(data.get("strategy", DEFAULT_STRATEGY)),
            blend_weights=dict(data.get("blend_weights") or {}),
            always=bool(data.get("always", False)),
        )


# Network precision: ``auto`` is bf16 where the device computes it natively (a CUDA device
# that supports it, a CPU with AVX-512 BF16 or AMX), else fp32.
Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
# Devices by type; ``cuda:N`` names one GPU.
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class SeparatorConfig:
    """How an :class:`EnsembleSeparator` separates.

    Attributes:
        models: model A (4 sources, a bag such as ``htdemucs_ft``) and model B (6 sources,
            such as ``htdemucs_6s``), by demucs name.
        model_repo: a local model folder in demucs's repo format; None uses demucs's
            download.
        device: ``auto`` (cuda, else mps, else cpu), ``cuda``, ``cuda:N``, ``mps`` or ``cpu``
            (whether it exists on this machine is found when the separator is built).
        ensemble: how the two models' estimates combine, unless a call names another.
        shifts: demucs's random-shift averaging: that many passes per sub-model, each
            over the song shifted by up to half a second (0 = deterministic, fastest).
        overlap: overlap between consecutive chunks (0 <= overlap < 1).
        batch_size: chunks of one sub-model stacked into one forward pass; 0 picks one for
            the device (what fits its free memory on CUDA, the measured best on CPU).
        precision: the network's arithmetic: ``fp32``, ``bf16`` or ``fp16`` (autocast
            around the forward pass; STFT, iSTFT and the cross-fade stay float32), or
            ``auto``: bf16 where the device computes it natively, i.e. a CUDA device that
            supports it or a CPU with AVX-512 BF16 or AMX (``avx512_bf16`` or ``amx_bf16``
            in ``/proc/cpuinfo``, see :mod:`separation.cpu`), else fp32 (emulated bf16 is
            slower than fp32). bf16 estimates stay about 46 dB or more from fp32's on the
            published shapes, and the tracks still sum to the mix. fp16 is refused on CPU.
        cache_dir: folder of the source cache; None disables caching.
        cache_max_bytes: size cap of the cache; least recently used entries go first.
    """

    models: tuple[str, str] = DEFAULT_MODELS
    model_repo: Path | None = None
    device: str = "auto"
    ensemble: Ensemble = field(default_factory=Ensemble)
    shifts: int = 0
    overlap: float = 0.25
    batch_size: int = 0
    precision: str = "auto"
    cache_dir: Path | None = None
    cache_max_bytes: int = 20 * 10**9

    def __post_init__(self) -> None:
        if len(self.models) != 2:
            raise ValueError("models names two models: 4-source A, 6-source B")
        if self.shifts < 0:
            raise ValueError("shifts must be >= 0")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError("overlap must be within [0, 1)")
        if self.batch_size < 0:
            raise ValueError("batch_size must be >= 0 (0 picks one for the device)")
        check_device(self.device)
        check_precision(self.precision, self.device)


def check_device(device: str) -> None:
    """Refuse a device name that is none of ``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    Raises:
        ValueError: with the names accepted.
    """
    index = device.removeprefix("cuda:")
    if device not in DEVICES and not (index != device and index.isdigit()):
        raise ValueError(f"device is one of auto, cpu, cuda, cuda:N, mps, not {device!r}")


def check_precision(precision: str, device: str) -> None:
    """Refuse an unknown precision, and fp16 on CPU (CPU autocast has no fast fp16).

    Raises:
        ValueError: with the reason.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision is one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp16" and device == "cpu":
        raise ValueError("precision fp16 is not supported on cpu; use fp32 or bf16")
