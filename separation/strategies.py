"""The ensemble's strategies: how model A's and model B's estimates of a source combine.

A strategy answers two questions for a pick: which estimates the models must give (a
``(role, source)`` pair per estimate, role ``"A"``, the 4-source bag, or ``"B"``, the
6-source model), and how the picked sources' estimates follow from them. The engine
(:mod:`separation.ensemble`) runs the sub-models those estimates need, streams the song
through them, and hands each span of estimates to the plan's :class:`Combiner`; the
residual track closes the sum to the mix afterwards (:func:`separation.mixing.assemble_tracks`),
so every strategy keeps DESIGN.md's invariants whatever it does to the sources.

- ``route``: each source from one model: drums, bass and vocals from A; guitar, piano and
  other from B.
- ``blend``: per source, ``w * A + (1 - w) * B`` (``w`` the source's blend weight) where the
  pick runs both models anyway; a pick that runs one model keeps route's source unless the
  ensemble says ``always``. ``w`` of 1 or 0 names the one model that serves the source.
- ``refine``: A's drums, bass and vocals; guitar, piano and other are split out of A's
  remainder ``R = mix - drums_A - bass_A - vocals_A`` with B's estimates of those three as
  Wiener-style soft masks in the STFT domain, so they never carry what A took and the three
  sum to ``R``. It applies where the pick runs A's three anyway (all six; drums + bass +
  vocals + piano, ...); elsewhere it is route unless the ensemble says ``always``.

Masks over ``R`` rather than B run on ``R``: B's pass over ``R`` could start only once A had
finished the whole song (demucs normalises by the whole input's statistics), so the song
could no longer stream through both models in lockstep, and B's cached estimates of the
mix could not serve it; masking costs a few STFTs per second of audio beside four network
passes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from separation.config import STRATEGIES, Ensemble
from separation.tracks import SOURCES, sources_to_estimate

ROLE_A = "A"
ROLE_B = "B"
# (role, source): one model's estimate of one source.
Estimate = tuple[str, str]

# Route's table: the sources model A serves; B serves the rest.
_FROM_A = ("drums", "bass", "vocals")
# What refine splits out of A's remainder, and so what B's masks are made of.
_REFINED = ("guitar", "piano", "other")

# STFT of the refine masks: demucs's own front end (4096-point frames, hop 1024).
_N_FFT = 4096
_HOP = _N_FFT // 4
# Added to the masks' denominator: silence in all three of B's estimates gives masks of 0
# (the remainder then goes to the residual track), not a division by zero.
_POWER_FLOOR = 1e-12


def _route_role(source: str) -> str:
    return ROLE_A if source in _FROM_A else ROLE_B


class Combiner(Protocol):
    """Turns the models' estimates, a span at a time, into the picked sources' estimates."""

    def push(
        self, mix: np.ndarray, found: Mapping[Estimate, np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        """Take the next span of the song (``mix``, ``(2, m)``) and the estimates over it;
        return the spans of source estimates now final, in order, contiguous (possibly
        none, or ending before the span's end: a combiner may hold some back)."""

    def finish(self) -> list[dict[str, np.ndarray]]:
        """The spans held back, up to the song's end."""


@dataclass(frozen=True)
class Plan:
    """What a strategy does for one pick.

    Attributes:
        strategy: the strategy in effect: one that does not apply to the pick falls back to
            ``route`` (``blend`` over a pick that runs one model, ``refine`` without A's
            three), so two plans with equal ``strategy`` and weights give equal results.
        needed: the sources to estimate (:func:`separation.sources_to_estimate`).
        estimates: the models' estimates the plan uses, ``(role, source)``.
        weights: per needed source, the fraction taken from A (route: 1 or 0; refined
            sources: absent).
    """

    strategy: str
    needed: tuple[str, ...]
    estimates: tuple[Estimate, ...]
    weights: Mapping[str, float]

    def combiner(self) -> Combiner:
        """A fresh combiner for one song."""
        if self.strategy == "refine":
            return _RefineCombiner(self)
        return _WeightedCombiner(self.weights)


def plan(ensemble: Ensemble, stems: Iterable[str]) -> Plan:
    """The plan of ``ensemble``'s strategy for the pick ``stems``.

    Args:
        ensemble: the strategy, its blend weights and whether to combine ``always``.
        stems: the picked sources.

    Returns:
        The plan: the estimates the models must give, and how they combine.

    Raises:
        UnknownStemError: empty or unknown stems.
    """
    needed = sources_to_estimate(stems)
    routed = {s: 1.0 if _route_role(s) == ROLE_A else 0.0 for s in needed}
    if ensemble.strategy == "refine":
        refined = [s for s in needed if s in _REFINED]
        if refined and (set(_FROM_A) <= set(needed) or ensemble.always):
            weights = {s: w for s, w in routed.items() if s not in _REFINED}
            estimates = [(ROLE_A, s) for s in _FROM_A] + [(ROLE_B, s) for s in _REFINED]
            return Plan("refine", needed, tuple(estimates), weights)
    weights = dict(routed)
    if ensemble.strategy == "blend":
        chosen = {s: ensemble.blend_weights[s] for s in needed}
        # Weights of 1 or 0 say which model serves a source; the models the pick then runs
        # decide whether a weight in between costs a pass of its own.
        roles = {
            ROLE_A if w == 1.0 else ROLE_B if w == 0.0 else _route_role(s)
            for s, w in chosen.items()
        }
        both_run = len(roles) == 2 or ensemble.always
        for source, w in chosen.items():
            if w in (0.0, 1.0) or both_run:
                weights[source] = w
    strategy = "route" if weights == routed else "blend"
    estimates = []
    for source, w in weights.items():
        if w > 0.0:
            estimates.append((ROLE_A, source))
        if w < 1.0:
            estimates.append((ROLE_B, source))
    return Plan(strategy, needed, tuple(estimates), weights)


def usable_estimates(ensemble: Ensemble) -> frozenset[Estimate]:
    """Every estimate some pick can use under any strategy with ``ensemble``'s blend
    weights, combining always: the estimates a cache keeps, so an entry filled for one pick
    or one experiment variant serves the others."""
    picks = [[s] for s in SOURCES] + [list(SOURCES)]
    return frozenset(
        estimate
        for strategy in STRATEGIES
        for pick in picks
        for estimate in plan(
            Ensemble(strategy, ensemble.blend_weights, always=True), pick
        ).estimates
    )


def combine(
    ensemble: Ensemble,
    mix: np.ndarray,
    found: Mapping[Estimate, np.ndarray],
    stems: Iterable[str],
) -> dict[str, np.ndarray]:
    """The picked sources' estimates from whole-song model estimates (benchmarks, tests);
    the engine streams the same combiners a span at a time.

    Args:
        ensemble: how the estimates combine.
        mix: the song, float32 ``(2, n)``.
        found: at least the plan's estimates, each float32 ``(2, n)``.
        stems: the pick.

    Returns:
        Source name to float32 ``(2, n)`` for the needed sources (the residual track is
        :func:`separation.mixing.assemble_tracks`'s).
    """
    combiner = plan(ensemble, stems).combiner()
    spans = combiner.push(mix, found) + combiner.finish()
    return {
        source: np.concatenate([span[source] for span in spans], axis=-1) for source in spans[0]
    }


class _WeightedCombiner:
    """Route and blend: each source a weighted sum of A's and B's estimates, span by span."""

    def __init__(self, weights: Mapping[str, float]) -> None:
        self._weights = dict(weights)

    def push(
        self, mix: np.ndarray, found: Mapping[Estimate, np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        estimates: dict[str, np.ndarray] = {}
        for source, w in self._weights.items():
            if w >= 1.0:
                estimates[source] = found[(ROLE_A, source)]
            elif w <= 0.0:
                estimates[source] = found[(ROLE_B, source)]
            else:
                blended = found[(ROLE_A, source)] * np.float32(w)
                blended += found[(ROLE_B, source)] * np.float32(1.0 - w)
                estimates[source] = blended
        return [estimates]

    def finish(self) -> list[dict[str, np.ndarray]]:
        return []


def _hann(n: int) -> np.ndarray:
    """The periodic Hann window: with hop n/4 its squares sum to a constant (1.5), so the
    masked frames overlap-add back exactly."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


class _RefineCombiner:
    """Refine, streamed: B's masks split A's remainder frame by frame.

    The STFT runs over frames starting every hop from ``-(n_fft - hop)`` (the song is
    zero-padded on both sides, so every sample lies in ``n_fft / hop`` frames); a sample is
    final once every frame over it has been masked and overlap-added, so the output lags
    the input by at most one frame."""

    def __init__(self, plan: Plan) -> None:
        self._refined = [s for s in plan.needed if s in _REFINED]
        self._routed = dict(plan.weights)
        self._route = _WeightedCombiner(self._routed)
        self._window = _hann(_N_FFT)
        squares = self._window**2
        # Σ w² over the frames covering a sample, by its position within a hop.
        self._norm = squares.reshape(-1, _HOP).sum(axis=0)
        lead = _N_FFT - _HOP
        self._in_base = -lead  # song position of the inputs' first sample
        # The remainder, then B's three estimates: (4, 2, m), zeros before the song.
        self._inputs = np.zeros((1 + len(_REFINED), 2, lead), dtype=np.float32)
        self._next_frame = -lead  # song position of the next frame to mask
        self._out_base = -lead
        self._out = np.zeros((len(self._refined), 2, 0), dtype=np.float32)
        self._emitted = 0
        # Routed sources wait for the refined ones: (len, 2, m) from position _emitted.
        self._held = np.zeros((len(self._routed), 2, 0), dtype=np.float32)

    def push(
        self, mix: np.ndarray, found: Mapping[Estimate, np.ndarray]
    ) -> list[dict[str, np.ndarray]]:
        remainder = np.array(mix, dtype=np.float32, copy=True)
        for source in _FROM_A:
            remainder -= found[(ROLE_A, source)]
        span = np.stack([remainder, *(found[(ROLE_B, s)] for s in _REFINED)])
        self._inputs = np.concatenate([self._inputs, span], axis=-1)
        if self._routed:
            routed = self._route.push(mix, found)[0]
            held = np.stack([routed[s] for s in self._routed])
            self._held = np.concatenate([self._held, held], axis=-1)
        self._mask_frames(self._in_base + self._inputs.shape[-1])
        return self._emit(self._next_frame)

    def finish(self) -> list[dict[str, np.ndarray]]:
        end = self._in_base + self._inputs.shape[-1]
        # Zeros after the song, so the last frames over it are whole.
        pad = np.zeros((*self._inputs.shape[:2], _N_FFT), dtype=np.float32)
        self._inputs = np.concatenate([self._inputs, pad], axis=-1)
        self._mask_frames(end + _N_FFT, last_start=end)
        return self._emit(end)

    def _mask_frames(self, available: int, last_start: int | None = None) -> None:
        """Mask every frame that lies within the ``available`` input (and, with
        ``last_start``, starts before it) and overlap-add it into the output."""
        count = (available - _N_FFT - self._next_frame) // _HOP + 1
        if last_start is not None:
            count = min(count, -(-(last_start - self._next_frame) // _HOP))
        if count <= 0:
            return
        first = self._next_frame - self._in_base
        windows = np.lib.stride_tricks.sliding_window_view(
            self._inputs[..., first : first + (count - 1) * _HOP + _N_FFT], _N_FFT, axis=-1
        )[..., ::_HOP, :]
        # torch's FFT: about 8 times numpy's on the same frames (2 CPU cores).
        spectra = torch.fft.rfft(torch.from_numpy(windows * self._window), dim=-1)
        remainder, estimates = spectra[0], spectra[1:]  # (2, count, bins), (3, 2, count, bins)
        power = estimates.real.square() + estimates.imag.square()
        total = power.sum(dim=0).add_(_POWER_FLOOR)
        picked = power[[_REFINED.index(s) for s in self._refined]]
        frames = torch.fft.irfft(picked.div_(total) * remainder, n=_N_FFT, dim=-1).numpy()
        frames *= self._window
        # Overlap-add: frame j's b-th hop lands on hop j + b of the output. Each hop takes
        # its frames in order (b from last to first), whatever the spans the song came in,
        # so a streamed song gives the bits a whole one does.
        start = self._next_frame - self._out_base
        grow = start + (count + 3) * _HOP - self._out.shape[-1]
        if grow > 0:
            self._out = np.concatenate(
                [self._out, np.zeros((*self._out.shape[:2], grow), dtype=np.float32)], axis=-1
            )
        hops = self._out[..., start : start + (count + 3) * _HOP].reshape(
            *self._out.shape[:2], count + 3, _HOP
        )
        for b in reversed(range(_N_FFT // _HOP)):
            hops[:, :, b : b + count] += frames[..., b * _HOP : (b + 1) * _HOP]
        self._next_frame += count * _HOP
        keep = self._next_frame - self._in_base
        self._inputs = self._inputs[..., keep:]
        self._in_base = self._next_frame

    def _emit(self, final: int) -> list[dict[str, np.ndarray]]:
        """The spans from what was emitted up to ``final``, normalised by the windows."""
        stop = min(final, self._in_base + self._inputs.shape[-1])
        stop = min(stop, self._emitted + self._held.shape[-1]) if self._routed else stop
        n = stop - self._emitted
        if n <= 0:
            return []
        begin = self._emitted - self._out_base
        out = self._out[..., begin : begin + n]
        phase = np.arange(self._emitted, stop) % _HOP
        out = out / self._norm[phase]
        estimates = {s: out[k] for k, s in enumerate(self._refined)}
        for k, source in enumerate(self._routed):
            estimates[source] = self._held[k, :, :n]
        self._held = self._held[..., n:]
        self._out = self._out[..., begin + n :]
        self._out_base = stop
        self._emitted = stop
        return [{s: estimates[s] for s in self._order(estimates)}]

    def _order(self, estimates: Mapping[str, np.ndarray]) -> list[str]:
        return [s for s in SOURCES if s in estimates]
