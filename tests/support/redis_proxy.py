"""A TCP proxy in front of a real redis-server that can cut or stall a connection at a chosen
command.

A crash of Redis lands at a random point of a client's work; to test the one point that
matters (a connection lost inside a WATCH ... EXEC claim), the proxy cuts the connection
when a client sends ``cut_at`` after it has sent ``after``, once. To hold a client at one
point (a worker stopped while it reads a job), it stalls the connection at a command, once.
A network partition (:meth:`partition`, :meth:`heal`) stops forwarding anything at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from tests.support.redis_server import free_port


class RedisProxy:
    """Forwards 127.0.0.1:``port`` to the Redis at ``target_url`` (on this host); see
    :meth:`cut_once` and :meth:`stall_once`."""

    def __init__(self, target_url: str) -> None:
        target_port = urlsplit(target_url).port
        if target_port is None:
            raise ValueError(f"no port in {target_url!r}")
        self.target_port = target_port
        self.port = free_port()
        self.cuts = 0
        self.stalls = 0
        self._armed: tuple[bytes, bytes] | None = None
        self._stall_at: bytes | None = None
        self._server: asyncio.Server | None = None
        self.partitioned = False
        # The client side of every open connection (closed by heal()).
        self._clients: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def cut_once(self, after: bytes, cut_at: bytes) -> None:
        """Close the next connection that sends command ``cut_at`` after command ``after``,
        without forwarding it (command names in upper case, e.g. ``b"WATCH"``)."""
        self._armed = (after, cut_at)

    def stall_once(self, at: bytes) -> None:
        """Stop forwarding the next connection that sends command ``at``, from that data on:
        the client waits for a reply that never comes, until it closes the connection."""
        self._stall_at = at

    def partition(self) -> None:
        """From now on forward nothing either way: commands and replies are swallowed, new
        connections are accepted and then hear nothing (a partitioned network)."""
        self.partitioned = True

    def heal(self) -> None:
        """End the partition. Connections that lived through it are closed: a command they
        sent was lost, so their clients must reconnect (as after a real partition)."""
        self.partitioned = False
        for writer in list(self._clients):
            writer.close()

    async def _pipe_to_redis(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        seen_after = False
        while data := await reader.read(65536):
            if self.partitioned:
                continue
            if self._stall_at is not None and b"\r\n" + self._stall_at + b"\r\n" in data.upper():
                self._stall_at = None
                self.stalls += 1
                while await reader.read(65536):
                    pass
                return
            if self._armed is not None:
                after, cut_at = self._armed
                # RESP arrays name the command as a bulk string: "$5\r\nWATCH\r\n".
                if seen_after and b"\r\n" + cut_at + b"\r\n" in data.upper():
                    self._armed = None
                    self.cuts += 1
                    return
                seen_after = seen_after or b"\r\n" + after + b"\r\n" in data.upper()
            writer.write(data)
            await writer.drain()

    async def _pipe_back(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            if self.partitioned:
                continue
            writer.write(data)
            await writer.drain()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._clients.add(client_w)
        upstream = asyncio.ensure_future(self._pipe_to_redis(client_r, redis_w))
        downstream = asyncio.ensure_future(self._pipe_back(redis_r, client_w))
        with contextlib.suppress(ConnectionError):
            await asyncio.wait([upstream, downstream], return_when=asyncio.FIRST_COMPLETED)
        self._clients.discard(client_w)
        for task in (upstream, downstream):
            task.cancel()
        for writer in (client_w, redis_w):
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[RedisProxy]:
        """Serve in this event loop while the block runs."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        try:
            yield self
        finally:
            self._server.close()
            await self._server.wait_closed()
