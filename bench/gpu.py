"""The separation engine on a GPU: a long song's seconds, real-time factor and peak device
memory, plain demucs against ours over batch sizes and precisions; the pipelined worker's
songs per hour; Separate to last track delivered through the whole service.

Random-weight models in the published shapes (``--size pretrained``: htdemucs_ft, a bag of
four 4-source HTDemucs, and htdemucs_6s) or the tiny test models (``--size tiny``), on
``--device``, one run, one song of ``--seconds``:

  (1) plain demucs ``apply_model`` over model A (the bag), then model B: shifts 0, overlap
      0.25, split on, fp32 (what a naive ensemble does);
  (2) our six-track and vocals-only requests, for every ``--batch-sizes`` x ``--precisions``
      (a precision the device does not support is reported skipped, with the reason), with
      the bf16/fp16 estimates' difference from fp32's as an SDR in dB (the lowest track);
  (3) one worker's songs per hour, one job at a time against pipelined (``--max-jobs``),
      on ``--songs`` songs of ``--song-seconds`` (bench/throughput.py's harness);
  (4) one user's press of Separate (all six stems, a song of ``--seconds``) to the last track
      delivered, through the real bot and worker against the fake Bot API on loopback
      (tests/support/load.py's harness).

Figures (3) and (4) use the production configuration (batch size and precision ``auto``)
on ``--device``. Seconds are wall-clock; on CUDA every configuration runs once untimed
first and timings are taken between ``torch.cuda.synchronize()`` calls. The real-time factor
is seconds of audio per second of work (higher is faster). Peak memory is the device's
``max_memory_allocated`` on CUDA; on CPU the process's peak RSS so far (labelled so).

Targets (H100, a 4-minute song): all six stems separated in <= 2 s; Separate -> last track
delivered in <= 8 s; pipelined songs per hour >= 3x sequential. The first two mean something
only with ``--device cuda --seconds 240`` and are reported n/a otherwise. With
``--max-jobs`` <= 3 the third cannot be met (three jobs at once are at most 3x one). Prints
markdown tables, writes ``--json``; exits 1 when a correctness check fails (a song not
delivered, separations overlapping), and with ``--strict`` also when a target that applies
is missed.

    # the H100 run
    python bench/gpu.py --device cuda --seconds 240 --batch-sizes 1 2 4 8 16 \\
        --precisions fp32 bf16 fp16 --repeat 2 --songs 8 --max-jobs 4 --json gpu.json
    # the CPU smoke run (tests/bench/test_gpu_bench.py runs it; its figures mean nothing)
    python bench/gpu.py --device cpu --size tiny --seconds 3 --batch-sizes 1 2 \\
        --precisions fp32 bf16 fp16 --songs 2 --song-seconds 2 --latency 0.2 --json smoke.json
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import math
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

# The harnesses live with the tests (fake Bot API, Redis server, worker runner, load).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from songs import make_song as make_clip
from throughput import serve as serve_queue

from common.settings import Settings
from separation import SOURCES, EnsembleSeparator, SeparatorConfig, decode_audio, resolve_device
from separation.audio import Audio
from separation.random_models import write_model_repo
from tests.support import workers
from tests.support.audio import make_song
from tests.support.load import SECONDS_PER_JOB, run_load

T = TypeVar("T")

TARGET_SONG_SECONDS = 240.0
TARGET_SIX_TRACK_S = 2.0
TARGET_DELIVERY_S = 8.0
TARGET_PIPELINE_RATIO = 3.0
# The two requests of figure (2): everything, and the cheapest common pick.
REQUESTS: Mapping[str, tuple[str, ...]] = {"six": tuple(SOURCES), "vocals": ("vocals",)}


def separate_request(
    separator: EnsembleSeparator, audio: Audio, stems: Sequence[str]
) -> dict[str, np.ndarray]:
    """Our request, as every figure of ours times it: the engine's streaming core into
    memory (the worker streams into raw files on disk instead, for bounded memory)."""
    return separator.separate(audio, stems)


@dataclass
class Timed:
    """One timed figure."""

    seconds: float
    real_time_factor: float  # seconds of audio per second of work
    peak_memory_mb: float


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_measure(device: torch.device) -> str:
    if device.type == "cuda":
        return "device max_memory_allocated during the figure (MB)"
    return "process peak RSS so far, not per figure (MB; no device memory on cpu)"


def release(device: torch.device) -> None:
    """Hand freed blocks back, so the next figure's peak is its own (CUDA's allocator keeps
    them cached otherwise, and a dropped separator's weights could still count)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def timed(
    device: torch.device, duration_s: float, repeat: int, run: Callable[[], T]
) -> tuple[Timed, T]:
    """The best of ``repeat`` runs of ``run`` and the last run's result.

    On CUDA one untimed run comes first: the first call of a batch shape and autocast dtype
    picks kernels and grows the allocator's pool, which no later request pays for.
    """
    cuda = device.type == "cuda"
    if cuda:
        run()
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    best = math.inf
    result: T | None = None
    for _ in range(max(1, repeat)):
        result = None  # the previous run's output must not count in this run's peak
        if cuda:
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        result = run()
        if cuda:
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated(device) / 2**20 if cuda else peak_rss_mb()
    assert result is not None
    # Significant figures, not decimals: a CPU smoke's factor is a small fraction.
    rtf = float(f"{duration_s / best:.4g}")
    return Timed(round(best, 4), rtf, round(memory, 1)), result


