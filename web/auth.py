"""Mini App ``initData``, checked exactly as Telegram specifies, and the track URLs' tokens.

Telegram ("Validating data received via the Mini App"): the init data is a query string;
the data-check-string is every field except ``hash``, as ``key=value`` (values URL-decoded),
sorted by key and joined by newlines; the secret key is HMAC-SHA256 of the bot token keyed
with ``"WebAppData"``; ``hash`` must be the hex HMAC-SHA256 of the data-check-string under
the secret key. ``auth_date`` (unix seconds) says when Telegram signed it: older than the
allowed age is refused, and so is a date in the future beyond a small clock skew.

``<audio src>`` cannot send headers, so a track's audio is fetched through a short-lived
signed URL instead: an HMAC (under a key derived from the bot token) over the mix id, the
track and the expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

# Telegram's clock and ours may differ a little; more than this ahead is refused.
CLOCK_SKEW_S = 60
# A longer init data is not Telegram's (it is a few hundred bytes).
MAX_INIT_DATA_CHARS = 4096
# How long a signed track URL is good for.
TRACK_URL_TTL_S = 4 * 3600


class AuthError(Exception):
    """The init data is missing, malformed, forged or too old: 401."""


@dataclass(frozen=True)
class WebAppUser:
    """Who opened the Mini App, as Telegram signed it."""

    user_id: int
    auth_date: int
    language_code: str | None = None


def _secret_key(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def validate_init_data(
    init_data: str, bot_token: str, max_age_s: float, now: float | None = None
) -> WebAppUser:
    """The user of ``init_data`` if Telegram signed it for this bot within ``max_age_s``.

    Raises:
        AuthError: with a reason fit to show (never the expected hash).
    """
    if not init_data:
        raise AuthError("missing init data")
    if len(init_data) > MAX_INIT_DATA_CHARS:
        raise AuthError("malformed init data")
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise AuthError("malformed init data") from exc
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise AuthError("malformed init data: a field given twice")
    received = fields.pop("hash", None)
    if not received:
        raise AuthError("init data without hash")
    check_string = "\n".join(f"{key}={value}" for key, value in sorted(fields.items()))
    expected = hmac.new(_secret_key(bot_token), check_string.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), received.encode("utf-8", "replace")):
        raise AuthError("init data signature does not match")
    try:
        auth_date = int(fields["auth_date"])
        user = json.loads(fields["user"])
        user_id = user["id"]
    except (KeyError, ValueError, TypeError) as exc:
        raise AuthError("malformed init data: no auth_date or user") from exc
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        raise AuthError("malformed init data: user id")
    now = time.time() if now is None else now
    if auth_date > now + CLOCK_SKEW_S:
        raise AuthError("init data from the future")
    if now - auth_date > max_age_s:
        raise AuthError("init data expired: open the mixer again from the chat")
    code = user.get("language_code")
    return WebAppUser(user_id, auth_date, code if isinstance(code, str) else None)


def _url_key(bot_token: str) -> bytes:
    return hmac.new(bot_token.encode(), b"demix:track-url", hashlib.sha256).digest()


def _signature(bot_token: str, mix_id: str, track: str, expires: int) -> str:
    message = f"{mix_id}/{track}/{expires}".encode()
    digest = hmac.new(_url_key(bot_token), message, hashlib.sha256).digest()[:18]
    return base64.urlsafe_b64encode(digest).decode()


def track_token(
    bot_token: str, mix_id: str, track: str, now: float | None = None, ttl_s: int = TRACK_URL_TTL_S
) -> str:
    """The ``k`` parameter of a track's URL: ``<expiry>.<signature>``."""
    expires = int(time.time() if now is None else now) + ttl_s
    return f"{expires}.{_signature(bot_token, mix_id, track, expires)}"


def track_token_valid(
    bot_token: str, mix_id: str, track: str, token: str, now: float | None = None
) -> bool:
    """Whether ``token`` was signed for this mix and track and has not expired."""
    expires_text, _, signature = token.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12 or not signature:
        return False
    expires = int(expires_text)
    if expires < (time.time() if now is None else now):
        return False
    expected = _signature(bot_token, mix_id, track, expires)
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))
