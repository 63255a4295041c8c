"""Mini App launch data as Telegram makes it: a signed ``initData`` and the URL fragment a client
opens the page with (``#tgWebAppData=...&tgWebAppVersion=...&tgWebAppThemeParams=...``).

Signing follows https://core.telegram.org/bots/webapps#validating-data-received-via-the-mini-app:
the secret key is HMAC-SHA256 of the bot token keyed with ``WebAppData``; ``hash`` is the hex
HMAC-SHA256, with that key, of the ``key=value`` lines (sorted by key, ``hash`` left out)
joined by newlines. A test that forges one field or signs with another token gets data the
server must refuse.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlencode

LIGHT_THEME = {
    "bg_color": "#ffffff",
    "text_color": "#000000",
    "hint_color": "#999999",
    "link_color": "#2481cc",
    "button_color": "#2481cc",
    "button_text_color": "#ffffff",
    "secondary_bg_color": "#efeff3",
}
DARK_THEME = {
    "bg_color": "#212121",
    "text_color": "#ffffff",
    "hint_color": "#aaaaaa",
    "link_color": "#8774e1",
    "button_color": "#8774e1",
    "button_text_color": "#ffffff",
    "secondary_bg_color": "#181818",
}


def webapp_user(
    user_id: int, language_code: str = "en", first_name: str = "Test"
) -> dict[str, Any]:
    """The ``user`` object of initData, shaped as Telegram sends it."""
    return {
        "id": user_id,
        "first_name": first_name,
        "last_name": "",
        "username": f"user{user_id}",
        "language_code": language_code,
        "allows_write_to_pm": True,
    }


def data_check_string(fields: Mapping[str, str]) -> str:
    """The sorted ``key=value`` lines (without ``hash``) that Telegram signs."""
    return "\n".join(f"{key}={fields[key]}" for key in sorted(fields) if key != "hash")


def init_data_hash(token: str, fields: Mapping[str, str]) -> str:
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    return hmac.new(secret, data_check_string(fields).encode(), hashlib.sha256).hexdigest()


def sign_init_data(
    token: str,
    user: Mapping[str, Any],
    auth_date: int | None = None,
    *,
    query_id: str | None = "AAHdF6IQAAAAAN0XohDhrOrc",
    extra: Mapping[str, str] | None = None,
) -> str:
    """The ``initData`` query string a Telegram client passes for ``user``, signed with the
    bot ``token`` (``auth_date`` defaults to now)."""
    fields: dict[str, str] = {}
    if query_id is not None:
        fields["query_id"] = query_id
    fields["user"] = json.dumps(dict(user), ensure_ascii=False, separators=(",", ":"))
    fields["auth_date"] = str(int(time.time()) if auth_date is None else auth_date)
    fields.update(extra or {})
    fields["hash"] = init_data_hash(token, fields)
    return urlencode(fields, quote_via=quote)


def launch_fragment(
    init_data: str,
    theme: Mapping[str, str] | None = None,
    *,
    version: str = "7.0",
    platform: str = "android",
) -> str:
    """The URL fragment (with its ``#``) a Telegram client appends to a Mini App's URL: each
    parameter URL-encoded once more, the theme as JSON."""
    params = {"tgWebAppData": init_data, "tgWebAppVersion": version, "tgWebAppPlatform": platform}
    if theme is not None:
        params["tgWebAppThemeParams"] = json.dumps(dict(theme), separators=(",", ":"))
    return "#" + urlencode(params, quote_via=quote)
