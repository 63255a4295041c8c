"""`demix up`: the whole service on one machine (Redis, one worker, the bot).

Redis at ``REDIS_URL`` is used when it answers; otherwise a ``redis-server`` child is
started on a free loopback port with append-only persistence under ``DEMIX_DATA_DIR``.
The worker and the bot run as child processes of the same interpreter, each in its own
process group, their output forwarded line by line with a name prefix.

Stopping: SIGINT (Ctrl-C) or SIGTERM stops the worker first (arq stops taking jobs and
requeues what it was running), then the bot, then Redis; each gets a grace period and is
then killed with its whole process group. A second Ctrl-C skips the grace periods.

There is no restart policy: a child that exits on its own is reported (name and exit code)
and takes the whole service down with exit code 1, so a supervisor (systemd, Docker) or the
operator sees it. Children also get SIGTERM if this process dies (Linux parent-death signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from common.logs import configure_logging, redact
from common.settings import Settings

logger = logging.getLogger(__name__)

# Seconds each child gets between SIGTERM and SIGKILL, in stop order.
GRACE_S = {"worker": 30.0, "bot": 15.0, "redis": 10.0}
REDIS_START_TIMEOUT_S = 15.0
_POLL_S = 0.1


# --- settings for the children ----------------------------------------------------------


def child_environment(redis_url: str) -> dict[str, str]:
    """The worker's and the bot's environment: ours, with the Redis actually used.

    The children run in this working directory with this environment, so they read the
    same `.env` file and variables and build the same Settings; only Redis may differ
    (the one `demix up` started).
    """
    return {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}


# --- Redis -------------------------------------------------------------------------------


class RedisRefused(Exception):
    """Redis answers at the URL but refuses us (password, TLS, not Redis...)."""


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis server answers PING at ``url``; False when nothing listens."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    # redis-py files these under ConnectionError, but a server is there: a wrong password
    # must not quietly start a second Redis, and one still loading its data will answer.
    except redis.AuthenticationError as exc:
        raise RedisRefused(str(exc)) from exc
    except redis.BusyLoadingError:
        return True
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False
    except redis.RedisError as exc:
        raise RedisRefused(str(exc)) from exc
    finally:
        client.close()


def safe_url(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}"
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_db(url: str) -> str:
    path = urlsplit(url).path.strip("/")
    return path if path.isdigit() else "0"


# --- children ----------------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec function asking Linux to SIGTERM the child when this process dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        # The parent may have died between fork and prctl; then no signal would ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


@dataclass
class Child:
    """One supervised process and its not yet forwarded partial output line."""

    name: str
    process: subprocess.Popen[bytes]
    pending: bytes = b""
    expected_exit: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None


@dataclass
class Supervisor:
    """Starts children in their own process groups and forwards their output with a prefix."""

    out: Any = field(default_factory=lambda: sys.stdout.buffer)
    children: list[Child] = field(default_factory=list)
    selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)

    def start(self, name: str, argv: list[str], env: Mapping[str, str]) -> Child:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own session: a terminal's Ctrl-C reaches only us, and we stop children in order.
            start_new_session=True,
            preexec_fn=_parent_death_signal(),
        )
        child = Child(name, process)
        assert process.stdout is not None
        os.set_blocking(process.stdout.fileno(), False)
        self.selector.register(process.stdout, selectors.EVENT_READ, child)
        self.children.append(child)
        logger.info("started %s", name, extra={"child": name, "pid": process.pid})
        return child

    def pump(self, timeout: float) -> None:
        """Forward whatever output arrives within ``timeout`` seconds."""
        if not self.selector.get_map():
            time.sleep(timeout)
            return
        for key, _ in self.selector.select(timeout):
            child: Child = key.data
            try:
                data = os.read(key.fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                self.selector.unregister(key.fileobj)
                key.fileobj.close()  # type: ignore[union-attr]
                self._emit(child, child.pending, final=True)
                child.pending = b""
                continue
            lines = (child.pending + data).split(b"\n")
            child.pending = lines.pop()
            for line in lines:
                self._emit(child, line)

    def _emit(self, child: Child, line: bytes, final: bool = False) -> None:
        if final and not line:
            return
        text = redact(line.decode("utf-8", "replace").rstrip("\r"))
        self.out.write(f"{child.name:<6}| {text}\n".encode())
        self.out.flush()

    def exited_unexpectedly(self) -> Child | None:
        for child in self.children:
            if not child.expected_exit and not child.running():
                return child
        return None

    def stop(self, child: Child, grace_s: float, hurry: Callable[[], bool]) -> bool:
        """SIGTERM the child's process group, wait up to ``grace_s``, then SIGKILL it.

        Returns True when the child exited by itself with code 0.
        """
        child.expected_exit = True
        killed = False
        was_running = child.running()
        if was_running:
            logger.info("stopping %s", child.name, extra={"child": child.name, "pid": child.pid})
            _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while child.running() and time.monotonic() < deadline and not hurry():
                self.pump(_POLL_S)
            killed = child.running()
            if killed:
                logger.warning(
                    "%s did not stop in %.0f s; killing it",
                    child.name,
                    grace_s,
                    extra={"child": child.name, "pid": child.pid},
                )
        # Also reaps whatever the child left in its group (e.g. an ffmpeg of the worker).
        _signal_group(child, signal.SIGKILL)
        code = child.process.wait()
        self.drain(child)
        if was_running and code != 0 and not killed:
            logger.warning("%s stopped with code %s", child.name, code, extra={"child": child.name})
        return code == 0 and not killed

    def drain(self, child: Child) -> None:
        """Forward the rest of an exited child's output."""
        deadline = time.monotonic() + 2.0
        stdout = child.process.stdout
        while (
            stdout is not None
            and stdout in {key.fileobj for key in self.selector.get_map().values()}
            and time.monotonic() < deadline
        ):
            self.pump(_POLL_S)


