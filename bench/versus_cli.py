"""Our separation against the demucs command line a user would run instead, on CPU.

Random-weight models in the published shapes (htdemucs_ft: a bag of four 4-source HTDemucs,
htdemucs_6s: one 6-source HTDemucs) in demucs's local repo layout; one ffmpeg-made mp3.
Wall-clock seconds, and seconds per second of audio, for:

  demucs CLI, all six:    ``python -m demucs.separate -n htdemucs_ft --repo DIR -d cpu
                          -o OUT SONG``, then the same with ``-n htdemucs_6s``;
  demucs CLI, vocals:     ``python -m demucs.separate -n htdemucs_ft --two-stems vocals
                          --repo DIR -d cpu -o OUT SONG``;
  ours, cold:             ``demix separate SONG --out OUT`` (all six) and ``--stems vocals``,
                          as processes, as a user runs them;
  ours, warm:             what the worker does per request with its models loaded: decode,
                          separate, encode, in this process (:func:`our_request`);

demucs's defaults otherwise (shifts 1, overlap 0.25, 16-bit wav) and ours (shifts 0, 320 kbps
mp3); the cache is off on our side. Ours runs fp32 (``DEMIX_PRECISION=fp32``), as demucs
does and as every earlier run did, although ``auto`` is bf16 on a CPU with AVX-512 BF16 or
AMX; ``--bf16`` adds cold and warm rows in bf16 (the default where the CPU has native
bf16). The runs are interleaved (demucs, ours, demucs, ours, ...) and each figure is the
best of ``--repeat``, so load on a shared machine hits both sides; the ratios, not the
absolute times, are the result. Every run's files are checked
(a run that writes nothing stops the benchmark).
Targets: all six <= 0.75 x demucs CLI all six; vocals <= 0.30 x demucs CLI two-stems; in bf16
cold (issue 19's, the default where the CPU computes bf16 natively): all six <= 0.35, vocals
<= 0.12.

Our rows also give the FLOP/s achieved and the share of this CPU's peak for their precision
(``bench/flops.py``): the FLOPs of the chunks our warm request of the pick ran, counted as it
ran, over each figure's seconds (the cold figure runs the same passes, plus start-up).

    python bench/versus_cli.py [--seconds 30] [--repeat 1] [--size pretrained|tiny]
                               [--bf16] [--json PATH] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from flops import CpuPeak, Throughput, WorkCounter, cpu_peak, throughput
from songs import make_song

from separation import (
    SOURCES,
    EnsembleSeparator,
    SeparatorConfig,
    decode_audio,
    encode_tracks,
    plan_tracks,
    safe_song_name,
    track_file_name,
)
from separation.random_models import FOUR_SOURCES, SIX_SOURCES, write_model_repo

MODEL_A = "htdemucs_ft"
MODEL_B = "htdemucs_6s"
VOCALS = ["vocals"]
SIX_TARGET = 0.75
VOCALS_TARGET = 0.30
# Issue 19's, for the cold bf16 rows (what a user of `demix separate` gets on such a CPU).
BF16_COLD_TARGETS = {"six": 0.35, "vocals": 0.12}
# A written track must hold at least this share of the song (demucs's wav files are a little
# longer: its mp3 reader keeps the encoder delay and padding).
MIN_LENGTH_SHARE = 0.9


def our_request(
    separator: EnsembleSeparator, song: Path, stems: Sequence[str], out_dir: Path
) -> list[Path]:
    """One request as the worker serves it with its models loaded: decode into its folder,
    separate into raw track files, encode them."""
    with tempfile.TemporaryDirectory(prefix="job-", dir=out_dir.parent) as job_dir:
        audio = decode_audio(song, spool_dir=Path(job_dir))
        tracks = separator.separate_to_files(audio, stems, Path(job_dir) / "raw")
        return encode_tracks(tracks, out_dir, safe_song_name(song.name), artist=audio.info.artist)


@dataclass
class Context:
    """What every run needs: the inputs, the clean environments, where outputs go.

    ``runs`` is also the processes' working folder: ``demix`` reads a ``.env`` file from its
    working folder, and the one of the folder the benchmark was started in must not count.
    """

    song: Path
    repo: Path
    runs: Path
    duration_s: float
    demucs_env: dict[str, str]
    ours_env: dict[str, str]


@dataclass(frozen=True)
class Ratio:
    """Our best time over demucs's best, against its target."""

    key: str
    label: str
    value: float
    target: float

    @property
    def ok(self) -> bool:
        return self.value <= self.target

    @property
    def default(self) -> bool:
        """Whether ours ran in this benchmark's reference precision, fp32 (the bf16 rows
        are extra)."""
        return not self.key.endswith("bf16")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any ``DEMIX_*`` variable, plus ``extra``.

    A developer's own DEMIX_SHIFTS or DEMIX_PRECISION would otherwise change our side of the
    comparison without showing in the figures.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEMIX_")}
    env.update(extra)
    return env


