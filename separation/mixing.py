"""Stem arithmetic: the delivered tracks from the source estimates; the residual closes the sum."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from separation.tracks import plan_tracks, sources_to_estimate


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
