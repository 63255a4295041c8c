"""`demix bot` as a real process: it serves the chat and stops cleanly, token not logged."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.fake_bot_api import FakeBotApi
from tests.support.waiting import wait_until

USER = 601


def test_demix_bot_serves_and_stops_on_sigterm(
    fake_bot_api: FakeBotApi, redis_url: str, tmp_path: Path, song: Path
) -> None:
    env = {
        **os.environ,
        **fake_bot_api.environment(),
        "REDIS_URL": redis_url,
        "DEMIX_DB_PATH": str(tmp_path / "db" / "demix.sqlite3"),
        "DEMIX_LOG_LEVEL": "DEBUG",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "demix", "bot"],
        env=env,
        cwd=tmp_path,  # no stray .env is read
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        fake_bot_api.send_text(USER, "/start")
        wait_until(lambda: fake_bot_api.last_message(USER), timeout=60, what="the /start reply")
        fake_bot_api.send_audio(USER, song)
        picker = wait_until(
            lambda: fake_bot_api.last_message(USER, with_keyboard=True), what="the picker"
        )
        assert "Separate" in picker.button("Separate").text
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "request stored" in stderr
    assert fake_bot_api.token not in stderr
    assert (tmp_path / "db" / "demix.sqlite3").is_file()


def test_demix_bot_with_a_rejected_token_exits_without_printing_it(
    fake_bot_api: FakeBotApi, redis_url: str, tmp_path: Path
) -> None:
    wrong = "654321:WRONG-token-for-this-test"
    env = {
        **os.environ,
        **fake_bot_api.environment(),
        "TELEGRAM_BOT_TOKEN": wrong,
        "REDIS_URL": redis_url,
        "DEMIX_DB_PATH": str(tmp_path / "demix.sqlite3"),
    }
    result = subprocess.run(
        [sys.executable, "-m", "demix", "bot"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "TELEGRAM_BOT_TOKEN was rejected" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert "WRONG-token" not in result.stderr + result.stdout
