"""The Docker images and the Compose stack, built and run for real, end to end.

Run through ``scripts/compose-e2e.sh`` (which makes sure a Docker engine is there), or
directly with the project's venv: ``.venv/bin/python scripts/compose_e2e.py [--cheap]``.

The design: the driver runs here, on the host, in the venv. It starts the fake Bot API
server of the tests (tests/support/fake_bot_api) listening on 0.0.0.0, and the containers
of the stack reach it as ``host.docker.internal`` (docker-compose.e2e.yml). So the driver
plays the user with the same API the tests use (send a song, press buttons, read the chat)
while the bot, the worker and Redis run as the real images under Compose.

Steps (each prints what it saw; the first failed check stops the run with exit code 1):

1. ``docker compose config`` of the production file and of the test override;
2. build the bot and the worker images (the worker with the CPU wheel of torch that pip
   finds on this machine, put into wheels/), print build times and image sizes;
3. the bot image has no torch, the worker image has it, both run as a non-root user;
   with ``--cheap`` only the bot image is built and checked (what CI runs);
4. tiny random models into the models volume, ``docker compose up --wait``: Redis, bot and
   worker turn healthy;
5. a song goes through: picker, vocals, Separate, the two tracks arrive in the chat;
6. the worker is stopped and a second request is queued; ``docker compose down`` then
   ``up``: the queued job runs, its sources come from the cache (no new model pass), and
   the database still holds both requests.

The Compose project is ``demix-e2e`` (its own containers and volumes), removed at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.audio import make_song  # noqa: E402
from tests.support.fake_bot_api import TEST_TOKEN, ChatMessage, FakeBotApi  # noqa: E402
from tests.support.waiting import wait_until  # noqa: E402

PROJECT = "demix-e2e"
BOT_IMAGE = "demix-bot"
WORKER_IMAGE = "demix-worker:e2e"
USER_ID = 4242
JOB_TIMEOUT_S = 300.0
TORCH_VERSION = "2.13.0"


class CheckFailed(Exception):
    """A check of the end-to-end run did not hold."""


def say(text: str) -> None:
    print(f"compose-e2e: {text}", flush=True)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckFailed(what)
    say(f"ok: {what}")


class Compose:
    """``docker compose`` for the test project, with the test override and environment."""

    def __init__(self, bot_api_port: int, torch_spec: str) -> None:
        self.env = {
            **os.environ,
            # The services' env_file: the example's defaults; the override sets the rest.
            "DEMIX_ENV_FILE": ".env.example",
            "E2E_BOT_API_PORT": str(bot_api_port),
            "E2E_TELEGRAM_BOT_TOKEN": TEST_TOKEN,
            "E2E_TORCH_SPEC": torch_spec,
        }
        self.base = [
            "docker",
            "compose",
            "-p",
            PROJECT,
            "-f",
            "docker-compose.yml",
            "-f",
            "docker-compose.e2e.yml",
        ]

    def run(
        self, *args: str, check: bool = True, capture: bool = False, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            cwd=ROOT,
            env=self.env,
            check=check,
            text=True,
            capture_output=capture,
            timeout=timeout,
        )

    def output(self, *args: str) -> str:
        return self.run(*args, capture=True).stdout

    def worker_records(self) -> list[dict[str, Any]]:
        """The worker's log records (JSON lines: stderr is no terminal in a container)."""
        text = self.output("logs", "--no-color", "--no-log-prefix", "worker")
        records = []
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records


def docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", *args], cwd=ROOT, text=True, capture_output=True, timeout=timeout
    )


def torch_wheel() -> tuple[str, list[Path]]:
    """Put a torch wheel into wheels/; return the pip requirement that picks it and the
    files this call put there (to remove at the end).

    ``pip download`` with this machine's pip configuration: here that is the local CPU
    wheel (no GBs of CUDA libraries to fetch); elsewhere whatever pip finds.
    """
    wheels = ROOT / "wheels"
    found = sorted(wheels.glob(f"torch-{TORCH_VERSION}*.whl"))
    added: list[Path] = []
    if not found:
        say(f"fetching torch=={TORCH_VERSION} into wheels/ (pip download, no deps)")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--dest",
                str(wheels),
                f"torch=={TORCH_VERSION}",
            ],
            check=True,
        )
        found = added = sorted(wheels.glob(f"torch-{TORCH_VERSION}*.whl"))
    version = found[-1].name.split("-")[1]
    return f"torch=={version}", added


