"""Stem arithmetic: which tracks a pick delivers, which sources that needs, and the sums."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from separation.errors import UnknownStemError

SOURCES: tuple[str, ...] = ("drums", "bass", "vocals", "guitar", "piano", "other")

# `other` is what the five named sources leave: with all six picked it is the residual.
_RESIDUAL_OF_ALL = "other"


def _picked(stems: Iterable[str]) -> frozenset[str]:
    if isinstance(stems, str):
        stems = [stems]
    names = [name.strip().lower() for name in stems]
    unknown = sorted({name for name in names if name not in SOURCES})
    if unknown:
        raise UnknownStemError(
            f"unknown stem(s): {', '.join(repr(name) for name in unknown)}",
            f"Unknown stem {', '.join(unknown)}; pick from: {', '.join(SOURCES)}.",
        )
    if not names:
        raise UnknownStemError("no stems picked")
    return frozenset(names)


def plan_tracks(stems: Iterable[str]) -> tuple[str, ...]:
    """The tracks delivered for a pick of sources, in a stable order.

    One source ``x`` gives ``(x, "no_x")``; two to five give each picked source in
    :data:`SOURCES` order and ``"rest"``; all six give the six sources.

    Args:
        stems: source names, any order, duplicates allowed (case and spaces ignored).

    Returns:
        The track names.

    Raises:
        UnknownStemError: ``stems`` is empty or names something that is not a source.
    """
    picked = _picked(stems)
    ordered = tuple(source for source in SOURCES if source in picked)
    if len(ordered) == 1:
        return (ordered[0], f"no_{ordered[0]}")
    if len(ordered) == len(SOURCES):
        return ordered
    return (*ordered, "rest")


def sources_to_estimate(stems: Iterable[str]) -> tuple[str, ...]:
    """The sources a model must estimate for a pick; the residual track needs none.

    Args:
        stems: as for :func:`plan_tracks`.

    Returns:
        Source names in :data:`SOURCES` order.
    """
    picked = _picked(stems)
    if len(picked) == len(SOURCES):
        picked = picked - {_RESIDUAL_OF_ALL}
    return tuple(source for source in SOURCES if source in picked)


def assemble_tracks(
    mix: np.ndarray, estimates: Mapping[str, np.ndarray], stems: Iterable[str]
) -> dict[str, np.ndarray]:
    """Build the delivered tracks from the source estimates; the residual closes the sum.

    Args:
        mix: the input, float32 ``(2, n)``.
        estimates: at least the :func:`sources_to_estimate` sources, each ``(2, n)``.
        stems: the pick.

    Returns:
        Track name to float32 ``(2, n)``, in :func:`plan_tracks` order; the tracks sum to
        ``mix`` up to float32 rounding.
    """
    tracks = plan_tracks(stems)
    named = sources_to_estimate(stems)
    out: dict[str, np.ndarray] = {}
    residual = np.array(mix, dtype=np.float32, copy=True)
    for source in named:
        estimate = np.asarray(estimates[source], dtype=np.float32)
        if estimate.shape != mix.shape:
            raise ValueError(f"estimate of {source} has shape {estimate.shape}, not {mix.shape}")
        out[source] = estimate
        residual -= estimate
    residual_name = next(track for track in tracks if track not in out)
    out[residual_name] = residual
    return {track: out[track] for track in tracks}
