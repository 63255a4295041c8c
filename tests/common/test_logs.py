"""demix.logs: one key=value line per event, job fields first, the bot token never shown.

Each test configures logging in a fresh interpreter, as a process does at start, so the
root logger of the test session is left alone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from common.logs import redact

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


def test_job_line_format() -> None:
    [line] = _run(
        """
        configure_logging("INFO", "worker")
        logging.getLogger("worker.job").info(
            "job done in %.1f s", 2.25,
            extra={"user_id": 42, "job_id": "sep:7:vocals", "tracks": "vocals,no_vocals"},
        )
        """
    )
    fields = line.split(" ")
    assert fields[0].startswith("ts=") and fields[0].endswith("Z")
    assert fields[1:] == [
        "level=info",
        "proc=worker",
        "logger=worker.job",
        'msg="job',
        "done",
        "in",
        "2.2",
        's"',
        "job_id=sep:7:vocals",
        "user_id=42",
        "tracks=vocals,no_vocals",
    ]


def test_one_line_per_event_even_with_newlines_and_tracebacks() -> None:
    lines = _run(
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
    assert len(lines) == 2
    assert 'msg="two\\nlines with \\"quotes\\""' in lines[0]
    assert "job_id=j1 user_id=5" in lines[0]
    assert "level=error" in lines[1]
    assert "job_id=j2 user_id=6" in lines[1]
    assert 'exc="Traceback (most recent call last):\\n' in lines[1]
    assert "RuntimeError: boom" in lines[1]


def test_hostile_text_cannot_forge_or_hide_a_line() -> None:
    lines = _run(
        """
        configure_logging("INFO", "bot")
        name = "a\\rlevel=error msg=forged\\x1b[2K\\u202eevil\\u2028x\\x85y\\x00"
        logging.getLogger("bot.app").info("song %s", name, extra={"song": name})
        """
    )
    assert len(lines) == 1, lines
    escaped = "a\\x0dlevel=error msg=forged\\x1b[2K\\u202eevil\\u2028x\\x85y\\x00"
    assert f'msg="song {escaped}"' in lines[0]
    assert f'song="{escaped}"' in lines[0]
    assert not any(ch in lines[0] for ch in "\r\x1b\u202e\u2028\x85\x00")


def test_token_never_appears() -> None:
    lines = _run(
        """
        configure_logging("DEBUG", "bot")
        log = logging.getLogger("telegram.ext")
        log.info("token %s", TOKEN)
        log.info("GET https://api.telegram.org/bot%s/getMe", TOKEN)
        log.info("file https://api.telegram.org/file/bot%s/music/a.mp3", TOKEN)
        log.info("extra", extra={"url": "http://127.0.0.1:8081/bot" + TOKEN + "/getFile"})
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
    assert len(lines) == 5
    assert 'msg="token <token>"' in lines[0]
    assert "https://api.telegram.org/bot<token>/getMe" in lines[1]
    assert "https://api.telegram.org/file/bot<token>/music/a.mp3" in lines[2]
    assert "url=http://127.0.0.1:8081/bot<token>/getFile" in lines[3]
    assert "/bot<token>/sendAudio" in lines[4]
    assert "getUpdates" not in text


def test_configure_twice_does_not_duplicate_lines_and_honours_level() -> None:
    lines = _run(
        """
        configure_logging("INFO", "up")
        configure_logging("WARNING", "up")
        log = logging.getLogger("demix.up")
        log.info("hidden")
        log.warning("shown")
        """
    )
    assert len(lines) == 1
    assert "msg=shown" in lines[0]
    assert "level=warning proc=up logger=demix.up" in lines[0]


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
    lines = _run(
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
    ids = [line.split("job_id=")[1].split()[0] if "job_id=" in line else None for line in lines]
    assert ids == ["sep:12:drums+vocals"] * 3 + ["sep:13:bass", None]