def fresh_dir(path: Path) -> Path:
    """``path`` emptied, so that the files checked after a run are that run's own."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def timed_process(command: list[str], env: dict[str, str], cwd: Path) -> float:
    """Run ``command`` to its end; its wall-clock seconds. A failure stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout)[-2000:]
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{tail}")
    return seconds


def check_wavs(folder: Path, stems: Sequence[str], ctx: Context) -> list[Path]:
    """The 16-bit wav of each of ``stems`` that demucs wrote in ``folder``, each checked to
    hold the whole song (demucs can exit 0 having skipped a track it could not find)."""
    paths = [folder / f"{stem}.wav" for stem in stems]
    for path in paths:
        if not path.is_file():
            raise RuntimeError(f"the demucs CLI did not write {path}")
        with wave.open(str(path), "rb") as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
        if frames < MIN_LENGTH_SHARE * ctx.duration_s * rate:
            raise RuntimeError(f"{path} holds {frames / rate:.2f} s, not {ctx.duration_s:.2f}")
    return paths


def check_ours(out: Path, stems: Sequence[str], ctx: Context) -> list[Path]:
    """Our mp3 of each track of the pick ``stems`` in ``out``, each checked to hold audio."""
    name = safe_song_name(ctx.song.name)
    paths = [out / track_file_name(name, track) for track in plan_tracks(stems)]
    for path in paths:
        if not path.is_file():
            raise RuntimeError(f"ours did not write {path}")
        seconds = decode_audio(path).duration_s
        if seconds < MIN_LENGTH_SHARE * ctx.duration_s:
            raise RuntimeError(f"{path} holds {seconds:.2f} s, not {ctx.duration_s:.2f}")
    return paths


def demucs_cli(ctx: Context, model: str, out: Path, *extra: str) -> float:
    """``python -m demucs.separate`` as a user types it (plus ``--repo``: no download)."""
    command = [
        *(sys.executable, "-m", "demucs.separate", "-n", model, *extra),
        *("--repo", str(ctx.repo), "-d", "cpu", "-o", str(out), str(ctx.song)),
    ]
    return timed_process(command, ctx.demucs_env, ctx.runs)


def demix_command() -> list[str]:
    """The ``demix`` console script next to this interpreter, as a user runs it."""
    script = Path(sys.executable).with_name("demix")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "demix"]


def run_cli_six(ctx: Context) -> tuple[float, float, list[Path]]:
    """The demucs CLI's two runs for all six sources: seconds of each, and its files."""
    out = fresh_dir(ctx.runs / "cli_six")
    ft_s = demucs_cli(ctx, MODEL_A, out)
    six_s = demucs_cli(ctx, MODEL_B, out)
    track = ctx.song.stem
    files = check_wavs(out / MODEL_A / track, FOUR_SOURCES, ctx)
    files += check_wavs(out / MODEL_B / track, SIX_SOURCES, ctx)
    return ft_s, six_s, files


def run_cli_vocals(ctx: Context) -> tuple[float, list[Path]]:
    out = fresh_dir(ctx.runs / "cli_vocals")
    seconds = demucs_cli(ctx, MODEL_A, out, "--two-stems", "vocals")
    return seconds, check_wavs(out / MODEL_A / ctx.song.stem, ["vocals", "no_vocals"], ctx)


def run_ours_cold(
    ctx: Context, figure: str, stems: Sequence[str], precision: str = "fp32"
) -> tuple[float, list[Path]]:
    out = fresh_dir(ctx.runs / figure)
    command = [*demix_command(), "separate", str(ctx.song), "--out", str(out)]
    if list(stems) != list(SOURCES):
        command += ["--stems", ",".join(stems)]
    seconds = timed_process(command, {**ctx.ours_env, "DEMIX_PRECISION": precision}, ctx.runs)
    return seconds, check_ours(out, stems, ctx)


def run_ours_warm(
    ctx: Context, separator: EnsembleSeparator, figure: str, stems: Sequence[str]
) -> tuple[float, list[Path]]:
    out = fresh_dir(ctx.runs / figure)
    start = time.perf_counter()
    our_request(separator, ctx.song, stems, out)
    seconds = time.perf_counter() - start
    return seconds, check_ours(out, stems, ctx)


