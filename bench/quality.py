"""Separation quality on MUSDB-format ``.stem.mp4`` files: SDR per source for model A alone,
model B alone and the ensemble.

Each system answers the pick drums + bass + vocals through the real pipeline; MUSDB's
``other`` (everything else) is then the ``rest`` track. SDR is BSS Eval's (mir_eval's
``bss_eval_sources``, 512-tap filter, labelled stems, per channel, averaged), checked
against mir_eval's test vectors by tests/separation/test_metrics.py; the plain SDR
(no filter) is shown next to it. With random test models the figures are a smoke run;
with the pretrained weights (``--models`` = a folder filled by ``demix models fetch``)
they are the quality figures.

    python bench/quality.py [FOLDER] [--models DIR] [--device auto] [--blend vocals=0.5 ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from separation import EnsembleSeparator, SeparatorConfig
from separation.audio import Audio, AudioInfo
from separation.metrics import bss_eval_sources, signal_to_distortion
from separation.random_models import write_model_repo

DEFAULT_FOLDER = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "musdb7"
# Stream order of a MUSDB .stem.mp4 file.
STREAMS = {"mixture": 0, "drums": 1, "bass": 2, "other": 3, "vocals": 4}
EVALUATED = ("drums", "bass", "other", "vocals")
PICK = ["drums", "bass", "vocals"]


def read_stream(path: Path, index: int) -> np.ndarray:
    """Stream ``index`` of ``path`` as 44.1 kHz stereo float32 ``(2, n)``."""
    raw = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            f"0:{index}",
            "-f",
            "f32le",
            "-ar",
            "44100",
            "-ac",
            "2",
            "pipe:1",
        ],
        capture_output=True,
        check=True,
    ).stdout
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, 2).T.copy()


def evaluate(references: dict[str, np.ndarray], estimates: dict[str, np.ndarray]) -> dict:
    """Per source: (BSS Eval SDR averaged over channels, plain SDR over both channels)."""
    n = min(len(references["mixture"][0]), *(len(e[0]) for e in estimates.values()))
    figures: dict[str, tuple[float, float]] = {}
    per_channel = []
    for channel in range(2):
        refs = np.stack([references[s][channel, :n] for s in EVALUATED])
        ests = np.stack([estimates[s][channel, :n] for s in EVALUATED])
        per_channel.append(bss_eval_sources(refs, ests, compute_permutation=False).sdr)
    bss = np.mean(per_channel, axis=0)
    for k, source in enumerate(EVALUATED):
        plain = signal_to_distortion(references[source][:, :n], estimates[source][:, :n])
        figures[source] = (float(bss[k]), plain)
    return figures


def parse_blend(values: list[str]) -> dict[str, float]:
    weights = {}
    for value in values:
        source, _, weight = value.partition("=")
        weights[source] = float(weight)
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
        results: dict[str, dict[str, dict[str, tuple[float, float]]]] = {}
        for song in songs:
            references = {name: read_stream(song, index) for name, index in STREAMS.items()}
            mix = references["mixture"]
            info = AudioInfo(mix.shape[1] / 44100, 44100, 2, "aac", None, None)
            audio = Audio(samples=mix, info=info)
            for system, separator in separators.items():
                tracks = separator.separate(audio, PICK)
                estimates = {**tracks, "other": tracks["rest"]}
                results.setdefault(system, {})[song.name] = evaluate(references, estimates)
                print(f"done: {system} on {song.name}", file=sys.stderr, flush=True)

    short = [song.name.removesuffix(".stem.mp4") for song in songs]
    print(
        f"models: {repo if args.models else 'tiny random (smoke run)'}; "
        f"ensemble blend weights: {dict(systems['ensemble'].blend_weights)}"
    )
    print()
    print("SDR in dB: BSS Eval (plain)")
    print()
    print("| system | source | " + " | ".join(short) + " | mean |")
    print("| --- | --- | " + " | ".join("---:" for _ in short) + " | ---: |")
    for system, per_song in results.items():
        for source in EVALUATED:
            cells = [per_song[song.name][source] for song in songs]
            mean_bss = float(np.mean([c[0] for c in cells]))
            mean_plain = float(np.mean([c[1] for c in cells]))
            row = " | ".join(f"{b:.2f} ({p:.2f})" for b, p in cells)
            print(f"| {system} | {source} | {row} | {mean_bss:.2f} ({mean_plain:.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
