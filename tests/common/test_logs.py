"""common.logs: JSON lines for collectors, readable lines on a terminal, the token never shown.

Each test configures logging in a fresh interpreter, as a process does at start, so the
root logger of the test session is left alone. The child's stderr is a pipe, so ``auto``
gives JSON there; the console format is asked for by name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from common.logs import redact, resolved_format

# Shaped like a real token (bot id, colon, 35 characters), but joined at run time so that
# no token-shaped literal is committed.
TOKEN = "123456789" + ":" + "AAH-realistic_Token-value-0123456789abc"


def _run(body: str) -> list[str]:
    script = textwrap.dedent(
        """
        import logging
        from common.logs import configure_logging
        TOKEN = {token!r}
        """
    ).format(token=TOKEN) + textwrap.dedent(body)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout == ""
    return result.stderr.splitlines()


def _records(body: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in _run(body)]


def test_json_line_format() -> None:
    [record] = _records(
        """
        configure_logging("INFO", "worker")
        logging.getLogger("worker.job").info(
            "job done in %.1f s", 2.25,
            extra={"user_id": 42, "job_id": "sep:7:vocals", "tracks": "vocals,no_vocals"},
        )
        """
    )
    assert record["ts"].endswith("Z") and record["ts"][10] == "T"
    del record["ts"]
    assert list(record.items()) == [
        ("level", "info"),
        ("proc", "worker"),
        ("logger", "worker.job"),
        ("msg", "job done in 2.2 s"),
        ("job_id", "sep:7:vocals"),
        ("user_id", 42),
        ("tracks", "vocals,no_vocals"),
    ]


def test_json_keeps_one_object_per_line_with_newlines_and_tracebacks() -> None:
    records = _records(
        """
        configure_logging("INFO", "bot")
        log = logging.getLogger("bot.app")
        log.warning('two\\nlines with "quotes"', extra={"job_id": "j1", "user_id": 5})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("job failed", extra={"job_id": "j2", "user_id": 6})
        """
    )
    assert len(records) == 2
    assert records[0]["msg"] == 'two\nlines with "quotes"'
    assert (records[0]["job_id"], records[0]["user_id"]) == ("j1", 5)
    assert records[1]["level"] == "error" and records[1]["job_id"] == "j2"
    assert records[1]["exc"].startswith("Traceback (most recent call last):\n")
    assert records[1]["exc"].endswith("RuntimeError: boom")


def test_console_lines_are_readable_with_the_traceback_below() -> None:
    lines = _run(
        """
        configure_logging("INFO", "worker", "console")
        log = logging.getLogger("worker.job")
        log.info("job done", extra={"job_id": "sep:7:vocals", "user_id": 42, "s": "a b"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("job crashed", extra={"job_id": "sep:8:bass"})
        """
    )
    assert lines[0].split(" ", 1)[1] == (
        'INFO    worker worker.job: job done  job_id=sep:7:vocals user_id=42 s="a b"'
    )
    assert lines[1].endswith("ERROR   worker worker.job: job crashed  job_id=sep:8:bass")
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: boom"


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_hostile_text_cannot_forge_or_hide_a_line(log_format: str) -> None:
    lines = _run(
        f"""
        configure_logging("INFO", "bot", {log_format!r})
        name = "a\\rlevel=error msg=forged\\n{{}}\\x1b[2K\\u202eevil\\u2028x\\x85y\\x00"
        logging.getLogger("bot.app").info("song %s", name, extra={{"song": name}})
        """
    )
    assert len(lines) == 1, lines
    assert not any(ch in lines[0] for ch in "\r\x1b\u202e\u2028\x85\x00")
    if log_format == "json":
        record = json.loads(lines[0])
        hostile = "a\rlevel=error msg=forged\n{}\x1b[2K\u202eevil\u2028x\x85y\x00"
        assert record["msg"] == f"song {hostile}" and record["song"] == hostile
    else:
        escaped = "a\\x0dlevel=error msg=forged\\n{}\\x1b[2K\\u202eevil\\u2028x\\x85y\\x00"
        assert f"song {escaped}" in lines[0]


@pytest.mark.parametrize("log_format", ["json", "console"])
def test_token_never_appears(log_format: str) -> None:
    lines = _run(
        f"""
        configure_logging("DEBUG", "bot", {log_format!r})
        log = logging.getLogger("telegram.ext")
        log.info("token %s", TOKEN)
        log.info("GET https://api.telegram.org/bot%s/getMe", TOKEN)
        log.info("file https://api.telegram.org/file/bot%s/music/a.mp3", TOKEN)
        log.info("extra", extra={{"url": "http://127.0.0.1:8081/bot" + TOKEN + "/getFile"}})
        try:
            raise ValueError("bad url https://api.telegram.org/bot" + TOKEN + "/sendAudio")
        except ValueError:
            log.exception("upload failed")
        # httpx logs each request URL at INFO: silenced below WARNING even at DEBUG.
        logging.getLogger("httpx").info("HTTP Request: POST .../bot%s/getUpdates", TOKEN)
        """
    )
    text = "\n".join(lines)
    assert TOKEN not in text
    assert TOKEN.split(":")[1] not in text
    assert "token <token>" in lines[0]
    assert "https://api.telegram.org/bot<token>/getMe" in lines[1]
    assert "https://api.telegram.org/file/bot<token>/music/a.mp3" in lines[2]
    assert "http://127.0.0.1:8081/bot<token>/getFile" in lines[3]
    assert "/bot<token>/sendAudio" in text
    assert "getUpdates" not in text


def test_configure_twice_does_not_duplicate_lines_and_honours_level() -> None:
    records = _records(
        """
        configure_logging("INFO", "up")
        configure_logging("WARNING", "up")
        log = logging.getLogger("demix.up")
        log.info("hidden")
        log.warning("shown")
        """
    )
    assert [(r["msg"], r["level"], r["proc"], r["logger"]) for r in records] == [
        ("shown", "warning", "up", "demix.up")
    ]


def test_auto_is_console_on_a_terminal_and_json_elsewhere() -> None:
    class Stream:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    assert resolved_format("auto", Stream(True)) == "console"  # type: ignore[arg-type]
    assert resolved_format("auto", Stream(False)) == "json"  # type: ignore[arg-type]
    assert resolved_format("json", Stream(True)) == "json"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="log format"):
        resolved_format("xml")


def test_redact_leaves_ordinary_text_alone() -> None:
    text = (
        "job sep:123456:vocals+guitar took 3.5 s at 12:30:45 for user 42 "
        "on http://127.0.0.1:6379/0 (sep:100:vocals)"
    )
    assert redact(text) == text
    # The shortest token the tests use is still caught.
    assert redact("123456:TEST-token-not-real") == "<token>"
    assert redact(f"x {TOKEN} y") == "x <token> y"


def test_arq_job_lines_get_a_job_id_field() -> None:
    # arq's own format strings (arq/worker.py), so these lines look exactly like arq's.
    records = _records(
        """
        configure_logging("INFO", "worker")
        log = logging.getLogger("arq.worker")
        ref = "sep:12:drums+vocals:separate"
        log.info("%6.2fs → %s(%s)%s", 0.5, ref, "chat_id=1", "")
        log.info("%6.2fs ← %s ● %s", 9.25, ref, "{'tracks': []}")
        log.info("%6.2fs ↻ %s retrying job in %0.2fs", 1.0, ref, 5.0)
        log.warning("job %s expired", "sep:13:bass")
        log.info("Starting worker for %d functions: %s", 1, "separate")
        """
    )
    ids = [record.get("job_id") for record in records]
    assert ids == ["sep:12:drums+vocals"] * 3 + ["sep:13:bass", None]
