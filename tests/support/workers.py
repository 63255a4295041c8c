"""The one way tests run arq's real Worker with the worker engineer's settings, in-process."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from arq.worker import Worker

from common.settings import Settings
from worker.app import DemixWorker, worker_settings

BURST_TIMEOUT_S = 180.0


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, separator: Any, *, burst: bool = False
) -> AsyncIterator[Worker]:
    """arq's Worker running in this event loop while the block runs; closed when it ends.

    With ``burst=True`` the worker stops once the queue is empty (deferred retries
    included), and leaving the block waits for that (at most ``BURST_TIMEOUT_S``).
    Closing is what SIGTERM does in production: running jobs are cancelled, polling stops.
    """
    worker = DemixWorker(
        **worker_settings(
            settings, separator=separator, burst=burst, handle_signals=False, poll_delay_s=0.05
        )
    )
    task = asyncio.create_task(worker.async_run())
    try:
        yield worker
        if burst:
            await asyncio.wait_for(task, timeout=BURST_TIMEOUT_S)
    finally:
        await worker.close()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def run_worker_burst(settings: Settings, separator: Any) -> Worker:
    """Run a burst worker until the queue is empty; its counters tell what happened."""
    async with running_worker(settings, separator, burst=True) as worker:
        pass
    return worker
