"""What Telegram itself says and enforces: its limits, its error wording, its error answers.

Every other module of the fake refuses requests through :class:`ApiError` with these words, so
a bot under test meets the same messages (and PTB raises the same exceptions) as in production.
"""

from __future__ import annotations

from typing import Any

MB = 1024 * 1024
DOWNLOAD_LIMIT = 20 * MB  # getFile refuses bigger files unless the server runs in local mode
UPLOAD_LIMIT = 50 * MB  # multipart uploads bigger than this are refused (413)
LOCAL_UPLOAD_LIMIT = 2000 * MB
# Texts and captions (after entity parsing), in UTF-16 code units. Telegram's docs say
# "characters"; reports differ on whether an emoji outside the BMP counts once or twice, so
# the fake takes the stricter reading: a text it accepts, Telegram accepts.
TEXT_LIMIT = 4096
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64  # bytes
CALLBACK_ANSWER_LIMIT = 200

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
WRONG_FILE = "Bad Request: wrong file identifier/HTTP URL specified"


class ApiError(Exception):
    """A Telegram-shaped error answer (``{"ok": false, ...}``)."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False,
            "error_code": self.status,
            "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def names(words: str) -> frozenset[str]:
    """A set of Bot API names written as one space-separated string."""
    return frozenset(words.split())


def utf16_len(text: str) -> int:
    """A text's length as Telegram counts entity offsets and lengths: in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2
