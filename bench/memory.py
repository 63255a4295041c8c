"""Peak memory of a full six-track request against song length, tiny models.

Each length runs in its own process, which does what the worker does with a song: decode,
separate all six stems into raw track files (cache on unless ``--no-cache``), encode them.
It reports its peak RSS above two baselines: the loaded models, and the loaded models
after one 10-second request (the runtime's fixed working set: allocator pools, kernels'
buffers, threads), which is what a running worker holds between songs. The parent prints
them with the memory per second of audio and the growth fitted over the lengths. The input
songs are made by ffmpeg (not in Python, so they cost the measured process nothing).
Target: at most 1 MB per second of audio above the models, up to a 60-minute song (issue
19's: 0.5 MB). The song is decoded to files in the request's folder, as the worker decodes
it; ``--in-memory`` decodes it into an array instead (4 bytes per sample and channel, about
0.35 MB per second of audio on top).

    python bench/memory.py [--minutes 1 10 30 60] [--no-cache] [--precision auto|fp32|bf16]
                           [--in-memory]

``--precision`` is the separator's (``auto``, the default, is bf16 on a CPU with AVX-512 BF16
or AMX, as in a worker); each row says which one ran.
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

TARGET_MB_PER_S = 1.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(
    song: Path, models: Path, out: Path, cache: Path | None, precision: str, in_memory: bool
) -> None:
    """One measured request; prints a JSON line."""
    import numpy as np

    from separation import SAMPLERATE, SOURCES, EnsembleSeparator, SeparatorConfig, decode_audio
    from separation.audio import Audio, AudioInfo, encode_tracks

    config = SeparatorConfig(
        model_repo=models,
        device="cpu",
        cache_dir=cache,
        precision=precision,  # type: ignore[arg-type]
    )
    separator = EnsembleSeparator(config)
    separator.warm_up()
    models_mb = _peak_mb()
    noise = np.random.default_rng(0).standard_normal((2, 10 * SAMPLERATE)).astype(np.float32)
    warm = Audio(samples=noise * 0.1, info=AudioInfo(10.0, SAMPLERATE, 2, "pcm_f32le"))
    encode_tracks(separator.separate_to_files(warm, SOURCES, out / "warm-raw"), out, "warm")
    del warm, noise
    warm_mb = _peak_mb()

    start = time.perf_counter()
    # As the worker decodes it: to files in the job's folder (``--in-memory``: an array).
    audio = decode_audio(song, spool_dir=None if in_memory else out)
    decoded = time.perf_counter()
    decode_peak_mb = _peak_mb()
    tracks = separator.separate_to_files(audio, SOURCES, out / "raw")
    separated = time.perf_counter()
    separate_peak_mb = _peak_mb()
    encode_tracks(tracks, out, "song")
    encoded = time.perf_counter()
    print(
        json.dumps(
            {
                "duration_s": audio.duration_s,
                "precision": separator.precision,
                "song_on": "memory" if in_memory else "disk",
                "models_mb": models_mb,
                "warm_mb": warm_mb,
                "decode_peak_mb": decode_peak_mb,
                "separate_peak_mb": separate_peak_mb,
                "peak_mb": _peak_mb(),
                "decode_s": decoded - start,
                "separate_s": separated - decoded,
                "encode_s": encoded - separated,
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30, 60])
    parser.add_argument("--no-cache", action="store_true", help="measure without the cache")
    parser.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    parser.add_argument(
        "--in-memory",
        action="store_true",
        help="decode the song into memory, not to files as the worker does",
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("SONG", "MODELS", "OUT", "CACHE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        song, models, out, cache = args.child
        child(
            Path(song),
            Path(models),
            Path(out),
            None if cache == "-" else Path(cache),
            args.precision,
            args.in_memory,
        )
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
                    "--precision",
                    args.precision,
                    *(["--in-memory"] if args.in_memory else []),
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
    print(
        "| song | decoded to | precision | peak RSS | over models | per audio second "
        "| over warm runtime | per audio second | decode | separate | encode |"
    )
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        over_models = row["peak_mb"] - row["models_mb"]
        over_warm = row["peak_mb"] - row["warm_mb"]
        seconds = row["duration_s"]
        print(
            f"| {seconds / 60:.0f} min | {row['song_on']} | {row['precision']} "
            f"| {row['peak_mb']:.0f} MB "
            f"| {over_models:.0f} MB "
            f"| {over_models / seconds:.2f} MB | {over_warm:.0f} MB | {over_warm / seconds:.2f} MB "
            f"| {row['decode_s']:.1f} s | {row['separate_s']:.1f} s | {row['encode_s']:.1f} s |"
        )
    if len(rows) >= 2:
        xs = [row["duration_s"] for row in rows]
        ys = [(row["peak_mb"] - row["models_mb"]) * 2**20 for row in rows]
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
    # Judged on the longest song: on short ones the runtime's fixed working set (a chunk's
    # forward pass, the same for any length) outweighs the song.
    longest = max(rows, key=lambda row: row["duration_s"])
    per_second = (longest["peak_mb"] - longest["models_mb"]) / longest["duration_s"]
    verdict = "met" if per_second <= TARGET_MB_PER_S else "NOT met"
    print(
        f"longest song ({longest['duration_s'] / 60:.0f} min): {per_second:.2f} MB per audio "
        f"second over the models (target <= {TARGET_MB_PER_S:g}: {verdict})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
