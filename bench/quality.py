"""Separation quality on MUSDB-format ``.stem.mp4`` files: SDR per source for model A alone,
model B alone and the ensemble, measured as MUSDB18 results are published.

Each system answers the pick drums + bass + vocals through the real pipeline; MUSDB's
``other`` (everything else) is then the ``rest`` track. The four sources of a song are
scored together by museval (``museval.evaluate``: BSS Eval v4, the images version with
time-invariant 512-tap distortion filters, on 1 s frames without overlap at 44.1 kHz, as
``museval.eval_mus_track`` scores a MUSDB18 track; in this version a frame's SDR is the
reference's energy over that of estimate minus reference, in dB). A frame where any
reference or estimate is silent is NaN. A song's figure per source is the median SDR over
its frames with NaN frames left out, as museval's ``TrackStore`` and ``EvalStore``
aggregate; the last column is the median over songs. Unlike museval's store, which turns
an infinite frame (estimate equal to its reference) into NaN, such a frame counts as +inf
here. With random test models the figures are a smoke run; with the pretrained weights
(``--models`` = a folder filled by ``demix models fetch``) they are the quality figures.

    python bench/quality.py [FOLDER] [--models DIR] [--device auto] [--blend vocals=0.5 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import museval
import numpy as np

from separation import EnsembleSeparator, SeparatorConfig
from separation.audio import Audio, AudioInfo, decode_audio
from separation.random_models import write_model_repo

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "musdb7"
# Stream order of a MUSDB .stem.mp4 file.
STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
EVALUATED = ("drums", "bass", "other", "vocals")
SAMPLERATE = 44100
# museval's MUSDB18 setting: 1 s frames, no overlap.
FRAME = SAMPLERATE
PICK = ["drums", "bass", "vocals"]


def read_stream(path: Path, index: int) -> np.ndarray:
    """Stream ``index`` of ``path`` as 44.1 kHz stereo float32 ``(2, n)``."""
    return decode_audio(path, stream=index).samples


def frame_sdrs(
    references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """SDR in dB per 1 s frame of each source in ``estimates``, by museval's BSS Eval v4.

    ``references`` and ``estimates`` map a source to its ``(channels, n)`` signal at 44.1 kHz;
    the sources of ``estimates`` are scored together against the references of the same
    names (labelled, no permutation). Estimates are cut or zero-padded to the references'
    length, as museval does. A frame where any reference or estimate is silent is NaN.
    """
    sources = list(estimates)
    n = min(references[s].shape[1] for s in sources)
    refs = np.stack([references[s][:, :n].T for s in sources]).astype(np.float64)
    ests = np.stack([_fit(estimates[s], n).T for s in sources]).astype(np.float64)
    sdr, _isr, _sir, _sar = museval.evaluate(refs, ests, win=FRAME, hop=FRAME, mode="v4")
    return {source: np.asarray(sdr[k], dtype=np.float64) for k, source in enumerate(sources)}


def _fit(signal: np.ndarray, n: int) -> np.ndarray:
    if signal.shape[1] >= n:
        return signal[:, :n]
    return np.pad(signal, [(0, 0), (0, n - signal.shape[1])])


def nan_median(values: np.ndarray | list[float]) -> float:
    """The median of the values that are not NaN (NaN when none is), as museval aggregates."""
    values = np.asarray(values, dtype=np.float64)
    kept = values[~np.isnan(values)]
    return float(np.median(kept)) if kept.size else float("nan")


def evaluate(
    references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]
) -> dict[str, float]:
    """Per source of ``estimates``: the median over frames of museval's BSS Eval v4 SDR."""
    return {source: nan_median(sdrs) for source, sdrs in frame_sdrs(references, estimates).items()}


def parse_blend(values: list[str]) -> dict[str, float]:
    weights = {}
    for value in values:
        source, _, weight = value.partition("=")
        weights[source] = float(weight)
    return weights


def main(argv: list[str] | None = None) -> int:
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
        help="the ensemble's blend weights (default: the configured ones)",
    )
    args = parser.parse_args(argv)

    songs = sorted(args.folder.glob("*.stem.mp4"))
    if not songs:
        print(f"no .stem.mp4 files in {args.folder}", file=sys.stderr)
        return 2
    names = tuple(args.names.split(","))
    with tempfile.TemporaryDirectory(prefix="demix-quality-") as tmp:
        repo = args.models or write_model_repo(Path(tmp) / "models", names=names)
        base = {"model_repo": repo, "device": args.device, "models": names}
        systems = {
            "A alone": SeparatorConfig(**base, blend_weights={s: 1.0 for s in PICK}),
            "B alone": SeparatorConfig(**base, blend_weights={s: 0.0 for s in PICK}),
            "ensemble": SeparatorConfig(**base, blend_weights=parse_blend(args.blend)),
        }
        separators = {name: EnsembleSeparator(config) for name, config in systems.items()}
        results: dict[str, dict[str, dict[str, float]]] = {}
        for song in songs:
            references = {name: read_stream(song, index) for name, index in STREAMS.items()}
            mix = references["mixture"]
            info = AudioInfo(mix.shape[1] / SAMPLERATE, SAMPLERATE, 2, "aac", None, None)
            audio = Audio(samples=mix, info=info)
            for system, separator in separators.items():
                tracks = separator.separate(audio, PICK)
                estimates = {s: tracks["rest" if s == "other" else s] for s in EVALUATED}
                results.setdefault(system, {})[song.name] = evaluate(references, estimates)
                print(f"done: {system} on {song.name}", file=sys.stderr, flush=True)

    short = [song.name.removesuffix(".stem.mp4") for song in songs]
    print(
        f"models: {repo if args.models else 'tiny random (smoke run)'}; "
        f"ensemble blend weights: {dict(systems['ensemble'].blend_weights)}"
    )
    print()
    print(
        "SDR in dB: museval BSS Eval v4, median over 1 s frames per song; "
        "last column: median over songs"
    )
    print()
    print("| system | source | " + " | ".join(short) + " | median |")
    print("| --- | --- | " + " | ".join("---:" for _ in short) + " | ---: |")
    for system, per_song in results.items():
        for source in EVALUATED:
            cells = [per_song[song.name][source] for song in songs]
            row = " | ".join(f"{sdr:.2f}" for sdr in cells)
            print(f"| {system} | {source} | {row} | {nan_median(cells):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
