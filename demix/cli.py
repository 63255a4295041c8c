"""The `demix` console script: one entry point per process kind, settings built here."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from common.settings import Settings
from separation.config import PRECISIONS
from separation.formats import DEFAULT_OUTPUT_FORMAT, FILE_FORMATS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="demix", description="Neural Music Demixing: split songs into stems."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("bot", help="run the Telegram bot (long polling)")
    sub.add_parser("worker", help="run an arq separation worker")
    sub.add_parser("up", help="run the whole service on this machine (Redis, worker, bot)")
    sub.add_parser("web", help="run the mixer's web server (the Mini App's page and API)")

    separate = sub.add_parser("separate", help="separate local audio files into stems")
    separate.add_argument(
        "files",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="audio files (mp3, wav, flac, ogg, m4a, ...); the models load once for all",
    )
    separate.add_argument(
        "--stems",
        default="drums,bass,vocals,guitar,piano,other",
        help="comma-separated sources to pick (default: all six)",
    )
    separate.add_argument("--out", type=Path, default=Path("."), help="output folder")
    separate.add_argument(
        "--format",
        choices=FILE_FORMATS,
        default=DEFAULT_OUTPUT_FORMAT,
        help="mp3 (320 kbps, the default), flac (24-bit) or wav (32-bit float: the tracks "
        "exactly as separated)",
    )
    separate.add_argument(
        "--device", default=None, help="auto, cpu, cuda, cuda:N or mps (default: DEMIX_DEVICE)"
    )
    separate.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="the network's precision (default: DEMIX_PRECISION; auto is bf16 where the "
        "device computes it natively, else fp32)",
    )

    stats = sub.add_parser("stats", help="usage and feedback figures from the database")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.add_argument(
        "--experiments",
        action="store_true",
        help="the A/B experiment's report per variant (DEMIX_EXPERIMENT's, else the latest)",
    )

    models = sub.add_parser("models", help="manage the local model folder")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    fetch = models_sub.add_parser("fetch", help="download the ensemble's weights into a folder")
    fetch.add_argument("--to", type=Path, default=None, help="folder (default: DEMIX_MODEL_REPO)")
    fetch.add_argument(
        "--mirror", default=None, help="download from this copy of demucs's model server"
    )
    check = models_sub.add_parser("check", help="verify a local model folder")
    check.add_argument("--repo", type=Path, default=None, help="folder (default: DEMIX_MODEL_REPO)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, build the settings and run the chosen command."""
    return _run(_parser().parse_args(argv))


def script() -> NoReturn:
    """The ``demix`` console script and ``python -m demix``: :func:`main` as the process,
    its status the exit status."""
    args = _parser().parse_args()
    status = _run(args)
    if args.command == "separate":
        _exit_without_teardown(status)
    sys.exit(status)


def _exit_without_teardown(status: int) -> NoReturn:
    """End the process at once, its output flushed: after ``demix separate`` every file is
    written and closed, its work folders removed and its threads joined, so the
    interpreter's teardown would only free memory the system takes back anyway. With torch
    loaded that teardown took 0.4 s of a 30-second song's 9.2 s run (vocals, bf16) on this
    project's 2-core machine."""
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: Python's own exit reports it, as without this
        sys.exit(status)
    os._exit(status)


def _run(args: argparse.Namespace) -> int:
    settings = Settings()
    # Imports are deferred so that `demix bot` never imports torch.
    if args.command == "bot":
        from bot.app import run_bot

        return run_bot(settings)
    if args.command == "worker":
        from worker.app import run_worker

        return run_worker(settings)
    if args.command == "web":
        from web.app import main as run_web

        return run_web(settings)
    if args.command == "up":
        from demix.up import run_up

        return run_up(settings)
    if args.command == "separate":
        from separation.cli import run_separate

        return run_separate(
            args.files,
            args.stems,
            args.out,
            settings.separator_config(),
            fmt=args.format,
            device=args.device,
            precision=args.precision,
        )
    if args.command == "stats":
        from demix.stats import run_stats

        return run_stats(settings, as_json=args.json, experiments=args.experiments)
    if args.command == "models":
        from demix.models import run_models_check, run_models_fetch

        if args.models_command == "fetch":
            return run_models_fetch(settings, args.to, mirror=args.mirror)
        return run_models_check(settings, args.repo)
    raise AssertionError(f"unhandled command {args.command}")


if __name__ == "__main__":
    script()
