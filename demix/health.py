"""Container health checks: ``python -m demix.health worker|bot|web`` exits 0 when healthy.

- worker: arq's own check (what ``arq --check`` does): a running worker keeps a
  health-check key in Redis, refreshed every health-check interval; the check fails when
  the key is missing (no live worker on the queue) or Redis does not answer.
- bot: ``getMe`` against the configured Bot API answers ``ok`` (the token is valid and
  Telegram, or the local Bot API server, is reachable).
- web: the mixer's ``/healthz`` on ``DEMIX_WEB_HOST:DEMIX_WEB_PORT`` answers ``{"ok": true}``
  (``0.0.0.0`` is asked on 127.0.0.1).

Neither imports torch, so the checks are cheap enough to run every 30 seconds.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from common.logs import configure_logging
from common.settings import Settings

logger = logging.getLogger(__name__)


def check_worker(settings: Settings) -> int:
    """0 when a worker recorded its health in Redis within its interval, else 1."""
    from arq.connections import RedisSettings
    from arq.constants import default_queue_name
    from arq.worker import async_check_health

    try:
        return asyncio.run(
            async_check_health(
                RedisSettings.from_dsn(settings.redis_url), queue_name=default_queue_name
            )
        )
    except Exception as exc:
        logger.error("worker health check failed: %s: %s", type(exc).__name__, exc)
        return 1


def check_bot(settings: Settings, timeout: float = 10.0) -> int:
    """0 when ``getMe`` answers ok with the configured token and Bot API, else 1."""
    import httpx

    token = settings.require_token()
    try:
        response = httpx.get(f"{settings.telegram_api_base_url}{token}/getMe", timeout=timeout)
        ok = response.status_code == 200 and response.json().get("ok") is True
    except (httpx.HTTPError, ValueError) as exc:
        logger.error("bot health check failed: %s: %s", type(exc).__name__, exc)
        return 1
    if not ok:
        logger.error("bot health check failed: getMe answered %s", response.status_code)
        return 1
    return 0


def check_web(settings: Settings, timeout: float = 10.0) -> int:
    """0 when the mixer's web server answers ``/healthz`` with ok, else 1."""
    import httpx

    host = "127.0.0.1" if settings.web_host in ("0.0.0.0", "") else settings.web_host
    url = f"http://{host}:{settings.web_port}/healthz"
    try:
        response = httpx.get(url, timeout=timeout)
        ok = response.status_code == 200 and response.json().get("ok") is True
    except (httpx.HTTPError, ValueError) as exc:
        logger.error("web health check failed: %s: %s", type(exc).__name__, exc)
        return 1
    if not ok:
        logger.error("web health check failed: /healthz answered %s", response.status_code)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check named on the command line."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args not in (["worker"], ["bot"], ["web"]):
        print("usage: python -m demix.health worker|bot|web", file=sys.stderr)
        return 2
    settings = Settings()
    configure_logging(settings.log_level, f"health-{args[0]}", settings.log_format)
    checks = {"worker": check_worker, "bot": check_bot, "web": check_web}
    return checks[args[0]](settings)


if __name__ == "__main__":
    sys.exit(main())
