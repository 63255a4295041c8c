"""Prometheus metrics: the parts bot and worker share (registry, buckets, the HTTP endpoint).

Each process builds its own metrics object (:class:`bot.metrics.BotMetrics`,
:class:`worker.metrics.WorkerMetrics`) over its own :class:`CollectorRegistry`, never
prometheus_client's process-global default one: a test process that runs several bots and
workers then gets fresh series for each of them, with nothing registered twice, and each
endpoint serves exactly its own process's figures. Nothing here runs at import time: an
entry point (through the services it starts) calls :func:`serve_metrics` when
``DEMIX_METRICS_PORT`` is set.
"""

from __future__ import annotations

import logging
import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    start_http_server,
)

logger = logging.getLogger(__name__)

# Every metric name starts with this.
PREFIX = "demix_"
# Durations of stages and jobs: a tenth of a second (a cached download) to half an hour (a
# long song on a CPU worker).
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                    1200.0, 1800.0)  # fmt: skip


def new_registry() -> CollectorRegistry:
    """A registry of one process's metrics, with the standard process, platform and Python
    GC collectors (``process_resident_memory_bytes``, ``process_cpu_seconds_total``, ...)."""
    registry = CollectorRegistry(auto_describe=True)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        # They read the process's state on each scrape and hold none: sharing them is safe.
        registry.register(collector)
    return registry


class MetricsServer:
    """The ``/metrics`` endpoint of one registry, served from a daemon thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving and free the port (blocks for up to half a second)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_metrics(registry: CollectorRegistry, host: str, port: int) -> MetricsServer | None:
    """Serve ``registry`` at ``http://host:port/metrics``; ``None`` when ``port`` is 0 (off).

    A port that cannot be bound (in use, not allowed) is logged as an error and the process
    goes on without metrics: users matter more than figures, and Prometheus shows the
    target down (``up == 0``).
    """
    if port == 0:
        return None
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        logger.error("metrics endpoint not started on %s:%d: %s", host, port, exc)
        return None
    logger.info("metrics endpoint started", extra={"metrics_url": f"http://{host}:{port}/metrics"})
    return MetricsServer(server, thread)
