"""Speed of the separation engine against plain demucs, on one clip, in one run.

Builds random-weight models with the pretrained architectures (htdemucs_ft: a bag of four
4-source HTDemucs, htdemucs_6s: one 6-source HTDemucs) and reports seconds of work per
second of audio for:

  (a) plain demucs ``apply_model`` over model A, then model B (what a naive ensemble does);
  (b) our full six-track request;
  (c) our vocals-only request;
  (d) a repeat six-track request served from the cache, by a fresh separator;

plus the decode / separate / encode split of a full request and the peak memory.
Targets: (b)/(a) <= 1.05, (c)/(b) <= 0.35, (d)/(b) <= 0.05.

Our requests run fp32 unless ``--precision`` says otherwise (plain demucs runs fp32, and so
did every earlier run; ``auto`` is bf16 on a CPU with AVX-512 BF16 or AMX). Our rows also
give the FLOP/s they achieved and, on CPU, the share of its peak for their precision
(``bench/flops.py``): the FLOPs of the chunks each request ran, counted as it ran.

With ``--strategies``, the same run also times each ensemble strategy (cache off, the same
separator): the six-track and the vocals-only request under ``route``, ``blend`` and
``refine``, and vocals under ``blend`` with ``always`` (B runs only to be blended in),
each as a ratio to ``route``'s request of the same pick (the requests take turns, best of
``--repeat`` each). It is an option because it about doubles the run: 574 of 1129 s in a
``--seconds 10 --repeat 2`` run on the two development cores while other work loaded them.

    python bench/speed.py [--seconds 10] [--repeat 1] [--device cpu] [--precision fp32]
                          [--strategies]
"""

from __future__ import annotations

import argparse
import functools
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from flops import CpuPeak, WorkCounter, cpu_peak, throughput
from songs import make_song

from separation import (
    SOURCES,
    Audio,
    EnsembleSeparator,
    SeparatorConfig,
    decode_audio,
    encode_tracks,
    resolve_device,
)
from separation.config import STRATEGIES, Ensemble
from separation.random_models import write_model_repo

# The picks the strategy figures time: the whole set, and one source as a request asks.
PICKS: dict[str, tuple[str, ...]] = {"six-track": SOURCES, "vocals-only": ("vocals",)}


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The fastest of ``repeat`` timed runs, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def strategy_cases() -> list[tuple[str, str, Ensemble]]:
    """(pick, label, ensemble) for each strategy figure: every strategy with its defaults
    on each pick, and vocals under blend with ``always`` (without it a vocals pick does not
    run B, so blend is route there)."""
    cases = [(pick, name, Ensemble(name)) for pick in PICKS for name in STRATEGIES]
    cases.append(("vocals-only", "blend, always", Ensemble("blend", always=True)))
    return cases


def time_strategies(
    separator: EnsembleSeparator, audio: Audio, repeat: int
) -> list[tuple[str, str, float, float]]:
    """(pick, label, best seconds, FLOPs of one request) per :func:`strategy_cases` entry,
    on ``separator``.

    The cases take turns, ``repeat`` rounds of one request each, so a change in the
    machine's other load falls on all of them rather than on the ones timed while it
    lasted: the ratios to route are what this figure is for."""
    cases = strategy_cases()
    best = [float("inf")] * len(cases)
    work = [WorkCounter() for _ in cases]
    for _ in range(repeat):
        for k, (pick, _label, ensemble) in enumerate(cases):
            request = functools.partial(separator.separate, audio, PICKS[pick], ensemble=ensemble)
            with work[k]:
                best[k] = min(best[k], best_of(1, request))
    return [
        (pick, label, seconds, counted.flops() / repeat)
        for (pick, label, _), seconds, counted in zip(cases, best, work, strict=True)
    ]