def _signal_group(child: Child, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)


# --- the command ---------------------------------------------------------------------------


class _StopRequest:
    """SIGINT/SIGTERM handler: the first asks for a clean stop, the second to hurry."""

    def __init__(self) -> None:
        self.count = 0
        self.signal_name = ""

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        self.signal_name = signal.Signals(signum).name
        if self.count == 2:
            logger.warning("second %s: killing without grace period", self.signal_name)

    @property
    def requested(self) -> bool:
        return self.count > 0

    def hurry(self) -> bool:
        return self.count > 1


def run_up(settings: Settings) -> int:
    """`demix up`: run Redis (unless one answers), a worker and the bot until stopped."""
    configure_logging(settings.log_level, "up")
    try:
        settings.require_token()
    except SystemExit as exc:
        logger.error("%s; `demix up` needs it for the bot and the worker", exc)
        return 2

    stop = _StopRequest()
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    supervisor = Supervisor()
    try:
        return _run(settings, supervisor, stop)
    finally:
        for child in reversed(supervisor.children):
            if child.running():
                supervisor.stop(child, 0.0, stop.hurry)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(settings: Settings, supervisor: Supervisor, stop: _StopRequest) -> int:
    redis_url = _ensure_redis(settings, supervisor, stop)
    if redis_url is None:
        return 0 if stop.requested else 1
    env = child_environment(redis_url)
    python = [sys.executable, "-m", "demix"]
    worker = supervisor.start("worker", [*python, "worker"], env)
    bot = supervisor.start("bot", [*python, "bot"], env)
    logger.info(
        "service up; Ctrl-C stops it",
        extra={"redis_url": safe_url(redis_url), "worker_pid": worker.pid, "bot_pid": bot.pid},
    )

    crashed: Child | None = None
    while not stop.requested:
        supervisor.pump(_POLL_S)
        crashed = supervisor.exited_unexpectedly()
        if crashed is not None:
            break

    if crashed is not None:
        supervisor.drain(crashed)
        logger.error(
            "%s exited unexpectedly with code %s; stopping the service",
            crashed.name,
            crashed.process.returncode,
            extra={"child": crashed.name, "exit_code": crashed.process.returncode},
        )
    order = {"worker": 0, "bot": 1, "redis": 2}
    children = sorted(supervisor.children, key=lambda c: order.get(c.name, 0))
    if crashed is None:
        names = ", ".join(c.name for c in children)
        logger.info("%s received; stopping %s", stop.signal_name, names)
    clean = [supervisor.stop(c, GRACE_S.get(c.name, 10.0), stop.hurry) for c in children]
    if crashed is not None:
        return 1
    if not all(clean):
        logger.error("stopped, not cleanly: see the lines above")
        return 1
    logger.info("stopped")
    return 0


def _ensure_redis(settings: Settings, supervisor: Supervisor, stop: _StopRequest) -> str | None:
    """The Redis URL to use: REDIS_URL if it answers, else a redis-server child's."""
    url = settings.redis_url
    try:
        if redis_answers(url):
            logger.info("using Redis at %s", safe_url(url), extra={"redis_url": safe_url(url)})
            return url
    except RedisRefused as exc:
        logger.error("Redis at %s answers but refuses us: %s", safe_url(url), exc)
        return None

    binary = shutil.which("redis-server")
    if binary is None:
        logger.error(
            "no Redis answers at %s and redis-server is not installed: install it "
            "(apt-get install redis-server) or point REDIS_URL at a running Redis",
            safe_url(url),
        )
        return None
    data_dir = Path(settings.data_dir).resolve() / "redis"
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    local_url = f"redis://127.0.0.1:{port}/{_redis_db(url)}"
    logger.info(
        "no Redis answers at %s; starting redis-server on port %d, data in %s",
        safe_url(url),
        port,
        data_dir,
    )
    child = supervisor.start(
        "redis",
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data_dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
        ],
        dict(os.environ),
    )
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while time.monotonic() < deadline and not stop.requested:
        supervisor.pump(_POLL_S)
        if not child.running():
            supervisor.drain(child)
            logger.error(
                "redis-server exited with code %s while starting", child.process.returncode
            )
            return None
        if redis_answers(local_url, timeout=0.5):
            return local_url
    if not stop.requested:
        logger.error("redis-server did not answer within %.0f s", REDIS_START_TIMEOUT_S)
    return None
