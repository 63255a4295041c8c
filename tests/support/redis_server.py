"""A real redis-server on a free loopback port, and a short-lived client to it, for tests."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.support.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def answers(port: int, reply: bytes = b"+PONG") -> bool:
    """True when something on ``port`` answers PING with ``reply`` (``-NOAUTH`` when it wants
    a password)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(reply)
    except OSError:
        return False


class RedisServer:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`url` points at db 0.

    With ``password`` it refuses clients that do not give it (``requirepass``). With
    ``appendonly`` it persists as ``demix up`` runs it (AOF, fsync every second), so
    :meth:`kill` then :meth:`start` is a crash and a restart that keeps the data.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        password: str | None = None,
        *,
        appendonly: bool = False,
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.password = password
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.appendonly else "no",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.workdir),
                *(("--requirepass", self.password) if self.password else ()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        reply = b"-NOAUTH" if self.password else b"+PONG"
        wait_until(lambda: answers(self.port, reply), timeout=10, what="redis-server to answer")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash or the OOM killer would: no shutdown save."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None


@contextlib.contextmanager
def redis_client(url: str) -> Iterator[redis.Redis]:
    """A synchronous client to ``url`` for the block (to look at or change arq's keys)."""
    client = redis.Redis.from_url(url)
    try:
        yield client
    finally:
        client.close()


def mark_running(url: str, job_id: str) -> None:
    """Set arq's in-progress mark of ``job_id``, as a worker does when it takes the job."""
    with redis_client(url) as client:
        client.set(f"arq:in-progress:{job_id}", b"1", px=60_000)
