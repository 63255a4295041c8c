"""The six sources and what a pick delivers: track names and the sources to estimate.

Torch- and numpy-free: the bot process uses these rules too.
"""

from __future__ import annotations

from collections.abc import Iterable

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
