"""`demix bot` as a real process: it serves the chat and stops cleanly, token not logged."""

from __future__ import annotations

import signal
from pathlib import Path

from common.exits import EXIT_CONFIG
from tests.bot.conftest import picker_buttons
from tests.support.fake_bot_api import FakeBotApi
from tests.support.processes import child_env, demix_process, run_demix
from tests.support.waiting import wait_until

USER = 601


def test_demix_bot_serves_and_stops_on_sigterm(
    fake_bot_api: FakeBotApi, redis_url: str, tmp_path: Path, song: Path
) -> None:
    env = child_env(
        fake_bot_api.environment(),
        REDIS_URL=redis_url,
        DEMIX_DB_PATH=tmp_path / "db" / "demix.sqlite3",
        DEMIX_LOG_LEVEL="DEBUG",
    )
    log = tmp_path / "bot.log"
    with demix_process("bot", env=env, cwd=tmp_path, log=log) as process:
        fake_bot_api.send_text(USER, "/start")
        wait_until(lambda: fake_bot_api.last_message(USER), timeout=60, what="the /start reply")
        fake_bot_api.send_audio(USER, song)
        picker = wait_until(
            lambda: fake_bot_api.last_message(USER, with_keyboard=True), what="the picker"
        )
        assert picker.keyboard == picker_buttons(1)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=60)
    output = log.read_text()
    assert code == 0, output
    assert "request stored" in output
    assert fake_bot_api.token not in output
    assert (tmp_path / "db" / "demix.sqlite3").is_file()


def test_demix_bot_with_a_rejected_token_exits_without_printing_it(
    fake_bot_api: FakeBotApi, redis_url: str, tmp_path: Path
) -> None:
    wrong = "654321:WRONG-token-for-this-test"
    env = child_env(
        fake_bot_api.environment(),
        TELEGRAM_BOT_TOKEN=wrong,
        REDIS_URL=redis_url,
        DEMIX_DB_PATH=tmp_path / "demix.sqlite3",
    )
    result = run_demix("bot", env=env, cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG, "a configuration error: no restart can help"
    assert "TELEGRAM_BOT_TOKEN was rejected" in result.stderr
    assert wrong not in result.stderr + result.stdout
    assert "WRONG-token" not in result.stderr + result.stdout


def test_demix_bot_started_while_telegram_is_unreachable_waits_for_it(
    fake_bot_api: FakeBotApi, redis_url: str, tmp_path: Path
) -> None:
    fake_bot_api.stop()  # the port stays known; nothing answers there until start()
    env = child_env(
        fake_bot_api.environment(),
        REDIS_URL=redis_url,
        DEMIX_DB_PATH=tmp_path / "demix.sqlite3",
        DEMIX_LOG_FORMAT="json",
    )
    log = tmp_path / "bot.log"
    with demix_process("bot", env=env, cwd=tmp_path, log=log) as process:
        wait_until(
            lambda: log.read_text().count("Telegram not reachable") >= 2,
            timeout=60,
            what="two warnings, one per try",
        )
        assert process.poll() is None, "still running, not exited"
        fake_bot_api.start()
        fake_bot_api.send_text(USER, "/start")
        wait_until(lambda: fake_bot_api.last_message(USER), timeout=60, what="the /start reply")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    warnings = [line for line in log.read_text().splitlines() if "Telegram not reachable" in line]
    assert all('"level": "warning"' in line and "(try " in line for line in warnings)
