"""The mixer's Prometheus metrics (``demix web``): pages opened, renders, render seconds."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from common.metrics import DURATION_BUCKETS, PREFIX, new_registry

# `outcome` of a render.
SENT = "sent"
FAILED = "failed"
BUSY = "busy"  # refused: the user's previous render is still under way


class WebMetrics:
    """The web process's figures; every method is cheap and never raises."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else new_registry()
        self.pages = Counter(
            PREFIX + "mixer_pages",
            "Mixer pages served (GET /mix/<id>)",
            registry=self.registry,
        )
        self.mixes_opened = Counter(
            PREFIX + "mixer_opened",
            "Mixes opened by their owner (GET /api/mixes/<id> answered 200)",
            registry=self.registry,
        )
        self.api_errors = Counter(
            PREFIX + "mixer_api_errors",
            "API requests refused, by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.renders = Counter(
            PREFIX + "mixer_renders",
            "Mix renders by outcome: sent (in the chat), failed, busy (refused: one under way)",
            ["outcome"],
            registry=self.registry,
        )
        self.render_seconds = Histogram(
            PREFIX + "mixer_render_seconds",
            "Time from a render's start to the mix sent (renders that were sent)",
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.track_fetches = Counter(
            PREFIX + "mixer_track_fetches",
            "Tracks fetched from the Bot API for the mixer, by outcome (ok, too_big, failed)",
            ["outcome"],
            registry=self.registry,
        )

    def page_served(self) -> None:
        self.pages.inc()

    def mix_opened(self) -> None:
        self.mixes_opened.inc()

    def api_refused(self, status: int) -> None:
        self.api_errors.labels(str(status)).inc()

    def render_ended(self, outcome: str, seconds: float | None = None) -> None:
        self.renders.labels(outcome).inc()
        if seconds is not None:
            self.render_seconds.observe(seconds)

    def track_fetched(self, outcome: str) -> None:
        self.track_fetches.labels(outcome).inc()
