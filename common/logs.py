"""Logging for every process: readable lines on a terminal, one JSON object per line
otherwise (a log collector's input), chosen by ``DEMIX_LOG_FORMAT``.

Job lines carry ``job_id`` and ``user_id`` (pass them with ``extra=``). The bot token never
reaches the output: httpx's request-URL lines are silenced and a filter masks anything
shaped like a token or a token-bearing Bot API URL.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, Literal, TextIO, get_args

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


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    """A record's extra fields, job fields first; arq's job lines get their ``job_id``."""
    extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS}
    if "job_id" not in extras and record.name.startswith("arq"):
        job_id = _arq_job_id(record.getMessage())
        if job_id:
            extras["job_id"] = job_id
    first = {key: extras.pop(key) for key in FIRST_FIELDS if key in extras}
    return {**first, **dict(sorted(extras.items()))}


def _timestamp(record: logging.LogRecord) -> str:
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{ts}.{int(record.msecs):03d}Z"


# The fields a job's lines carry, shown first.
FIRST_FIELDS = ("job_id", "user_id", "chat_id", "request_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``proc``, ``logger``, ``msg``, the
    record's extra fields (job fields first) and ``exc`` with the traceback."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "proc": self.process_name,
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        line = json.dumps(data, ensure_ascii=False, default=str)
        # JSON escapes C0 controls itself; C1 and bidi controls are valid in a JSON string
        # but would reorder what an operator reads, so they are written as \u escapes too.
        return redact(_UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", line))


class ConsoleFormatter(logging.Formatter):
    """For a person at a terminal: ``HH:MM:SS.mmm LEVEL proc logger: message k=v ...``,
    then the traceback on lines of its own. Text from outside (messages, fields) stays on
    its line: line breaks and terminal controls in it are escaped."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        clock = time.strftime("%H:%M:%S", time.localtime(record.created))
        head = (
            f"{clock}.{int(record.msecs):03d} {record.levelname:<7} {self.process_name} "
            f"{record.name}: {_one_line(record.getMessage())}"
        )
        fields = " ".join(f"{key}={_quote(value)}" for key, value in _fields(record).items())
        text = f"{head}  {fields}" if fields else head
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            text += "\n" + "\n".join(_one_line(line) for line in trace.splitlines())
        return redact(text)


def _one_line(text: str) -> str:
    return _UNPRINTABLE.sub(_escape, text)


def _arq_job_id(message: str) -> str | None:
    match = _ARQ_JOB_RE.match(message)
    if match is None:
        return None
    if match["job"]:
        return match["job"]
    # arq's ref is "<job id>:<function name>"; a bare function name has no job id.
    ref = match["ref"]
    return ref.rsplit(":", 1)[0] if ":" in ref else None


LogFormat = Literal["auto", "console", "json"]
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)


def resolved_format(log_format: str, stream: TextIO | None = None) -> str:
    """``console`` or ``json``: ``auto`` is console when ``stream`` (stderr) is a terminal."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format is one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    if log_format != "auto":
        return log_format
    stream = stream or sys.stderr
    return "console" if stream.isatty() else "json"


def configure_logging(
    level: str = "INFO", process_name: str = "demix", log_format: str = "auto"
) -> None:
    """Send every record to stderr: readable lines on a terminal, JSON lines otherwise
    (``log_format`` ``console`` or ``json`` chooses), the bot token masked in both."""
    handler = logging.StreamHandler(sys.stderr)
    if resolved_format(log_format, sys.stderr) == "console":
        handler.setFormatter(ConsoleFormatter(process_name))
    else:
        handler.setFormatter(JsonFormatter(process_name))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request URL at INFO, and Bot API URLs contain the token.
    for noisy in ("httpx", "httpcore", "telegram.ext.Updater"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
