"""`demix up`: the whole service on one machine (Redis, one worker, the bot, and the mixer's
web server when ``DEMIX_WEBAPP_URL`` is set: without it no Mix button leads there).

Redis at ``REDIS_URL`` is used when it answers; otherwise a ``redis-server`` child is
started on a free loopback port with append-only persistence under ``DEMIX_DATA_DIR``.
The worker and the bot run as child processes of the same interpreter, each in its own
process group, their output forwarded line by line with a name prefix.

Stopping: SIGINT (Ctrl-C) or SIGTERM stops the worker first (arq stops taking jobs and
requeues what it was running), then the bot, then Redis; each gets a grace period and is
then killed with its whole process group. A second Ctrl-C skips the grace periods.

A child that exits on its own is reported (name and exit code) and started again after a
pause that doubles with each quick crash (1 s up to a minute; a child that ran a minute
starts again after 1 s), while the others keep running. Only a configuration error (exit
code 78: a rejected token, no models), which no restart can mend, takes the whole service
down with exit code 1. Children also get SIGTERM if this process dies (Linux parent-death
signal).
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

from common.exits import EXIT_CONFIG
from common.logs import configure_logging, redact, resolved_format
from common.settings import Settings

logger = logging.getLogger(__name__)

# Seconds each child gets between SIGTERM and SIGKILL, in stop order.
GRACE_S = {"worker": 30.0, "bot": 15.0, "web": 10.0, "redis": 10.0}
REDIS_START_TIMEOUT_S = 15.0
_POLL_S = 0.1
# Restart pauses: from the first, doubling per crash that comes soon after a (re)start.
RESTART_FIRST_S = 1.0
RESTART_MAX_S = 60.0
# A child that ran this long before exiting is restarted after the first pause again.
RESTART_RESET_S = 60.0


# --- settings for the children ----------------------------------------------------------


def child_environment(redis_url: str, log_format: str | None = None) -> dict[str, str]:
    """The worker's and the bot's environment: ours, with the Redis actually used.

    The children run in this working directory with this environment, so they read the
    same `.env` file and variables and build the same Settings; only Redis may differ
    (the one `demix up` started), and the log format when given: the children's output is
    a pipe to us, so they would not see the terminal that decides ``auto``.
    """
    env = {**os.environ, "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    if log_format is not None:
        env["DEMIX_LOG_FORMAT"] = log_format
    return env


def worker_environment(env: Mapping[str, str], metrics_port: int) -> dict[str, str]:
    """The worker's environment: the bot's, with the metrics port after the bot's (both
    serve on this host); unchanged while metrics are off."""
    if metrics_port == 0:
        return dict(env)
    return {**env, "DEMIX_METRICS_PORT": str(metrics_port + 1)}


def web_environment(env: Mapping[str, str], metrics_port: int) -> dict[str, str]:
    """The web server's environment: the bot's, with the metrics port two after the bot's
    (the worker has the one after it); metrics off when that is past the last port."""
    if metrics_port == 0:
        return dict(env)
    port = metrics_port + 2
    return {**env, "DEMIX_METRICS_PORT": str(port if port <= 65535 else 0)}


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
    """One supervised process, how to start it again, and its unforwarded partial line."""

    name: str
    process: subprocess.Popen[bytes]
    argv: list[str] = field(default_factory=list)
    env: Mapping[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
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
        child = Child(name, process, list(argv), dict(env))
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

    def restart(self, old: Child) -> Child:
        """Start ``old`` (exited) again with its command line and environment."""
        self.children.remove(old)
        return self.start(old.name, old.argv, old.env)

    def exited_unexpectedly(self) -> Child | None:
        for child in self.children:
            if not child.expected_exit and not child.running():
                return child
        return None

    def stop(self, child: Child, grace_s: float, hurry: Callable[[], bool]) -> bool:
        """SIGTERM the child's process group, wait up to ``grace_s``, then SIGKILL it.

        Returns True when the child exited by itself with code 0, or had exited before and
        that was already dealt with (a restart was due).
        """
        handled = child.expected_exit and not child.running()
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
        return handled or (code == 0 and not killed)

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
    configure_logging(settings.log_level, "up", settings.log_format)
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
    env = child_environment(redis_url, resolved_format(settings.log_format))
    python = [sys.executable, "-m", "demix"]
    worker = supervisor.start(
        "worker", [*python, "worker"], worker_environment(env, settings.metrics_port)
    )
    bot = supervisor.start("bot", [*python, "bot"], env)
    extra: dict[str, Any] = {
        "redis_url": safe_url(redis_url),
        "worker_pid": worker.pid,
        "bot_pid": bot.pid,
    }
    if settings.webapp_url is not None:
        web = supervisor.start("web", [*python, "web"], web_environment(env, settings.metrics_port))
        extra["web_pid"] = web.pid
    logger.info("service up; Ctrl-C stops it", extra=extra)

    crashed = _keep_running(supervisor, stop)
    order = {"worker": 0, "bot": 1, "web": 2, "redis": 3}
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


def _keep_running(supervisor: Supervisor, stop: _StopRequest) -> Child | None:
    """Forward output and restart children that exit, until a stop is asked for (None) or
    a child exits with a configuration error (that child)."""
    pauses: dict[str, float] = {}
    due: dict[str, tuple[Child, float]] = {}
    while not stop.requested:
        supervisor.pump(_POLL_S)
        now = time.monotonic()
        crashed = supervisor.exited_unexpectedly()
        if crashed is not None:
            supervisor.drain(crashed)
            crashed.expected_exit = True  # handled here: restarted, or the service stops
            code = crashed.process.returncode
            extra = {"child": crashed.name, "exit_code": code}
            if code == EXIT_CONFIG:
                logger.error(
                    "%s exited with code %s, a configuration error a restart cannot mend; "
                    "stopping the service",
                    crashed.name,
                    code,
                    extra=extra,
                )
                return crashed
            ran_s = now - crashed.started_at
            pause = RESTART_FIRST_S
            if ran_s < RESTART_RESET_S and crashed.name in pauses:
                pause = min(RESTART_MAX_S, pauses[crashed.name] * 2)
            pauses[crashed.name] = pause
            logger.error(
                "%s exited unexpectedly with code %s; starting it again in %.0f s",
                crashed.name,
                code,
                pause,
                extra=extra,
            )
            due[crashed.name] = (crashed, now + pause)
        for name, (old, at) in list(due.items()):
            if now >= at:
                del due[name]
                supervisor.restart(old)
    return None


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
