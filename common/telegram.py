"""Telegram's rules as both processes meet them: size limits, flood control, message edits.

Editing a message fails in ordinary ways (the text is unchanged, the user deleted it, the
chat is gone, Telegram asks to slow down); none of them may fail a job or a handler, so
every edit goes through :func:`edit_message`, which says what happened instead of raising.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

import httpx
from telegram.error import BadRequest, Forbidden, RetryAfter, TelegramError
from telegram.request import HTTPXRequest
from telegram.warnings import PTBDeprecationWarning

if TYPE_CHECKING:
    from common.settings import Settings

logger = logging.getLogger(__name__)

MB = 1024 * 1024
# getFile's limit for bots on the public Bot API; a local Bot API server lifts it.
TELEGRAM_DOWNLOAD_LIMIT_MB = 20
# sendAudio/sendMediaGroup's limit for bots on the public Bot API.
TELEGRAM_UPLOAD_LIMIT_MB = 50
# A local Bot API server (telegram-bot-api --local) takes uploads up to 2000 MB.
TELEGRAM_LOCAL_UPLOAD_LIMIT_MB = 2000
# The largest file the worker sends, in bytes, by TELEGRAM_LOCAL_MODE: a FLAC track over it
# is sent as mp3 instead. Tests lower these to reach the fallback with seconds of audio.
UPLOAD_LIMIT_BYTES = TELEGRAM_UPLOAD_LIMIT_MB * MB
LOCAL_UPLOAD_LIMIT_BYTES = TELEGRAM_LOCAL_UPLOAD_LIMIT_MB * MB


def size_limit_mb(max_file_mb: int, local_mode: bool) -> int:
    """The size users may send: the configured limit, within Telegram's download limit."""
    return max_file_mb if local_mode else min(max_file_mb, TELEGRAM_DOWNLOAD_LIMIT_MB)


def upload_limit_bytes(local_mode: bool) -> int:
    """The upload limit in use: 50 MB on the public Bot API, 2000 MB on a local server."""
    return LOCAL_UPLOAD_LIMIT_BYTES if local_mode else UPLOAD_LIMIT_BYTES


def retry_after_s(exc: RetryAfter) -> float:
    """Seconds Telegram asked to wait, whichever type PTB's migration setting yields."""
    with warnings.catch_warnings():
        # PTB warns on the int form while it migrates to timedelta; either is fine here.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)


class Edit(Enum):
    """What became of one message edit."""

    EDITED = "edited"
    UNCHANGED = "unchanged"  # Telegram: "message is not modified"; the text is shown
    THROTTLED = "throttled"  # flood control: see ``EditResult.retry_after_s``
    FAILED = "failed"  # deleted message, blocked bot, network: waiting will not help


@dataclass(frozen=True)
class EditResult:
    """The outcome of :func:`edit_message`."""

    edit: Edit
    retry_after_s: float = 0.0

    @property
    def shown(self) -> bool:
        """True when the message now shows the new content."""
        return self.edit in (Edit.EDITED, Edit.UNCHANGED)


async def edit_message(request: Awaitable[Any], log_extra: Mapping[str, Any]) -> EditResult:
    """Await one Bot API edit call and classify its outcome; never raises TelegramError."""
    extra = dict(log_extra)
    try:
        await request
    except RetryAfter as exc:
        delay = retry_after_s(exc)
        logger.warning("message edit throttled by Telegram for %ss", delay, extra=extra)
        return EditResult(Edit.THROTTLED, delay)
    except BadRequest as exc:
        if "not modified" in exc.message.lower():
            return EditResult(Edit.UNCHANGED)
        logger.warning("message not editable: %s", exc.message, extra=extra)
        return EditResult(Edit.FAILED)
    except Forbidden as exc:
        logger.warning("message edit forbidden: %s", exc.message, extra=extra)
        return EditResult(Edit.FAILED)
    except TelegramError as exc:
        logger.warning("message edit failed: %s", exc, extra=extra)
        return EditResult(Edit.FAILED)
    return EditResult(Edit.EDITED)


UPLOAD_CONNECTIONS = 8


def uploading_request(
    settings: Settings, transport: httpx.AsyncBaseTransport | None = None
) -> HTTPXRequest:
    """The Bot API connection of a process that uploads audio (the worker's tracks, the
    mixer's mixes): answers wait ``telegram_read_timeout_s``, uploads get
    ``telegram_upload_timeout_s`` to go out. ``transport`` replaces httpx's own (built with
    the same :data:`UPLOAD_CONNECTIONS` limit)."""
    return HTTPXRequest(
        connection_pool_size=UPLOAD_CONNECTIONS,
        connect_timeout=10.0,
        read_timeout=settings.telegram_read_timeout_s,
        write_timeout=60.0,
        media_write_timeout=settings.telegram_upload_timeout_s,
        httpx_kwargs=None if transport is None else {"transport": transport},
    )
