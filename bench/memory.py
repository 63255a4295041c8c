"""Peak memory of a full six-track request against song length, tiny models.

Each length runs in its own process (decode -> separate all six -> encode), which reports
its peak RSS; the parent prints them with the growth per second of audio, fitted over the
lengths. The input songs are made by ffmpeg (not in Python, so they cost the measured
process nothing).

    python bench/memory.py [--minutes 1 5 10 20] [--no-cache]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from songs import make_song


def child(song: Path, models: Path, out: Path, cache: Path | None) -> None:
    """One measured request; prints a JSON line."""
    from separation import SOURCES, EnsembleSeparator, SeparatorConfig, decode_audio
    from separation.audio import encode_tracks

    separator = EnsembleSeparator(SeparatorConfig(model_repo=models, device="cpu", cache_dir=cache))
    separator.warm_up()
    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    audio = decode_audio(song)
    decoded = time.perf_counter()
    tracks = separator.separate(audio, SOURCES)
    separated = time.perf_counter()
    encode_tracks(tracks, out, "song")
    encoded = time.perf_counter()
    print(
        json.dumps(
            {
                "duration_s": audio.duration_s,
                "baseline_mb": baseline_kb / 1024,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "decode_s": decoded - start,
                "separate_s": separated - decoded,
                "encode_s": encoded - separated,
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--no-cache", action="store_true", help="measure without the cache")
    parser.add_argument(
        "--child", nargs=4, metavar=("SONG", "MODELS", "OUT", "CACHE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        song, models, out, cache = args.child
        child(Path(song), Path(models), Path(out), None if cache == "-" else Path(cache))
        return 0

    from separation.random_models import write_model_repo

    rows = []
    with tempfile.TemporaryDirectory(prefix="demix-memory-") as tmp_name:
        tmp = Path(tmp_name)
        models = write_model_repo(tmp / "models")
        for minutes in args.minutes:
            song = make_song(tmp / f"song-{minutes}.mp3", minutes * 60)
            cache = "-" if args.no_cache else str(tmp / f"cache-{minutes}")
            result = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    str(song),
                    str(models),
                    str(tmp / f"out-{minutes}"),
                    cache,
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(result.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
            song.unlink()

    print()
    print("| song | peak RSS | models+runtime | growth | decode | separate | encode |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(
            f"| {row['duration_s'] / 60:.0f} min | {row['peak_mb']:.0f} MB "
            f"| {row['baseline_mb']:.0f} MB | {row['peak_mb'] - row['baseline_mb']:.0f} MB "
            f"| {row['decode_s']:.1f} s | {row['separate_s']:.1f} s | {row['encode_s']:.1f} s |"
        )
    if len(rows) >= 2:
        xs = [row["duration_s"] for row in rows]
        ys = [(row["peak_mb"] - row["baseline_mb"]) * 2**20 for row in rows]
        mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mean_x) ** 2 for x in xs
        )
        stereo = 2 * 4 * 44100
        print()
        print(
            f"growth: {slope / 1e6:.2f} MB per second of audio "
            f"({slope / stereo:.1f}x one 44.1 kHz stereo float32 signal)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