def image_size_mb(image: str) -> float:
    out = docker("image", "inspect", "-f", "{{.Size}}", image)
    return int(out.stdout.strip()) / 1e6


def check_non_root(image: str) -> None:
    who = docker("run", "--rm", image, "id")
    uid = re.search(r"uid=(\d+)", who.stdout)
    check(
        uid is not None and uid.group(1) != "0",
        f"{image} runs as a non-root user ({who.stdout.strip()})",
    )


def check_bot_image() -> None:
    no_torch = docker("run", "--rm", BOT_IMAGE, "python", "-c", "import torch")
    check(
        no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr,
        "the bot image has no torch (`import torch` fails: No module named 'torch')",
    )
    check_non_root(BOT_IMAGE)


def check_worker_image() -> None:
    has_torch = docker(
        "run", "--rm", WORKER_IMAGE, "python", "-c", "import torch; print(torch.__version__)"
    )
    check(
        has_torch.returncode == 0,
        f"the worker image has torch {has_torch.stdout.strip() or has_torch.stderr[-300:]}",
    )
    check_non_root(WORKER_IMAGE)


def wait_healthy(compose: Compose, services: Sequence[str]) -> None:
    """``up --wait`` has returned; show every service's state and health."""
    rows = [json.loads(line) for line in compose.output("ps", "--format", "json").splitlines()]
    states = {row["Service"]: (row.get("State"), row.get("Health")) for row in rows}
    for service in services:
        say(f"{service}: {states.get(service)}")
    check(
        all(states.get(s) == ("running", "healthy") for s in services),
        f"{', '.join(services)} running and healthy",
    )


def separate(api: FakeBotApi, song: Path, stem: str) -> ChatMessage:
    """Send ``song``, pick ``stem``, press Separate; return the picker message."""
    sent = api.send_audio(USER_ID, song)
    picker = api.wait_for_message(USER_ID, with_keyboard=True, after=sent, timeout=60)
    api.wait_for_answer(api.press_button(USER_ID, picker, picker.button(stem).callback_data or ""))
    answer = api.wait_for_answer(
        api.press_button(USER_ID, picker, picker.button("Separate").callback_data or "")
    )
    check(not answer.show_alert, f"Separate ({stem}) accepted, no alert")
    return picker


def wait_for_tracks(api: FakeBotApi, count: int) -> list[str]:
    def tracks() -> list[str]:
        found = [m.file.file_name or "" for m in api.audio_messages(USER_ID) if m.file]
        return found if len(found) >= count else []

    return wait_until(
        tracks, timeout=JOB_TIMEOUT_S, interval=0.5, what=f"{count} tracks in the chat"
    )


def job_done(compose: Compose, job_prefix: str) -> dict[str, Any]:
    def record() -> dict[str, Any]:
        for r in compose.worker_records():
            if r.get("msg") == "job done" and str(r.get("job_id", "")).startswith(job_prefix):
                return r
        return {}

    return wait_until(
        record, timeout=60, interval=1, what=f"the worker's 'job done' record for {job_prefix}"
    )


def cache_entries(compose: Compose) -> int:
    out = compose.output(
        "run", "--rm", "--no-deps", "-T", "--entrypoint", "sh", "worker", "-c",
        "find /cache -name '*.npy' | wc -l",
    )  # fmt: skip
    return int(out.strip().splitlines()[-1])


def stats(compose: Compose) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(
        compose.output("exec", "-T", "bot", "demix", "stats", "--json")
    )
    return result


def timed(what: str, compose: Compose, *args: str) -> float:
    start = time.monotonic()
    compose.run(*args)
    took = time.monotonic() - start
    say(f"{what}: {took:.1f} s")
    return took


