"""Structured logging for every process: one line per event, `key=value` fields.

Job lines carry ``job_id`` and ``user_id`` (pass them with ``extra=``). The bot token never
reaches the output: httpx's request-URL lines are silenced and a filter masks anything
shaped like a token or a token-bearing Bot API URL.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, ClassVar

# Telegram tokens look like "<digits>:<35 url-safe chars>"; test tokens can be shorter,
# but not as short as the "<request id>:<stem>" part of a job id ("sep:1234:vocals").
_TOKEN_RE = re.compile(r"\b\d{3,12}:[A-Za-z0-9_-]{16,}")
_URL_TOKEN_RE = re.compile(r"(/(?:file/)?bot)[^/\s]+")

# arq's own job lines name the job in the message ("  1.20s → sep:7:vocals:separate(...)",
# "job sep:7:vocals expired"); the id is lifted into a job_id field so one grep finds them.
_ARQ_JOB_RE = re.compile(r"^\s*[\d.]+s \S+ (?P<ref>[^\s(]+)|^job (?P<job>[^\s,]+)")

# Fields that are part of every record and are not rendered as extras.
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def redact(text: str) -> str:
    """Mask bot tokens, bare or inside Bot API URLs."""
    return _TOKEN_RE.sub("<token>", _URL_TOKEN_RE.sub(r"\1<token>", text))


# Characters that would let logged text (a user's file name, an error's message) forge or
# hide log lines: a line break starts a fake record, a bare CR or ESC rewrites the terminal
# line, bidi controls reorder what the operator reads. They are written as escapes.
_UNPRINTABLE = re.compile(
    r"[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\n":
        return "\\n"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(ch in text for ch in ' "=') or _UNPRINTABLE.search(text):
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + _UNPRINTABLE.sub(_escape, escaped) + '"'
    return text


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=... proc=... logger=... msg="..." job_id=... user_id=...``."""

    FIRST_FIELDS: ClassVar[tuple[str, ...]] = ("job_id", "user_id", "chat_id", "request_id")

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        fields = [
            f"ts={ts}.{int(record.msecs):03d}Z",
            f"level={record.levelname.lower()}",
            f"proc={self.process_name}",
            f"logger={record.name}",
            f"msg={_quote(record.getMessage())}",
        ]
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
        if "job_id" not in extras and record.name.startswith("arq"):
            job_id = _arq_job_id(record.getMessage())
            if job_id:
                extras["job_id"] = job_id
        for key in self.FIRST_FIELDS:
            if key in extras:
                fields.append(f"{key}={_quote(extras.pop(key))}")
        fields.extend(f"{key}={_quote(value)}" for key, value in sorted(extras.items()))
        if record.exc_info:
            fields.append(f"exc={_quote(self.formatException(record.exc_info))}")
        return redact(" ".join(fields))


def _arq_job_id(message: str) -> str | None:
    match = _ARQ_JOB_RE.match(message)
    if match is None:
        return None
    if match["job"]:
        return match["job"]
    # arq's ref is "<job id>:<function name>"; a bare function name has no job id.
    ref = match["ref"]
    return ref.rsplit(":", 1)[0] if ":" in ref else None


def configure_logging(level: str = "INFO", process_name: str = "demix") -> None:
    """Install the key=value formatter on the root logger, writing to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(process_name))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO, and Bot API URLs contain the token.
    for noisy in ("httpx", "httpcore", "telegram.ext.Updater"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