def flop_cells(flops: float, seconds: float, precision: str, peak: CpuPeak | None) -> str:
    """The GFLOP/s and % of peak columns of one of our rows, as a markdown fragment."""
    rate, share = throughput(flops, seconds, precision, peak).cells()
    return f" {rate} | {share} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (best kept)")
    parser.add_argument("--device", default="cpu", help="auto, cuda, mps or cpu")
    parser.add_argument("--models", type=Path, default=None, help="reuse a model folder")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16", "auto"],
        default="fp32",
        help="our requests' precision (default fp32, as plain demucs runs)",
    )
    parser.add_argument(
        "--strategies",
        action="store_true",
        help="also time each ensemble strategy (about doubles the run)",
    )
    args = parser.parse_args(argv)
    run_start = time.perf_counter()

    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    with tempfile.TemporaryDirectory(prefix="demix-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repo = args.models or write_model_repo(tmp / "models", size="pretrained")
        song = make_song(tmp / "clip.mp3", args.seconds)
        device = resolve_device(args.device)
        print(
            f"clip {args.seconds:.1f} s, device {device}, torch threads "
            f"{torch.get_num_threads()}, repeat {args.repeat}",
            flush=True,
        )
        # Only a CPU run is compared with the CPU's peak.
        peak = cpu_peak() if device.type == "cpu" else None
        if peak is not None:
            print(peak.describe(), flush=True)

        decode_s = best_of(args.repeat, lambda: decode_audio(song))
        audio = decode_audio(song)
        duration = audio.duration_s

        # (a) plain demucs, normalised as demucs's separate.py does.
        model_a = get_model("htdemucs_ft", repo=repo)
        model_b = get_model("htdemucs_6s", repo=repo)
        mix = torch.from_numpy(audio.samples)
        ref = mix.mean(0)
        normalised = ((mix - ref.mean()) / (ref.std() + 1e-8))[None]

        def plain() -> None:
            for model in (model_a, model_b):
                with torch.no_grad():
                    apply_model(
                        model, normalised, shifts=0, split=True, overlap=0.25, device=device
                    )

        config = SeparatorConfig(model_repo=repo, device=args.device, precision=args.precision)
        separator = EnsembleSeparator(config)
        precision = separator.precision
        separator.warm_up()
        # One short request first, so no figure pays for first-call set-up.
        separator.separate(audio, ["bass"])
        plain_s = best_of(args.repeat, plain)
        with WorkCounter() as six_work:
            six_s = best_of(args.repeat, lambda: separator.separate(audio, SOURCES))
        with WorkCounter() as vocals_work:
            vocals_s = best_of(args.repeat, lambda: separator.separate(audio, ["vocals"]))
        # FLOPs of one request (each repeat runs the same chunks).
        work = {
            "(b) six-track request": six_work.flops() / args.repeat,
            "(c) vocals-only request": vocals_work.flops() / args.repeat,
        }

        cache_dir = tmp / "cache"
        cached_config = SeparatorConfig(
            model_repo=repo, device=args.device, precision=args.precision, cache_dir=cache_dir
        )
        EnsembleSeparator(cached_config).separate(audio, SOURCES)

        def from_cache() -> None:
            fresh = EnsembleSeparator(cached_config)
            fresh.separate(audio, SOURCES)
            assert fresh.model_passes == 0 and not fresh.loaded_models

        cached_s = best_of(args.repeat, from_cache)
        strategy_start = time.perf_counter()
        strategy_rows = time_strategies(separator, audio, args.repeat) if args.strategies else []
        strategy_wall_s = time.perf_counter() - strategy_start
        tracks = separator.separate(audio, SOURCES)
        encode_s = best_of(args.repeat, lambda: encode_tracks(tracks, tmp / "out", "clip"))
        serial_s = best_of(
            args.repeat,
            lambda: [encode_tracks({k: v}, tmp / "serial", "clip") for k, v in tracks.items()],
        )

    def per_s(seconds: float) -> float:
        return seconds / duration

    print()
    print(f"our requests: {precision}")
    print("| figure | seconds | s per s of audio | GFLOP/s | % of peak |")
    print("| --- | ---: | ---: | ---: | ---: |")
    rows = [
        ("(a) plain apply_model, A then B", plain_s),
        ("(b) six-track request", six_s),
        ("(c) vocals-only request", vocals_s),
        ("(d) six-track repeat from cache", cached_s),
        ("decode (mp3 -> 44.1 kHz float)", decode_s),
        ("encode 6 tracks, parallel", encode_s),
        ("encode 6 tracks, one at a time", serial_s),
    ]
    for name, seconds in rows:
        cells = flop_cells(work[name], seconds, precision, peak) if name in work else "  |  |"
        print(f"| {name} | {seconds:.3f} | {per_s(seconds):.4f} |{cells}")
    print()
    print("| ratio | measured | target |")
    print("| --- | ---: | ---: |")
    for name, value, target in (
        ("(b)/(a)", six_s / plain_s, 1.05),
        ("(c)/(b)", vocals_s / six_s, 0.35),
        ("(d)/(b)", cached_s / six_s, 0.05),
    ):
        print(f"| {name} | {value:.3f} | <= {target} {'ok' if value <= target else 'MISSED'} |")
    full = decode_s + six_s + encode_s
    print()
    print(
        f"full six-track request: decode {decode_s / full:.1%}, separate {six_s / full:.1%}, "
        f"encode {encode_s / full:.1%} of {full:.2f} s"
    )
    if strategy_rows:
        print_strategies(strategy_rows, duration, precision, peak)
    print(f"peak RSS of this process: {peak_rss_mb():.0f} MB (models, clip, plain demucs run)")
    wall_s = time.perf_counter() - run_start
    print(
        f"wall time: {wall_s:.0f} s"
        + (f", of which the strategy figures {strategy_wall_s:.0f} s" if strategy_rows else "")
    )
    return 0


def print_strategies(
    rows: list[tuple[str, str, float, float]],
    duration: float,
    precision: str,
    peak: CpuPeak | None,
) -> None:
    """The strategy figures, each with its ratio to route's request of the same pick and
    the FLOP/s it achieved."""
    route = {pick: seconds for pick, label, seconds, _ in rows if label == "route"}
    print()
    print(
        "| request, strategy (cache off) | seconds | s per s of audio | / route "
        "| GFLOP/s | % of peak |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for pick, label, seconds, flops in rows:
        ratio = seconds / route[pick]
        print(
            f"| {pick}, {label} | {seconds:.3f} | {seconds / duration:.4f} | {ratio:.3f} |"
            + flop_cells(flops, seconds, precision, peak)
        )


if __name__ == "__main__":
    sys.exit(main())
