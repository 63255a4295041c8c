"""Separation quality: SDR per source of model A alone, model B alone and every ensemble
strategy, in one table, measured as MUSDB18 results are published.

Songs come in either of two layouts, both accepted in one FOLDER:

- MUSDB18 ``.stem.mp4`` files (stream 0 the mixture, then drums, bass, other, vocals);
- song folders ``<song>/mixture.wav`` with ``<song>/<source>.wav`` for any subset of the six
  sources drums, bass, vocals, guitar, piano, other (the layout of MUSDB18-HQ and of
  MoisesDB's own converter), so guitar and piano are measured where the data has them.

What each song is asked for. The pick is every source the song has a reference for except
``other`` (all six when it has all six), so each delivered track has a reference: a picked
source is scored against its own file, and the remainder track (``rest``, ``no_x``, or
``other`` when all six are picked; mixture minus the picked estimates) against the sum of
the references not picked, which is the song's ``other`` reference. That remainder is the
row ``other``. A source without a file is silent in the song (MoisesDB writes only the
stems a song has), so the remainder's ideal content is exactly ``other.wav`` whatever was
picked; but ``other`` means what the dataset says: in MUSDB (four sources) it holds guitar
and piano, in a six-source folder it does not. A song without ``other.wav`` has no
``other`` row; ``.wav`` files of other names are ignored (and reported).

The systems, each through the real pipeline (:meth:`EnsembleSeparator.separate` with an
``ensemble=``): "A alone" (blend, every weight of A's sources 1.0), "B alone" (blend, every
weight 0.0) and each strategy of :data:`separation.config.STRATEGIES` with its default
weights (``--blend SOURCE=W`` overrides the blend column's), all with ``always``, so each
strategy is applied wherever it can be: a request would fall back to route where a
strategy costs a model pass the pick does not otherwise need (blend on MUSDB's pick), and
the column would repeat route's figures. Where a strategy cannot apply (refine with no
guitar, piano or other to split out, as on MUSDB's pick) the engine runs route, and the
JSON says so per song. One separator with a temporary source cache serves them all: each
model's estimate of a source is computed once per song, by the first system that needs it,
and every later system is served the same cached estimates, so the strategies are compared
on identical model estimates (stderr shows each system's model passes; the strategies'
are 0 where A alone and B alone needed everything they use). A system has a row only
where the track comes from its own model(s): model A has no guitar or piano, and its
remainder holds B's guitar or piano whenever those are picked, so "A alone" scores drums,
bass and vocals, and ``other`` only on songs whose pick is within those three.

Scoring is museval's (``museval.evaluate``: BSS Eval v4, the images version with
time-invariant 512-tap distortion filters, on 1 s frames without overlap at 44.1 kHz, as
``museval.eval_mus_track`` scores a MUSDB18 track); in this version a frame's SDR is the
reference's energy over that of estimate minus reference, in dB, so a source's figure does
not depend on the others scored with it, but a frame where any of them (reference or
estimate) is silent is NaN for all of them. A song with exactly MUSDB's four references
(drums, bass, vocals, other: every ``.stem.mp4``, a MUSDB18-HQ folder) is scored with the
four together, as ``eval_mus_track`` does, so figures compare with published ones; any other
song's sources are scored one by one, since in real multitracks guitar and piano are silent
for long stretches and would otherwise blank those frames of every source. A song's figure
per source is the median SDR over its frames with NaN frames left out, as museval's
``TrackStore`` and ``EvalStore`` aggregate; a table cell is the median of those over the
songs that have the row. Unlike museval's store, which turns an infinite frame (estimate
equal to its reference) into NaN, such a frame counts as +inf here. With random test
models the figures are a smoke run; with the pretrained weights (``--models`` = a folder
filled by ``demix models fetch``) they are the quality figures.

    python bench/quality.py [FOLDER] [--models DIR] [--device auto] [--blend vocals=0.5 ...]
                            [--json FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import museval
import numpy as np

from separation import SOURCES, EnsembleSeparator, SeparatorConfig, plan_tracks, strategies
from separation.audio import Audio, AudioInfo, decode_audio
from separation.config import STRATEGIES, Ensemble
from separation.random_models import write_model_repo

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "musdb7"
# Stream order of a MUSDB .stem.mp4 file.
STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
EVALUATED = ("drums", "bass", "other", "vocals")
MIXTURE_FILE = "mixture.wav"
SAMPLERATE = 44100
# museval's MUSDB18 setting: 1 s frames, no overlap.
FRAME = SAMPLERATE
# The row of the remainder track, and the source never picked unless all six are.
REMAINDER = "other"
# What model A (4 sources) delivers as its own; its `other` still holds guitar and piano.
A_SOURCES = frozenset({"drums", "bass", "vocals"})
A_ALONE = "A alone"
B_ALONE = "B alone"


def read_stream(path: Path, index: int) -> np.ndarray:
    """Stream ``index`` of ``path`` as 44.1 kHz stereo float32 ``(2, n)``."""
    return decode_audio(path, stream=index).samples


# -- songs -------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Song:
    """A song to separate and the references to score the result against.

    Attributes:
        name: the file name without ``.stem.mp4``, or the folder's name.
        mixture: the song, 44.1 kHz stereo float32 ``(2, n)``.
        references: source name (of :data:`separation.SOURCES`) to its ``(2, n)`` signal,
            for the sources the song has a file for.
    """

    name: str
    mixture: np.ndarray
    references: Mapping[str, np.ndarray]

    @property
    def pick(self) -> tuple[str, ...]:
        """The sources to ask for: every one with a reference except ``other``, or all six
        when all six have one (in :data:`separation.SOURCES` order; may be empty)."""
        if set(self.references) >= set(SOURCES):
            return SOURCES
        return tuple(s for s in SOURCES if s in self.references and s != REMAINDER)

    @property
    def remainder_track(self) -> str:
        """The delivered track that holds what the pick leaves: ``rest``, ``no_x``, or
        ``other`` when all six are picked (the engine's residual either way)."""
        if self.pick == SOURCES:
            return REMAINDER
        tracks = plan_tracks(self.pick)
        (remainder,) = (t for t in tracks if t not in self.pick)
        return remainder

    @cached_property
    def targets(self) -> dict[str, np.ndarray]:
        """Row name to reference, in :data:`separation.SOURCES` order: each picked source
        but ``other``, and ``other`` (the remainder track's row) as the sum of the
        references not picked, when there is one."""
        named = [s for s in self.pick if s != REMAINDER]
        targets = {s: self.references[s] for s in named}
        rest = [r for s, r in self.references.items() if s not in named]
        if rest:
            n = max(r.shape[1] for r in rest)
            targets[REMAINDER] = sum((_fit(r, n) for r in rest), np.zeros((2, n), np.float32))
        return targets

    @property
    def scored_jointly(self) -> bool:
        """Whether the rows are scored together (a frame silent in one is NaN for all):
        exactly for MUSDB's four, as ``museval.eval_mus_track`` scores them."""
        return set(self.references) == set(EVALUATED)

    def audio(self) -> Audio:
        """The mixture as the engine takes it."""
        info = AudioInfo(self.mixture.shape[1] / SAMPLERATE, SAMPLERATE, 2, "pcm", None, None)
        return Audio(samples=self.mixture, info=info)


def find_songs(folder: Path) -> list[Path]:
    """The songs in ``folder``: its ``*.stem.mp4`` files, then its subfolders holding a
    ``mixture.wav``, each sorted by name (not recursive)."""
    if not folder.is_dir():
        return []
    stems = sorted(folder.glob("*.stem.mp4"))
    folders = sorted(p for p in folder.iterdir() if (p / MIXTURE_FILE).is_file())
    return stems + folders


def read_song(path: Path) -> Song:
    """The :class:`Song` at ``path``: a MUSDB ``.stem.mp4`` file or a song folder."""
    if path.is_dir():
        return read_folder_song(path)
    references = {name: read_stream(path, index) for name, index in STREAMS.items()}
    mixture = references.pop("mixture")
    return Song(path.name.removesuffix(".stem.mp4"), mixture, references)


def read_folder_song(path: Path) -> Song:
    """A song folder: ``mixture.wav`` and a ``<source>.wav`` per source it has, each
    decoded by ffmpeg to 44.1 kHz stereo float32 whatever its rate and sample format.
    ``.wav`` files of other names (stems a converter did not map to the six) are in no
    reference, so they are named on stderr."""
    mixture = decode_audio(path / MIXTURE_FILE).samples
    references = {
        source: decode_audio(path / f"{source}.wav").samples
        for source in SOURCES
        if (path / f"{source}.wav").is_file()
    }
    known = {MIXTURE_FILE, *(f"{s}.wav" for s in SOURCES)}
    ignored = sorted(p.name for p in path.glob("*.wav") if p.name not in known)
    if ignored:
        print(f"{path.name}: ignored {', '.join(ignored)}", file=sys.stderr)
    return Song(path.name, mixture, references)


# -- scoring -----------------------------------------------------------------------------


# Per song: (row, frames scored, digest of the estimate) to that estimate's frame SDRs.
FrameMemo = dict[tuple[str, int, bytes], np.ndarray]


def frame_sdrs(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    memo: FrameMemo | None = None,
) -> dict[str, np.ndarray]:
    """SDR in dB per 1 s frame of each source in ``estimates``, by museval's BSS Eval v4,
    the sources scored together.

    ``references`` and ``estimates`` map a source to its ``(channels, n)`` signal at 44.1 kHz;
    each estimate is scored against the reference of the same name (labelled, no
    permutation). Estimates are cut or zero-padded to the references' length, as museval
    does. A frame where any reference or estimate is silent is NaN for every source, as
    in museval; a source whose whole reference or estimate is silent (which museval
    refuses) blanks every frame.

    In BSS Eval v4's images version a source's frame SDR depends only on its own
    reference and estimate (``museval.metrics._bss_crit``: the reference's energy over
    that of estimate minus reference), so each source goes through museval alone and the
    silent frames are then blanked across them: museval's figures (equal to within
    rounding, tests/bench/test_quality_metric.py), in a quarter of the time for four
    sources, since museval's joint pass projects every estimate onto every reference.

    Args:
        references: source to reference.
        estimates: source to estimate, for sources of ``references``.
        memo: frame SDRs already computed, filled in here; its keys hold the source's
            name, so one memo serves one song's references.
    """
    sources = list(estimates)
    n = min(references[s].shape[1] for s in sources)
    frames = {}
    for source in sources:
        estimate = _fit(estimates[source], n)
        key = (source, n, _digest(estimate))
        found = memo.get(key) if memo is not None else None
        if found is None:
            found = _source_frame_sdrs(references[source][:, :n], estimate)
            if memo is not None:
                memo[key] = found
        frames[source] = found
    blank = np.any([np.isnan(f) for f in frames.values()], axis=0)
    return {source: np.where(blank, np.nan, f) for source, f in frames.items()}


def _source_frame_sdrs(reference: np.ndarray, estimate: np.ndarray) -> np.ndarray:
    """One source's frame SDRs by ``museval.evaluate`` (NaN where either is silent)."""
    if _silent(reference) or _silent(estimate):
        # museval's frame count: whole frames only, at least one.
        return np.full(max(1, reference.shape[1] // FRAME), np.nan)
    refs = reference.T[None].astype(np.float64)
    ests = estimate.T[None].astype(np.float64)
    sdr, _isr, _sir, _sar = museval.evaluate(refs, ests, win=FRAME, hop=FRAME, mode="v4")
    return np.asarray(sdr[0], dtype=np.float64)


def _silent(signal: np.ndarray) -> bool:
    # museval's test (``_any_source_silent``): the channels' sum is 0 at every sample.
    return not np.any(signal.sum(axis=0))


def _fit(signal: np.ndarray, n: int) -> np.ndarray:
    if signal.shape[1] >= n:
        return signal[:, :n]
    return np.pad(signal, [(0, 0), (0, n - signal.shape[1])])


def _digest(samples: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(samples, dtype=np.float32).data.cast("B")).digest()


def nan_median(values: np.ndarray | Sequence[float]) -> float:
    """The median of the values that are not NaN (NaN when none is), as museval aggregates."""
    values = np.asarray(values, dtype=np.float64)
    kept = values[~np.isnan(values)]
    return float(np.median(kept)) if kept.size else float("nan")


def evaluate(
    references: Mapping[str, np.ndarray],
    estimates: Mapping[str, np.ndarray],
    memo: FrameMemo | None = None,
) -> dict[str, float]:
    """Per source of ``estimates`` (scored together, see :func:`frame_sdrs`): the median
    over frames of museval's BSS Eval v4 SDR."""
    return {
        source: nan_median(sdrs) for source, sdrs in frame_sdrs(references, estimates, memo).items()
    }


def score_song(
    song: Song,
    tracks: Mapping[str, np.ndarray],
    rows: Iterable[str] | None = None,
    memo: FrameMemo | None = None,
) -> dict[str, float]:
    """A song's figure per row: the median over frames of the SDR of the delivered track
    against the row's reference (:attr:`Song.targets`).

    Args:
        song: the song and its references.
        tracks: what the engine delivered for ``song.pick``: track name to ``(2, n)``.
        rows: the rows to score (default: all of ``song.targets``); others are left out.
        memo: this song's frame SDRs already computed (see :func:`frame_sdrs`): systems
            often deliver tracks bit for bit alike (route takes A's drums, bass and
            vocals), and museval is the slow part of the benchmark.

    Returns:
        Row to SDR in dB, in :attr:`Song.targets` order. MUSDB's four are scored together
        (see :attr:`Song.scored_jointly`), any other rows one by one.
    """
    targets = song.targets
    chosen = set(targets if rows is None else rows)
    wanted = [row for row in targets if row in chosen]
    estimates = {row: tracks[song.remainder_track if row == REMAINDER else row] for row in wanted}
    groups = [wanted] if song.scored_jointly else [[row] for row in wanted]
    scores: dict[str, float] = {}
    for group in groups:
        if group:
            scores.update(evaluate(targets, {row: estimates[row] for row in group}, memo))
    return {row: scores[row] for row in wanted}


# -- systems -----------------------------------------------------------------------------


@dataclass(frozen=True)
class System:
    """A column of the table: an ensemble setting and what it delivers on its own.

    Attributes:
        name: the column's title.
        ensemble: passed to :meth:`EnsembleSeparator.separate`.
        own: the sources whose estimate comes from this system's model(s) alone; None for
            all six.
    """

    name: str
    ensemble: Ensemble
    own: frozenset[str] | None = None

    def rows(self, song: Song) -> list[str]:
        """The rows of ``song`` this system delivers: each picked source it owns, and the
        remainder when it owns every picked source (the remainder is the mixture minus
        the picked estimates, so one foreign estimate makes it foreign too)."""
        named = [s for s in song.pick if s != REMAINDER]
        owned = [s for s in named if self.own is None or s in self.own]
        rows = [r for r in song.targets if r in owned]
        if REMAINDER in song.targets and len(owned) == len(named):
            rows.append(REMAINDER)
        return rows


def parse_blend(values: Iterable[str]) -> dict[str, float]:
    """``["vocals=0.5", ...]`` as ``{"vocals": 0.5, ...}``.

    Raises:
        ValueError: a value is not ``SOURCE=NUMBER``.
    """
    weights = {}
    for value in values:
        source, sign, weight = value.partition("=")
        if not sign:
            raise ValueError(f"blend weight {value!r} is not SOURCE=WEIGHT_A")
        weights[source.strip()] = float(weight)
    return weights


def make_systems(blend: Mapping[str, float] | None = None) -> list[System]:
    """A alone, B alone, then every strategy with its default weights (``blend`` overrides
    the blend strategy's), each with ``always``.

    ``always`` because a request falls back to route where a strategy would cost a model
    pass the pick does not otherwise need (blend over MUSDB's pick drums + bass + vocals,
    which A alone serves), and the columns would then repeat route's figures: the table
    shows what each strategy gives, and the fallback only decides what a request pays.

    Raises:
        ValueError: ``blend`` names an unknown source or a weight outside 0..1.
    """
    # A's guitar and piano weights stay at 0 (A has none): B serves them, so those rows,
    # and a remainder that holds them, are not A's (``own``).
    only_a = {s: 1.0 for s in SOURCES if s not in ("guitar", "piano")}
    systems = [
        System(A_ALONE, Ensemble("blend", only_a, always=True), own=A_SOURCES),
        System(B_ALONE, Ensemble("blend", {s: 0.0 for s in SOURCES}, always=True)),
    ]
    for strategy in STRATEGIES:
        weights = dict(blend or {}) if strategy == "blend" else {}
        systems.append(System(strategy, Ensemble(strategy, weights, always=True)))
    return systems


# -- the run -----------------------------------------------------------------------------


@dataclass
class Results:
    """What a run measured.

    Attributes:
        songs: song name to its pick.
        sdr: system name to song name to row to the song's SDR figure.
        model_passes: system name to the sub-model passes its separations ran (0 when all
            its estimates came from the cache).
        in_effect: system name to song name to the strategy the engine applied to the
            song's pick (:attr:`separation.strategies.Plan.strategy`: ``refine`` is
            ``route`` on a pick without guitar, piano or other to split out).
    """

    songs: dict[str, tuple[str, ...]]
    sdr: dict[str, dict[str, dict[str, float]]]
    model_passes: dict[str, int]
    in_effect: dict[str, dict[str, str]]

    def rows(self) -> list[str]:
        """The rows some song has, in :data:`separation.SOURCES` order."""
        present = {row for per_song in self.sdr.values() for f in per_song.values() for row in f}
        return [s for s in SOURCES if s in present]

    def cell(self, system: str, row: str) -> tuple[float, int]:
        """The median over songs of ``system``'s figure for ``row``, and how many songs
        gave one (NaN and 0 when none did)."""
        values = [f[row] for f in self.sdr.get(system, {}).values() if row in f]
        return (nan_median(values) if values else float("nan")), len(values)

    def songs_with(self, row: str) -> int:
        """How many songs have a reference for ``row`` (by any system)."""
        return len({song for per in self.sdr.values() for song, f in per.items() if row in f})


def measure(
    separator: EnsembleSeparator, song_paths: Iterable[Path], systems: Sequence[System]
) -> Results:
    """Separate each song with each system and score it (one song in memory at a time)."""
    names = [s.name for s in systems]
    results = Results({}, {n: {} for n in names}, dict.fromkeys(names, 0), {n: {} for n in names})
    for path in song_paths:
        song = read_song(path)
        if not song.pick:
            print(f"skipped {song.name}: no source to pick", file=sys.stderr, flush=True)
            continue
        results.songs[song.name] = song.pick
        audio = song.audio()
        memo: FrameMemo = {}
        for system in _cache_friendly(systems):
            before = separator.model_passes
            tracks = separator.separate(audio, song.pick, ensemble=system.ensemble)
            passes = separator.model_passes - before
            results.model_passes[system.name] += passes
            in_effect = strategies.plan(system.ensemble, song.pick).strategy
            results.in_effect[system.name][song.name] = in_effect
            rows = system.rows(song)
            results.sdr[system.name][song.name] = score_song(song, tracks, rows, memo)
            print(
                f"done: {system.name} on {song.name} ({passes} model passes)",
                file=sys.stderr,
                flush=True,
            )
    return results


def _cache_friendly(systems: Sequence[System]) -> list[System]:
    """``systems`` with B alone first: a request caches each estimate its model computed
    that its ensemble can use, so B alone stores all six of B's, where A alone (run first)
    would store only B's guitar and piano and leave B to run again for B alone."""
    return sorted(systems, key=lambda system: system.name != B_ALONE)


def format_sdr(value: float) -> str:
    """A figure as the table shows it: two decimals, ``inf``, or ``—`` for none."""
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return f"{value:.2f}"


def table(results: Results, systems: Sequence[System]) -> list[str]:
    """The table's markdown lines: a row per source, a column per system. A cell is the
    median over songs; one from fewer songs than the row has says how many, as ``(n)``."""
    lines = [
        "| source | songs | " + " | ".join(s.name for s in systems) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in systems) + " |",
    ]
    for row in results.rows():
        total = results.songs_with(row)
        cells = []
        for system in systems:
            value, n = results.cell(system.name, row)
            partial = f" ({n})" if 0 < n < total else ""
            cells.append(format_sdr(value) + partial)
        lines.append(f"| {row} | {total} | " + " | ".join(cells) + " |")
    return lines


def _json_number(value: float) -> float | str | None:
    # Strict JSON has no NaN or infinity: NaN (no figure) is null, an infinity a string.
    if math.isnan(value):
        return None
    if math.isinf(value):
        return "+inf" if value > 0 else "-inf"
    return value


def to_json(results: Results, systems: Sequence[System], models: str) -> dict[str, Any]:
    """The run's numbers: ``table`` (row to system to the median over songs, or null),
    ``songs`` (song to its pick, the strategy each system's request applied, and each
    system's figure per row), ``systems`` (name to
    its ensemble), ``model_passes`` and ``models``. Infinite figures are ``"+inf"`` or
    ``"-inf"``."""
    return {
        "models": models,
        "metric": "museval BSS Eval v4 SDR (dB), median over 1 s frames, then over songs",
        "systems": {s.name: s.ensemble.to_dict() for s in systems},
        "model_passes": dict(results.model_passes),
        "table": {
            row: {s.name: _json_number(results.cell(s.name, row)[0]) for s in systems}
            for row in results.rows()
        },
        "songs": {
            song: {
                "pick": list(pick),
                "in_effect": {s.name: results.in_effect[s.name][song] for s in systems},
                "sdr": {
                    s.name: {
                        row: _json_number(v) for row, v in results.sdr[s.name].get(song, {}).items()
                    }
                    for s in systems
                },
            }
            for song, pick in results.songs.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when it ran, 2 when there is nothing to measure."""
    parser = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("folder", type=Path, nargs="?", default=DEFAULT_FOLDER)
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="demucs model folder (default: tiny random models, a smoke run)",
    )
    parser.add_argument("--names", default="htdemucs_ft,htdemucs_6s", help="models A,B")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--blend",
        nargs="*",
        default=[],
        metavar="SOURCE=WEIGHT_A",
        help="the blend column's weights (default: the strategy's defaults)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    try:
        systems = make_systems(parse_blend(args.blend))
    except ValueError as exc:
        parser.error(str(exc))

    song_paths = find_songs(args.folder)
    if not song_paths:
        print(f"no .stem.mp4 files or song folders in {args.folder}", file=sys.stderr)
        return 2
    names = tuple(args.names.split(","))
    with tempfile.TemporaryDirectory(prefix="demix-quality-") as tmp:
        repo = args.models or write_model_repo(Path(tmp) / "models", names=names)
        config = SeparatorConfig(
            models=names, model_repo=repo, device=args.device, cache_dir=Path(tmp) / "cache"
        )
        results = measure(EnsembleSeparator(config), song_paths, systems)
    if not results.songs:
        print(f"no song in {args.folder} has a source to pick", file=sys.stderr)
        return 2

    models = str(repo) if args.models else "tiny random (smoke run)"
    blend = next(s for s in systems if s.name == "blend")
    print(f"models: {models}; songs: {len(results.songs)}")
    print(f"blend: {blend.ensemble.describe()}")
    print()
    print(
        "SDR in dB: museval BSS Eval v4, median over 1 s frames per song, "
        "then median over the songs with that source; (n): from n songs only"
    )
    print()
    for line in table(results, systems):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(to_json(results, systems, models), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
