"""Forward passes with and without separation/heap.py's allocator settings, in one run.

One HTDemucs of htdemucs_ft's sub-model shape (random weights; ``--size tiny`` for a quick
check), placed as separation.ensemble places it on CPU (channels-last weights, our
attention, the inverse spectrogram a source at a time, for bf16 the network held in bf16),
runs one 7.8 s chunk of noise ``--rounds`` times after a first pass, in a fresh process per
setting, since malloc's settings are the process's:

  default       glibc's malloc as a process starts (a dynamic mmap threshold up to 32 MiB,
                the heap's free top trimmed);
  heap          each pass inside ``separation.heap.activations_on_heap()`` (what our
                passes do);
  preload:NAME  the default code with ``LD_PRELOAD`` set to a ``--preload`` library
                (tcmalloc, jemalloc), for comparison.

``--thread`` runs the passes on a thread of their own, as the worker does (glibc gives it
an arena of its own). The settings take turns ``--repeat`` times, so load on a shared
machine falls on each alike. For each: the best of its processes' median seconds per
chunk, the ratio to default's, the first pass's seconds, and the peak RSS over the process
with its model built (the pass's working set as the allocator holds it).

    python bench/heap.py [--size pretrained|tiny] [--precision bf16|fp32] [--rounds 4]
                         [--repeat 2] [--preload PATH ...] [--thread] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def child(size: str, precision: str, rounds: int, heap: bool, thread: bool) -> dict[str, Any]:
    """One setting's passes in this process (on a thread of their own when ``thread``, as the
    worker runs them); returns its figures."""
    import contextlib
    from concurrent.futures import ThreadPoolExecutor

    import torch
    from demucs.htdemucs import HTDemucs

    from separation.ensemble import place_sub_model
    from separation.heap import activations_on_heap
    from separation.random_models import FOUR_SOURCES, PRETRAINED_KWARGS_4, TINY_KWARGS

    torch.manual_seed(0)
    kwargs = PRETRAINED_KWARGS_4 if size == "pretrained" else TINY_KWARGS
    model = place_sub_model(HTDemucs(FOUR_SOURCES, **kwargs), torch.device("cpu"), precision)
    mix = torch.randn(1, 2, int(model.samplerate * float(model.segment)))
    built_mb = _rss_mb()
    seconds: list[float] = []

    def passes() -> None:
        with torch.no_grad():
            for _ in range(rounds + 1):
                setting = activations_on_heap() if heap else contextlib.nullcontext()
                start = time.perf_counter()
                with setting:
                    out = model(mix)
                seconds.append(time.perf_counter() - start)
                del out

    if thread:
        # glibc gives a thread other than the main one an arena of its own.
        with ThreadPoolExecutor(1) as pool:
            pool.submit(passes).result()
    else:
        passes()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "first_s": seconds[0],
        "median_s": statistics.median(seconds[1:]),
        "over_model_mb": peak_mb - built_mb,
    }


def run_setting(setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """One process of ``setting``; its figures."""
    env = dict(os.environ)
    if setting.startswith("preload:"):
        env["LD_PRELOAD"] = setting.removeprefix("preload:")
    command = [
        sys.executable,
        __file__,
        "--child",
        "heap" if setting == "heap" else "default",
        "--size",
        args.size,
        "--precision",
        args.precision,
        "--rounds",
        str(args.rounds),
        *(["--thread"] if args.thread else []),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["pretrained", "tiny"], default="pretrained")
    parser.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--preload", nargs="*", default=[], metavar="PATH")
    parser.add_argument(
        "--thread", action="store_true", help="run the passes on a thread, as the worker does"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--child", choices=["default", "heap"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        figures = child(args.size, args.precision, args.rounds, args.child == "heap", args.thread)
        print(json.dumps(figures))
        return 0

    settings = ["default", "heap", *(f"preload:{path}" for path in args.preload)]
    runs: dict[str, list[dict[str, Any]]] = {setting: [] for setting in settings}
    for _ in range(args.repeat):
        for setting in settings:
            runs[setting].append(run_setting(setting, args))
            print(setting, json.dumps(runs[setting][-1]), flush=True)

    best = {setting: min(r["median_s"] for r in rows) for setting, rows in runs.items()}
    print()
    where = "on a thread of their own" if args.thread else "on the main thread"
    print(f"{args.size} htdemucs_ft sub-model shape, {args.precision}, one 7.8 s chunk, {where}")
    print("| setting | s per chunk (best median) | × default | first pass | peak over model |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for setting, rows in runs.items():
        first = min(r["first_s"] for r in rows)
        over = max(r["over_model_mb"] for r in rows)
        print(
            f"| {setting} | {best[setting]:.3f} | {best[setting] / best['default']:.2f} "
            f"| {first:.2f} s | {over:.0f} MB |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs})
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