def run(cheap: bool, keep: bool) -> None:
    torch_spec = f"torch=={TORCH_VERSION}"
    added_wheels: list[Path] = []
    if not cheap:
        torch_spec, added_wheels = torch_wheel()
        say(f"worker image gets {torch_spec} (wheels/, TORCH_SPEC, TORCH_FIND_LINKS)")
    api = FakeBotApi(host="0.0.0.0")
    api.start()
    compose = Compose(api.port, torch_spec)
    try:
        prod = subprocess.run(
            ["docker", "compose", "-f", "docker-compose.yml", "config", "-q"],
            cwd=ROOT,
            env=compose.env,
        )
        check(prod.returncode == 0, "docker compose config (docker-compose.yml)")
        compose.run("config", "-q")
        say("ok: docker compose config (with docker-compose.e2e.yml)")
        compose.run("down", "-v", "--remove-orphans")

        timed("bot image built", compose, "build", "bot")
        say(f"{BOT_IMAGE}: {image_size_mb(BOT_IMAGE):.0f} MB")
        check_bot_image()
        if cheap:
            return
        timed("worker image built", compose, "build", "worker")
        say(f"{WORKER_IMAGE}: {image_size_mb(WORKER_IMAGE):.0f} MB")
        check_worker_image()

        timed("tiny models written and checked", compose, "run", "--rm", "-T", "models")
        timed("up --wait (healthy)", compose, "up", "-d", "--wait", "--wait-timeout", "240")
        wait_healthy(compose, ["redis", "bot", "worker"])

        with tempfile.TemporaryDirectory() as tmp:
            song = make_song(Path(tmp) / "Song.mp3", seconds=4.0)
            start = time.monotonic()
            separate(api, song, "vocals")
            names = wait_for_tracks(api, 2)
            say(f"tracks after {time.monotonic() - start:.1f} s: {names}")
            check(names == ["Song - vocals.mp3", "Song - no_vocals.mp3"], "the tracks arrived")
            first = job_done(compose, "sep:1:")
            say(f"first job: separate_s={first.get('separate_s')} total_s={first.get('total_s')}")

            # A job queued while no worker runs survives down / up (Redis AOF), and so do
            # the database (bot's volume) and the separated sources (worker's cache volume).
            compose.run("stop", "worker")
            separate(api, song, "vocals")
            queued = compose.output("exec", "-T", "redis", "redis-cli", "ZCARD", "arq:queue")
            check(queued.strip() == "1", f"one job queued in Redis ({queued.strip()})")
            cached = cache_entries(compose)
            check(cached > 0, f"{cached} separated sources in the cache volume")

            timed("down", compose, "down")
            timed("up --wait (healthy)", compose, "up", "-d", "--wait", "--wait-timeout", "240")
            wait_healthy(compose, ["redis", "bot", "worker"])
            names = wait_for_tracks(api, 4)
            check(len(names) == 4, f"the queued job ran after down/up: {names[2:]}")
            second = job_done(compose, "sep:2:")
            say(
                f"second job: separate_s={second.get('separate_s')} total_s={second.get('total_s')}"
            )
            check(
                float(second["separate_s"]) < float(first["separate_s"]),
                "the second job's sources came from the cache kept across down/up "
                f"(separate_s {second['separate_s']} < {first['separate_s']})",
            )
            check(cache_entries(compose) == cached, "no new cache entries (no new model pass)")
            figures = stats(compose)
            say(f"demix stats: requests={figures['requests']} jobs={figures['jobs']}")
            check(
                figures["requests"] == 2 and figures["jobs"].get("done") == 2,
                "the database kept both requests and both jobs are done",
            )
    except BaseException:
        if not cheap:
            subprocess.run([*compose.base, "ps", "-a"], cwd=ROOT, env=compose.env)
            subprocess.run(
                [*compose.base, "logs", "--no-color", "--tail", "60"], cwd=ROOT, env=compose.env
            )
        raise
    finally:
        if not keep:
            compose.run("down", "-v", "--remove-orphans", check=False)
        api.stop()
        for wheel in added_wheels:
            wheel.unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--cheap",
        action="store_true",
        help="compose config, image builds and image checks only (no stack run)",
    )
    parser.add_argument("--keep", action="store_true", help="leave the stack and volumes up")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        run(cheap=args.cheap, keep=args.keep)
    except (CheckFailed, AssertionError, subprocess.CalledProcessError) as exc:
        say(f"FAILED: {exc}")
        return 1
    say(f"passed in {time.monotonic() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