def sdr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (ref - est)^2): how far ``estimate`` is from ``reference``;
    +inf when they are identical."""
    ref = reference.astype(np.float64)
    noise = float(np.sum((ref - estimate.astype(np.float64)) ** 2))
    signal = float(np.sum(ref**2))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def min_sdr_db(reference: Mapping[str, np.ndarray], estimate: Mapping[str, np.ndarray]) -> float:
    """The lowest per-track SDR: a precision is as good as its worst track."""
    return min(sdr_db(reference[name], estimate[name]) for name in reference)


def plain_demucs(repo: Path, audio: Audio, device: torch.device, repeat: int) -> dict[str, Any]:
    """Figure (1): ``apply_model`` over model A, then B, normalised as demucs's separate.py
    does, with the song on the device (the fastest way to call it)."""
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    models = [get_model(name, repo=repo) for name in SeparatorConfig().models]
    mix = torch.from_numpy(audio.samples)
    ref = mix.mean(0)
    normalised = ((mix - ref.mean()) / (ref.std() + 1e-8))[None].to(device)

    def run() -> list[torch.Tensor]:
        with torch.no_grad():
            return [
                apply_model(model, normalised, shifts=0, split=True, overlap=0.25, device=device)
                for model in models
            ]

    figure, _ = timed(device, audio.duration_s, repeat, run)
    return {"name": "plain apply_model, A then B", "precision": "fp32", **asdict(figure)}


def ours(
    repo: Path,
    audio: Audio,
    device: torch.device,
    batch_sizes: Sequence[int],
    precisions: Sequence[str],
    repeat: int,
) -> list[dict[str, Any]]:
    """Figure (2): one row per request x batch size x precision, fp32 first so the others
    are compared with it (with fp32's estimate at the first batch size, per request)."""
    rows: list[dict[str, Any]] = []
    references: dict[str, dict[str, np.ndarray]] = {}
    ordered = sorted(precisions, key=lambda p: p != "fp32")
    for precision in ordered:
        for batch_size in batch_sizes:
            config_row = {"batch_size": batch_size, "precision": precision}
            try:
                separator = EnsembleSeparator(
                    SeparatorConfig(
                        model_repo=repo,
                        device=str(device),
                        batch_size=batch_size,
                        precision=precision,
                        cache_dir=None,
                    )
                )
            except ValueError as error:  # a precision this device does not support
                rows.extend(
                    {"request": r, **config_row, "status": "skipped", "reason": str(error)}
                    for r in REQUESTS
                )
                continue
            separator.warm_up()  # loading the models is no part of a request
            for request, stems in REQUESTS.items():
                figure, tracks = timed(
                    device,
                    audio.duration_s,
                    repeat,
                    functools.partial(separate_request, separator, audio, stems),
                )
                row: dict[str, Any] = {
                    "request": request,
                    **config_row,
                    "status": "ok",
                    **asdict(figure),
                }
                reference = references.get(request)
                if reference is None and precision == "fp32":
                    references[request] = tracks
                    row["vs_fp32"] = "reference"
                elif reference is None:
                    row["vs_fp32"] = "no fp32 run"
                else:
                    sdr = min_sdr_db(reference, tracks)
                    row["vs_fp32"] = "identical" if math.isinf(sdr) else "sdr"
                    if not math.isinf(sdr):
                        row["sdr_vs_fp32_db"] = round(sdr, 2)
                rows.append(row)
                del tracks
            del separator
            release(device)
    return rows


def production_separator(repo: Path, device: torch.device, audio: Audio) -> EnsembleSeparator:
    """The separator figures (3) and (4) run: what the worker builds, batch size and
    precision left to the device, no cache (every job must separate), warmed up."""
    separator = EnsembleSeparator(
        SeparatorConfig(model_repo=repo, device=str(device), cache_dir=None)
    )
    separator.warm_up()
    if device.type == "cuda":
        separate_request(separator, audio, REQUESTS["six"])  # kernels and memory pool
    return separator


def throughput(
    workdir: Path,
    separator: EnsembleSeparator,
    songs: int,
    song_seconds: float,
    max_jobs: int,
    latency_s: float,
) -> dict[str, Any]:
    """Figure (3): bench/throughput.py's two runs (one job at a time, then ``max_jobs``) on
    the same songs, with this benchmark's separator."""
    # A burst worker has BURST_TIMEOUT_S to empty the queue, sized for 4-second songs; one
    # job at a time over long songs (decode and six mp3 encodes are CPU work) needs more.
    workers.BURST_TIMEOUT_S = max(workers.BURST_TIMEOUT_S, 60.0 + 2.0 * song_seconds * songs)
    workdir.mkdir()
    paths = [
        make_song(workdir / f"Song {i}.mp3", seconds=song_seconds, seed=i) for i in range(songs)
    ]
    sequential, pipelined = (
        asyncio.run(serve_queue(workdir / f"run{m}", paths, separator, m, latency_s))
        for m in (1, max_jobs)
    )
    return {
        "songs": songs,
        "song_seconds": song_seconds,
        "latency_s": latency_s,
        "sequential": sequential,
        "pipelined": pipelined,
        "ratio": round(pipelined["songs_per_hour"] / sequential["songs_per_hour"], 2),
    }


def delivery(
    workdir: Path, repo: Path, separator: EnsembleSeparator, seconds: float
) -> dict[str, Any]:
    """Figure (4): one user, all six stems, from the press of Separate to the last track
    in their chat (the fake Bot API records when each upload arrived)."""
    workdir.mkdir()
    result = asyncio.run(
        run_load(
            workdir,
            users=1,
            model_repo=repo,
            separator=separator,
            song_seconds=seconds,
            picks=(tuple(SOURCES),),
            seconds_per_job=max(SECONDS_PER_JOB, 2.0 * seconds),
        )
    )
    (user,) = result.users
    return {
        "song_seconds": seconds,
        "press_to_last_track_s": round(user.total_s, 3),
        "queue_wait_s": round(user.wait_s, 3),
        # arq's start to finish: it ends after the last upload (the status message's last
        # edit and the clean-up come after), so it can exceed press to last track.
        "job_s": round(user.finished_at - user.started_at, 3),
        "tracks": len(user.received),
        "problems": result.problems,
    }


def targets(
    args: argparse.Namespace, device: torch.device, report: dict[str, Any]
) -> list[dict[str, Any]]:
    """Each target, its measured figure and whether it was met (None: does not apply)."""
    on_target_gpu = device.type == "cuda" and math.isclose(args.seconds, TARGET_SONG_SECONDS)
    why_not = f"needs --device cuda --seconds {TARGET_SONG_SECONDS:g}"
    rows: list[dict[str, Any]] = []
    six = [r for r in report["ours"] if r["request"] == "six" and r["status"] == "ok"]
    if six:
        best = min(six, key=lambda r: r["seconds"])
        rows.append(
            {
                "target": "six tracks of a 4-minute song, separation",
                "measured": best["seconds"],
                "at": f"batch {best['batch_size']}, {best['precision']}",
                "goal": f"<= {TARGET_SIX_TRACK_S:g} s",
                "met": best["seconds"] <= TARGET_SIX_TRACK_S if on_target_gpu else None,
                "note": "" if on_target_gpu else why_not,
            }
        )
    if "delivery" in report:
        measured = report["delivery"]["press_to_last_track_s"]
        rows.append(
            {
                "target": "Separate -> last track delivered (fake Bot API, loopback)",
                "measured": measured,
                "at": "production config",
                "goal": f"<= {TARGET_DELIVERY_S:g} s",
                "met": measured <= TARGET_DELIVERY_S if on_target_gpu else None,
                "note": "" if on_target_gpu else why_not,
            }
        )
    if "throughput" in report:
        ratio = report["throughput"]["ratio"]
        rows.append(
            {
                "target": "pipelined / sequential songs per hour",
                "measured": ratio,
                "at": f"max_jobs {args.max_jobs}",
                "goal": f">= {TARGET_PIPELINE_RATIO:g}x",
                "met": ratio >= TARGET_PIPELINE_RATIO,
                "note": "unreachable with max_jobs <= 3" if args.max_jobs <= 3 else "",
            }
        )
    return rows


def print_report(report: dict[str, Any]) -> None:
    setup = report["setup"]
    print(
        f"\n{setup['song_seconds']:g} s song, device {setup['device']} ({setup['device_name']}), "
        f"{setup['size']} models, torch {setup['torch']}, best of {setup['repeat']}; "
        f"peak memory: {setup['memory_measure']}\n"
    )
    print("| figure | batch | precision | seconds | real-time factor | peak memory MB | vs fp32 |")
    print("| --- | ---: | --- | ---: | ---: | ---: | --- |")
    plain = report["plain"]
    print(
        f"| (1) {plain['name']} | - | fp32 | {plain['seconds']:.3f} | "
        f"{plain['real_time_factor']:.3g} | {plain['peak_memory_mb']:.0f} | - |"
    )
    for row in report["ours"]:
        name = f"(2) ours, {row['request']}"
        if row["status"] != "ok":
            print(
                f"| {name} | {row['batch_size']} | {row['precision']} | skipped: "
                f"{row['reason']} | | | |"
            )
            continue
        versus = row["vs_fp32"]
        if versus == "sdr":
            versus = f"SDR {row['sdr_vs_fp32_db']:.1f} dB"
        print(
            f"| {name} | {row['batch_size']} | {row['precision']} | {row['seconds']:.3f} | "
            f"{row['real_time_factor']:.3g} | {row['peak_memory_mb']:.0f} | {versus} |"
        )
    if "throughput" in report:
        tp = report["throughput"]
        print(
            f"\n(3) {tp['songs']} songs of {tp['song_seconds']:g} s, "
            f"{tp['latency_s']:g} s latency per getFile and sendMediaGroup\n"
        )
        print("| worker | max_jobs | seconds | songs/h | separating | delivered |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name in ("sequential", "pipelined"):
            row = tp[name]
            print(
                f"| {name} | {row['max_jobs']} | {row['seconds']:.2f} | {row['songs_per_hour']} "
                f"| {row['separating_share']:.0%} | {row['delivered']}/{row['songs']} |"
            )
    if "delivery" in report:
        dl = report["delivery"]
        print(
            f"\n(4) Separate -> last track, {dl['song_seconds']:g} s song, all six stems: "
            f"{dl['press_to_last_track_s']:.2f} s (queue {dl['queue_wait_s']:.2f} s, "
            f"job {dl['job_s']:.2f} s, {dl['tracks']} tracks)"
        )
    print("\n| target | measured | at | goal | result |")
    print("| --- | ---: | --- | --- | --- |")
    for row in report["targets"]:
        met = row["met"]
        result = "n/a" if met is None else "ok" if met else "MISSED"
        if row["note"]:
            result += f" ({row['note']})"
        print(f"| {row['target']} | {row['measured']} | {row['at']} | {row['goal']} | {result} |")
    for problem in report["problems"]:
        print(f"PROBLEM {problem}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, mps or cpu")
    parser.add_argument("--seconds", type=float, default=TARGET_SONG_SECONDS, help="song length")
    parser.add_argument("--size", choices=("pretrained", "tiny"), default="pretrained")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per figure (best)")
    # 8 songs of 4 minutes, twice over, keep the H100 run within one 10-minute command.
    parser.add_argument("--songs", type=int, default=8, help="songs for the throughput")
    parser.add_argument("--song-seconds", type=float, default=None, help="default: --seconds")
    parser.add_argument(
        "--max-jobs",
        type=int,
        default=Settings.model_fields["worker_max_jobs"].default,
        help="jobs at once, pipelined (default: the worker's)",
    )
    parser.add_argument(
        "--latency", type=float, default=0.5, help="seconds per getFile and sendMediaGroup"
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-delivery", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--strict", action="store_true", help="exit 1 on a missed target")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no CUDA device (use --device cpu)")

    report: dict[str, Any] = {
        "setup": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device)
            if device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "size": args.size,
            "song_seconds": args.seconds,
            "repeat": args.repeat,
            "memory_measure": memory_measure(device),
        },
        "problems": [],
    }
    with tempfile.TemporaryDirectory(prefix="demix-gpu-bench-") as tmp_name:
        tmp = Path(tmp_name)
        repo = write_model_repo(tmp / "models", size=args.size)
        audio = decode_audio(make_clip(tmp / "song.mp3", args.seconds))
        print(f"song {audio.duration_s:.1f} s on {device}, {args.size} models", flush=True)
        report["plain"] = plain_demucs(repo, audio, device, args.repeat)
        release(device)  # plain demucs's models and outputs, gone with its frame
        print("(1) plain demucs done", flush=True)
        report["ours"] = ours(repo, audio, device, args.batch_sizes, args.precisions, args.repeat)
        print("(2) ours done", flush=True)
        if not (args.skip_throughput and args.skip_delivery):
            separator = production_separator(repo, device, audio)
            if not args.skip_delivery:
                report["delivery"] = delivery(tmp / "delivery", repo, separator, args.seconds)
                report["problems"] += report["delivery"]["problems"]
                print("(4) delivery done", flush=True)
            if not args.skip_throughput:
                report["throughput"] = throughput(
                    tmp / "throughput",
                    separator,
                    args.songs,
                    args.song_seconds or args.seconds,
                    args.max_jobs,
                    args.latency,
                )
                for mode in ("sequential", "pipelined"):
                    report["problems"] += report["throughput"][mode]["problems"]
                print("(3) throughput done", flush=True)
    report["targets"] = targets(args, device, report)
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    missed = any(row["met"] is False for row in report["targets"])
    return 1 if report["problems"] or (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
