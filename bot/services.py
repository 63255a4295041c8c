"""What the bot process holds open: settings, the database, the queue client, the watcher,
the metrics and their endpoint.

Opened in the Application's ``post_init`` and closed in ``post_stop`` / ``post_shutdown``,
so `demix bot` (run_polling) and the tests (which drive the same hooks) share one path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from telegram import BotCommand
from telegram.error import TelegramError
from telegram.ext import Application

from bot.flood import FloodGuard
from bot.metrics import BotMetrics
from bot.queue import QueueClient
from bot.texts import COMMANDS
from bot.watcher import JobWatcher
from common.i18n import LANGUAGES, translate
from common.metrics import MetricsServer, serve_metrics
from common.settings import Settings
from storage import Database

logger = logging.getLogger(__name__)


def command_menu(lang: str) -> list[BotCommand]:
    """The command menu (setMyCommands) in ``lang``."""
    return [BotCommand(name, translate(description, lang)) for name, description in COMMANDS]


class BotServices:
    """One per bot process; handlers reach the database and the queue through it."""

    def __init__(self, settings: Settings, *, watch_interval_s: float = 2.0) -> None:
        self.settings = settings
        # The A/B experiment new jobs are assigned to (DEMIX_EXPERIMENT), parsed once.
        self.experiment = settings.experiment_spec()
        self.watch_interval_s = watch_interval_s
        self.queue = QueueClient(settings.redis_url)
        self.flood = FloodGuard(
            settings.redis_url, settings.uploads_per_hour, settings.presses_per_minute
        )
        self.metrics = BotMetrics()
        self._metrics_server: MetricsServer | None = None
        self._db: Database | None = None
        self.watcher: JobWatcher | None = None
        self._watch_task: asyncio.Task[None] | None = None

    @property
    def db(self) -> Database:
        if self._db is None:
            raise RuntimeError("the bot's database is not open (post_init has not run)")
        return self._db

    async def start(self, application: Application) -> None:
        """post_init: serve the metrics (when a port is set), open the database and start
        watching the jobs in flight."""
        if self._metrics_server is None:
            self._metrics_server = serve_metrics(
                self.metrics.registry, self.settings.metrics_host, self.settings.metrics_port
            )
        self._db = await Database.open(self.settings.db_path)
        try:
            # The default menu is English; each other language's users get their own.
            await application.bot.set_my_commands(command_menu("en"))
            for lang in LANGUAGES:
                if lang != "en":
                    await application.bot.set_my_commands(command_menu(lang), language_code=lang)
        except TelegramError as exc:
            # A cosmetic menu; the bot serves without it.
            logger.warning("could not set the command menu: %s", exc)
        self.watcher = JobWatcher(
            self._db, self.queue, application.bot, self.watch_interval_s, self.metrics
        )
        in_flight = len(await self._db.jobs_in_flight())
        self._watch_task = asyncio.create_task(self.watcher.run(), name="demix-job-watcher")
        logger.info("bot services started", extra={"jobs_in_flight": in_flight})

    async def stop_watching(self, application: Application) -> None:
        """post_stop: stop the watcher while the bot can still be used."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
            self._watch_task = None

    async def close(self, application: Application) -> None:
        """post_shutdown: close the queue client, the database and the metrics endpoint."""
        await self.stop_watching(application)
        await self.queue.close()
        if self._db is not None:
            await self._db.close()
            self._db = None
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.close)
            self._metrics_server = None
