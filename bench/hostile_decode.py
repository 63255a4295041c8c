"""Peak memory while a worker refuses a file that decodes to hours.

A few MB of FLAC silence decode to hours of float32 audio. The worker decodes with its
duration limit, so ffmpeg stops a second past it; plain decoding (no limit) holds the whole
song. Each decode runs in its own process, which reports its peak RSS; the figure that
matters is the ratio of the two, measured in one run.

    python bench/hostile_decode.py [--hours 2] [--limit-s 900]
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

from songs import make_silence


def child(song: Path, limit_s: float | None) -> None:
    """One measured decode; prints a JSON line."""
    from separation import SongTooLongError, decode_audio

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    try:
        audio = decode_audio(song, max_duration_s=limit_s)
        outcome = f"decoded {audio.duration_s:.0f} s"
    except SongTooLongError as exc:
        outcome = f"refused: {exc}"
    seconds = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "outcome": outcome,
                "seconds": round(seconds, 2),
                "peak_mb": round(peak_kb / 1024, 1),
                "over_baseline_mb": round((peak_kb - baseline_kb) / 1024, 1),
            }
        )
    )


def measure(song: Path, limit_s: float | None) -> dict[str, object]:
    args = [sys.executable, __file__, "--child", str(song)]
    if limit_s is not None:
        args += ["--limit-s", str(limit_s)]
    result = subprocess.run(args, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=2.0, help="length of the hostile file")
    parser.add_argument("--limit-s", type=float, default=None, help="the duration limit")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.limit_s)
        return 0
    limit_s = args.limit_s if args.limit_s is not None else 900.0
    with tempfile.TemporaryDirectory() as tmp:
        song = make_silence(Path(tmp) / "bomb.flac", args.hours * 3600)
        size_mb = song.stat().st_size / 1e6
        print(f"file: {args.hours:g} h of FLAC silence, {size_mb:.1f} MB")
        bounded = measure(song, limit_s)
        plain = measure(song, None)
    print(f"with the worker's limit ({limit_s:g} s): {bounded}")
    print(f"plain decode, no limit:            {plain}")
    ratio = float(str(bounded["over_baseline_mb"])) / float(str(plain["over_baseline_mb"]))
    print(f"peak memory over the interpreter, bounded / plain: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
