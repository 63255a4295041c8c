"""Message content as Telegram parses it: ``parse_mode="HTML"`` texts and inline keyboards.

Both are checked the way Telegram checks them, because these are the refusals bots trip over
(an unescaped ``<`` in a file name, callback data over 64 bytes). The HTML rules follow the
Bot API server's parser (tdlib's ``parse_html``), not a browser's: every ``<`` opens a tag,
so ``a < b`` is refused; a ``&`` that starts no entity it knows (``&lt;``, ``&gt;``,
``&amp;``, ``&quot;``, numeric references) is shown as typed, so ``&copy;`` stays ``&copy;``.
"""

from __future__ import annotations

import re
from typing import Any

from tests.support.fake_bot_api.telegram import CALLBACK_DATA_LIMIT, ApiError, names, utf16_len

_HTML_TAGS = names(
    "b strong i em u ins s strike del a code pre span tg-spoiler tg-emoji blockquote"
)
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_ENTITY = re.compile(r"&(?:#x([0-9a-fA-F]*)|#([0-9]*)|([A-Za-z]*));?")
_TAG_NAME = re.compile(r"[^\s>]*")
# An attribute: a name, "=", and a quoted string or a bare token; a bare name (``expandable``).
_ATTRIBUTE = re.compile(r"""\s*([^\s=>]+)(?:\s*=\s*("[^"]*"?|'[^']*'?|[^\s>]*))?""")
_PARSE_ERROR = "Bad Request: can't parse entities: "


def _at(text: str, index: int) -> str:
    """Telegram names the place of an HTML error by its UTF-8 byte offset."""
    return f"at byte offset {len(text[:index].encode(errors='surrogatepass'))}"


def _entity(text: str, start: int) -> tuple[str, int] | None:
    """The character a ``&`` at ``start`` stands for and where it ends, or ``None`` when
    Telegram shows the ``&`` as typed."""
    match = _ENTITY.match(text, start)
    if match is None:
        return None
    hexadecimal, decimal, name = match.groups()
    if name is not None:
        char = _NAMED_ENTITIES.get(name)
        return None if char is None else (char, match.end())
    digits = hexadecimal if hexadecimal is not None else decimal
    code = int(digits, 16 if hexadecimal is not None else 10) if digits else 0
    if code == 0 or code >= 0x10FFFF or len(match.group(0).rstrip(";")) >= 10:
        return None
    return chr(code), match.end()


def _parse_html(text: str) -> tuple[str, tuple[Any, ...]]:
    """The shown text and the format events of ``text``, or the refusal Telegram answers."""
    shown: list[str] = []
    events: list[tuple[Any, ...]] = []
    stack: list[str] = []
    offset = 0  # UTF-16 units shown so far: Telegram's entity offsets
    i = 0
    while i < len(text):
        char = text[i]
        if char == "&" and (decoded := _entity(text, i)) is not None:
            char, i = decoded
        elif char != "<":
            i += 1
        elif text.startswith("</", i):
            i = _end_tag(text, i, stack)
            events.append(("end", stack.pop(), offset))
            continue
        else:
            tag, attrs, i = _start_tag(text, i)
            stack.append(tag)
            events.append(("start", tag, attrs, offset))
            continue
        shown.append(char)
        offset += utf16_len(char)
    if stack:
        raise ApiError(
            400, f'{_PARSE_ERROR}Can\'t find end tag corresponding to start tag "{stack[-1]}"'
        )
    return "".join(shown), tuple(events)


def _start_tag(text: str, begin: int) -> tuple[str, tuple[tuple[str, str], ...], int]:
    name_match = _TAG_NAME.match(text, begin + 1)
    assert name_match is not None  # the pattern matches the empty string
    if name_match.end() == len(text):
        raise ApiError(400, f"{_PARSE_ERROR}Unclosed start tag {_at(text, begin)}")
    tag = name_match.group(0).lower()
    if tag not in _HTML_TAGS:
        raise ApiError(400, f'{_PARSE_ERROR}Unsupported start tag "{tag}" {_at(text, begin)}')
    attrs: list[tuple[str, str]] = []
    i = name_match.end()
    while (attribute := _ATTRIBUTE.match(text, i)) is not None and attribute.end() > i:
        value = attribute.group(2) or ""
        attrs.append((attribute.group(1).lower(), value.strip("\"'")))
        i = attribute.end()
    i += len(text[i:]) - len(text[i:].lstrip())
    if not text.startswith(">", i):
        raise ApiError(400, f"{_PARSE_ERROR}Unclosed start tag {_at(text, begin)}")
    return tag, tuple(attrs), i + 1


def _end_tag(text: str, begin: int, stack: list[str]) -> int:
    """Check the end tag at ``begin`` against the open tag; return where it ends."""
    if not stack:
        raise ApiError(400, f"{_PARSE_ERROR}Unexpected end tag {_at(text, begin)}")
    name_match = _TAG_NAME.match(text, begin + 2)
    assert name_match is not None  # the pattern matches the empty string
    i = name_match.end()
    i += len(text[i:]) - len(text[i:].lstrip())
    if not text.startswith(">", i):
        raise ApiError(400, f"{_PARSE_ERROR}Unclosed end tag {_at(text, begin)}")
    tag = name_match.group(0).lower()
    if tag and tag != stack[-1]:
        raise ApiError(
            400,
            f"{_PARSE_ERROR}Unmatched end tag {_at(text, begin)}, expected "
            f'"</{stack[-1]}>", found "</{tag}>"',
        )
    return i + 1


def render(text: str, parse_mode: str | None) -> tuple[str, tuple[Any, ...]]:
    """The text a user sees and a signature of its formatting (to detect no-op edits)."""
    if (parse_mode or "").upper() != "HTML":
        return text, (parse_mode, text) if parse_mode else ()
    return _parse_html(text)


def check_markup(markup: Any, *, private: bool = True) -> dict[str, Any] | None:
    """Validate an inline keyboard the way Telegram does (the limits bots trip over); Web App
    buttons only in a private chat (``private``), and only with an HTTPS URL."""
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return markup
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise ApiError(
            400,
            'Bad Request: field "inline_keyboard" of the InlineKeyboardMarkup '
            "must be an Array of Arrays",
        )
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise ApiError(
                    400, "Bad Request: can't parse inline keyboard button: Text must be non-empty"
                )
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= CALLBACK_DATA_LIMIT:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
            web_app = button.get("web_app")
            if web_app is not None:
                url = web_app.get("url") if isinstance(web_app, dict) else None
                if not private:
                    raise ApiError(400, "Bad Request: BUTTON_TYPE_INVALID")
                # Telegram wants https; tests point the button at 127.0.0.1 over http.
                if not isinstance(url, str) or not url.startswith(("https://", "http://127.")):
                    raise ApiError(400, "Bad Request: BUTTON_URL_INVALID")
            actions = set(button) - {"text", "style", "icon_custom_emoji_id"}
            if not actions:
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: Text buttons are "
                    "unallowed in the inline keyboard",
                )
    return markup
