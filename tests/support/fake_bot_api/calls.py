"""A Bot API call as the fake sees it: decoded for the handlers, then recorded for the tests."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class UploadedPart:
    """A file part of a multipart request."""

    filename: str | None
    content_type: str | None
    data: bytes


@dataclass
class MethodCall:
    """A request being answered: the Bot API method, its decoded parameters, its file parts."""

    method: str
    params: dict[str, Any]
    files: dict[str, UploadedPart]


# Answers one Bot API method with its ``result``, or raises ApiError; runs holding the lock.
Handler = Callable[[MethodCall], Any]


@dataclass(frozen=True)
class ApiCall:
    """One request the bot made: decoded parameters, uploaded parts, HTTP status, result."""

    method: str
    params: dict[str, Any]
    files: dict[str, UploadedPart]
    status: int
    description: str | None
    result: Any
    at: float

    @property
    def ok(self) -> bool:
        return self.status == 200
