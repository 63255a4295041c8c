"""`demix web` as a process: it serves, its health check and metrics work, SIGTERM stops it
cleanly, and a token Telegram rejects is a configuration error (exit 78)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from common.exits import EXIT_CONFIG
from tests.support.fake_bot_api import FakeBotApi
from tests.support.processes import child_env, demix_process
from tests.support.waiting import wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def health(env: dict[str, str]) -> int:
    return subprocess.run(
        [sys.executable, "-m", "demix.health", "web"],
        env=env,
        cwd="/",
        capture_output=True,
        timeout=60,
    ).returncode


def test_demix_web_serves_reports_health_and_metrics_and_stops_on_sigterm(
    fake_bot_api: FakeBotApi, redis_url: str, tmp_path: Path
) -> None:
    port, metrics_port = free_port(), free_port()
    env = child_env(
        fake_bot_api.environment(),
        REDIS_URL=redis_url,
        DEMIX_WEB_PORT=port,
        DEMIX_METRICS_PORT=metrics_port,
        DEMIX_DB_PATH=tmp_path / "demix.sqlite3",
        DEMIX_CACHE_DIR=tmp_path / "cache",
        DEMIX_LOG_FORMAT="json",
    )
    log = tmp_path / "web.log"
    assert health(env) == 1, "nothing listens yet: the check can fail"
    with demix_process("web", env=env, cwd=tmp_path, log=log) as process:
        wait_until(lambda: health(env) == 0, timeout=60, interval=0.2, what="demix web up")
        page = httpx.get(f"http://127.0.0.1:{port}/mix/{'A' * 22}", timeout=10)
        assert page.status_code in (200, 404)  # the page's files may not exist yet
        assert "frame-ancestors" in page.headers["Content-Security-Policy"]
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        assert "demix_mixer_renders" in metrics and "demix_mixer_render_seconds" in metrics
        if page.status_code == 200:
            assert "demix_mixer_pages_total 1.0" in metrics
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    output = log.read_text()
    assert "mixer web server started" in output
    assert fake_bot_api.token not in output


def test_a_rejected_token_is_a_configuration_error(
    fake_bot_api: FakeBotApi, redis_url: str, tmp_path: Path
) -> None:
    env = child_env(
        fake_bot_api.environment(),
        TELEGRAM_BOT_TOKEN="999:not-the-token",
        REDIS_URL=redis_url,
        DEMIX_WEB_PORT=free_port(),
        DEMIX_DB_PATH=tmp_path / "demix.sqlite3",
        DEMIX_CACHE_DIR=tmp_path / "cache",
    )
    with demix_process("web", env=env, cwd=tmp_path, log=tmp_path / "web.log") as process:
        assert process.wait(timeout=60) == EXIT_CONFIG
    assert "rejected" in (tmp_path / "web.log").read_text()
