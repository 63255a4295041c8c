"""Message content as Telegram parses it: ``parse_mode="HTML"`` texts and inline keyboards.

Both are checked the way Telegram checks them, because these are the refusals bots trip over
(an unescaped ``<`` in a file name, callback data over 64 bytes).
"""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

from tests.support.fake_bot_api.telegram import CALLBACK_DATA_LIMIT, ApiError, names, utf16_len

_HTML_TAGS = names(
    "b strong i em u ins s strike del a code pre span tg-spoiler tg-emoji blockquote"
)


class _TelegramHtml(HTMLParser):
    """Telegram's HTML subset: plain text plus a format signature; bad markup is refused."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[str] = []
        self.events: list[tuple[Any, ...]] = []

    def _offset(self) -> int:
        return sum(utf16_len(part) for part in self.parts)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_TAGS:
            raise ApiError(
                400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}"'
            )
        self.stack.append(tag)
        self.events.append(("start", tag, tuple(attrs), self._offset()))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise ApiError(400, f'Bad Request: can\'t parse entities: Unsupported start tag "{tag}"')

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            expected = f"</{self.stack[-1]}>" if self.stack else "no end tag"
            raise ApiError(
                400,
                f"Bad Request: can't parse entities: Unmatched end tag, expected "
                f'"{expected}", found "</{tag}>"',
            )
        self.stack.pop()
        self.events.append(("end", tag, self._offset()))

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def render(text: str, parse_mode: str | None) -> tuple[str, tuple[Any, ...]]:
    """The text a user sees and a signature of its formatting (to detect no-op edits)."""
    if (parse_mode or "").upper() != "HTML":
        return text, (parse_mode, text) if parse_mode else ()
    parser = _TelegramHtml()
    parser.feed(text)
    parser.close()
    if parser.stack:
        raise ApiError(
            400,
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag "
            f'"{parser.stack[-1]}"',
        )
    return "".join(parser.parts), tuple(parser.events)


def check_markup(markup: Any) -> dict[str, Any] | None:
    """Validate an inline keyboard the way Telegram does (the limits bots trip over)."""
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
            actions = set(button) - {"text", "style", "icon_custom_emoji_id"}
            if not actions:
                raise ApiError(
                    400,
                    "Bad Request: can't parse inline keyboard button: Text buttons are "
                    "unallowed in the inline keyboard",
                )
    return markup