def warm_separator(ctx: Context, precision: str, warm_song: Path) -> EnsembleSeparator:
    """A separator with both models loaded, and one short untimed request of all six
    behind it, so that no timed request pays for first-call set-up (as in a running
    worker)."""
    config = SeparatorConfig(model_repo=ctx.repo, device="cpu", precision=precision, cache_dir=None)
    separator = EnsembleSeparator(config)
    separator.warm_up()
    our_request(separator, warm_song, SOURCES, fresh_dir(ctx.runs / f"warm-up-{precision}"))
    return separator


def table(
    figures: dict[str, float],
    ratios: list[Ratio],
    duration_s: float,
    achieved: dict[str, Throughput] | None = None,
) -> str:
    """The figures (with the FLOP/s ``achieved`` by our rows) and the ratios as markdown
    tables."""
    labels = {
        "cli_six": f"demucs CLI, all six ({MODEL_A} then {MODEL_B})",
        # Each part's own best, possibly from different rounds.
        "cli_ft": f"demucs CLI, {MODEL_A} part",
        "cli_6s": f"demucs CLI, {MODEL_B} part",
        "cli_vocals": f"demucs CLI, {MODEL_A} --two-stems vocals",
        "ours_six_cold": "ours, all six, cold (`demix separate`)",
        "ours_six_warm": "ours, all six, warm (models loaded)",
        "ours_vocals_cold": "ours, vocals, cold (`demix separate --stems vocals`)",
        "ours_vocals_warm": "ours, vocals, warm (models loaded)",
        "ours_six_cold_bf16": "ours, all six, cold, bf16 (`DEMIX_PRECISION=bf16`)",
        "ours_six_warm_bf16": "ours, all six, warm, bf16",
        "ours_vocals_cold_bf16": "ours, vocals, cold, bf16 (`DEMIX_PRECISION=bf16`)",
        "ours_vocals_warm_bf16": "ours, vocals, warm, bf16",
    }
    achieved = achieved or {}
    lines = [
        "| figure | seconds | s per s of audio | GFLOP/s | % of peak |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for key, seconds in figures.items():
        rate, share = achieved[key].cells() if key in achieved else ("", "")
        lines.append(
            f"| {labels[key]} | {seconds:.2f} | {seconds / duration_s:.3f} | {rate} | {share} |"
        )
    lines += ["", "| ratio | measured | target |", "| --- | ---: | ---: |"]
    for r in ratios:
        verdict = "ok" if r.ok else "MISSED"
        note = "" if r.default else " (bf16)"
        lines.append(f"| {r.label}{note} | {r.value:.3f} | <= {r.target:.2f} {verdict} |")
    return "\n".join(lines)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    repo = write_model_repo(work / "models", size=args.size)
    song = make_song(work / "song.mp3", args.seconds)
    warm_song = make_song(work / "warm-up.mp3", 1.0)
    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    ctx = Context(
        song=song.resolve(),
        repo=repo.resolve(),
        runs=runs.resolve(),
        duration_s=decode_audio(song).duration_s,
        demucs_env=clean_env(),
        # DEMIX_CACHE_MAX_MB=0 turns the cache off: every run separates. fp32 as the warm
        # separator's (auto is bf16 on a CPU with native bf16).
        ours_env=clean_env(
            DEMIX_MODEL_REPO=str(repo.resolve()),
            DEMIX_DEVICE="cpu",
            DEMIX_CACHE_MAX_MB="0",
            DEMIX_PRECISION="fp32",
        ),
    )
    print(
        f"clip {ctx.duration_s:.2f} s, {args.size} models, {os.cpu_count()} cores, torch "
        f"threads {torch.get_num_threads()}, repeat {args.repeat}",
        flush=True,
    )
    peak = cpu_peak()
    print(peak.describe() if peak else "peak unknown: no usable lscpu output", flush=True)
    separators = {"": warm_separator(ctx, "fp32", warm_song)}
    if args.bf16:
        separators["_bf16"] = warm_separator(ctx, "bf16", warm_song)

    times: dict[str, list[float]] = {}
    files: dict[str, list[Path]] = {}
    # Per warm figure, the chunks its request ran (the same every round: cache off).
    work: dict[str, WorkCounter] = {}

    def record(figure: str, seconds: float, written: list[Path]) -> None:
        times.setdefault(figure, []).append(seconds)
        files[figure] = written
        print(f"  {figure}: {seconds:.2f} s", flush=True)

    # Each pair is demucs's run then ours, so a burst of load lands on both sides.
    for round_ in range(1, args.repeat + 1):
        print(f"round {round_}", flush=True)
        ft_s, six_s, written = run_cli_six(ctx)
        record("cli_ft", ft_s, written[: len(FOUR_SOURCES)])
        record("cli_6s", six_s, written[len(FOUR_SOURCES) :])
        record("cli_six", ft_s + six_s, written)
        record("ours_six_cold", *run_ours_cold(ctx, "ours_six_cold", SOURCES))
        if args.bf16:
            figure = "ours_six_cold_bf16"
            record(figure, *run_ours_cold(ctx, figure, SOURCES, "bf16"))
        for suffix, separator in separators.items():
            figure = f"ours_six_warm{suffix}"
            with WorkCounter() as work[figure]:
                record(figure, *run_ours_warm(ctx, separator, figure, SOURCES))
        record("cli_vocals", *run_cli_vocals(ctx))
        record("ours_vocals_cold", *run_ours_cold(ctx, "ours_vocals_cold", VOCALS))
        if args.bf16:
            figure = "ours_vocals_cold_bf16"
            record(figure, *run_ours_cold(ctx, figure, VOCALS, "bf16"))
        for suffix, separator in separators.items():
            figure = f"ours_vocals_warm{suffix}"
            with WorkCounter() as work[figure]:
                record(figure, *run_ours_warm(ctx, separator, figure, VOCALS))

    order = ["cli_six", "cli_ft", "cli_6s", "cli_vocals"]
    order += [k for k in times if k.startswith("ours_six")]
    order += [k for k in times if k.startswith("ours_vocals")]
    best = {key: min(times[key]) for key in order}
    modes = ["cold", "warm"] + (["cold_bf16", "warm_bf16"] if args.bf16 else [])
    ratios = [
        Ratio(
            key=f"{pick}_{mode}",
            label=f"ours {pick_label} {mode.replace('_', ' ')} / demucs CLI {theirs_label}",
            value=best[f"ours_{pick}_{mode}"] / best[theirs],
            target=BF16_COLD_TARGETS[pick] if mode == "cold_bf16" else target,
        )
        for pick, pick_label, theirs, theirs_label, target in (
            ("six", "all six", "cli_six", "all six", SIX_TARGET),
            ("vocals", "vocals", "cli_vocals", "two-stems", VOCALS_TARGET),
        )
        for mode in modes
    ]

    achieved = our_throughput(best, work, peak)
    print()
    print(table(best, ratios, ctx.duration_s, achieved))
    return {
        "clip_seconds": ctx.duration_s,
        "size": args.size,
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "peak": None
        if peak is None
        else {"fp32": peak.fp32, "bf16": peak.bf16, "derivation": peak.describe()},
        "figures": {
            key: {
                "seconds": seconds,
                "per_audio_second": seconds / ctx.duration_s,
                "all_runs": times[key],
                **(
                    {
                        "flops": achieved[key].flops,
                        "flop_per_s": achieved[key].flop_per_s,
                        "share_of_peak": achieved[key].share_of_peak,
                    }
                    if key in achieved
                    else {}
                ),
            }
            for key, seconds in best.items()
        },
        "ratios": {
            r.key: {"value": r.value, "target": r.target, "ok": r.ok, "default": r.default}
            for r in ratios
        },
        # Relative to the work folder (``--keep``), from the last round.
        "files": {
            key: [str(p.relative_to(ctx.runs.parent)) for p in paths]
            for key, paths in files.items()
        },
    }


def our_throughput(
    best: dict[str, float], work: dict[str, WorkCounter], peak: CpuPeak | None
) -> dict[str, Throughput]:
    """Per figure of ours, the FLOP/s its best time achieved: the FLOPs its warm request
    ran (a cold run does the same passes), against the peak of its precision."""
    achieved = {}
    for key, seconds in best.items():
        counted = work.get(key.replace("_cold", "_warm"))
        if key.startswith("ours_") and counted is not None:
            precision = "bf16" if key.endswith("_bf16") else "fp32"
            achieved[key] = throughput(counted.flops(), seconds, precision, peak)
    return achieved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="clip length")
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure (best kept)")
    parser.add_argument(
        "--size", choices=["pretrained", "tiny"], default="pretrained", help="model shapes"
    )
    parser.add_argument("--bf16", action="store_true", help="add cold and warm rows in bf16")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument(
        "--keep", type=Path, default=None, help="work in this folder and leave it there"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat is at least 1")

    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = measure(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="demix-versus-cli-") as tmp:
            result = measure(args, Path(tmp))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
