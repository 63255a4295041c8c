"""What tests read back about a chat: message snapshots, their keyboards and edits, answers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tests.support.fake_bot_api.files import StoredFile


class Button(NamedTuple):
    """One inline keyboard button as ``(text, callback_data)`` (None for link buttons)."""

    text: str
    callback_data: str | None


@dataclass
class Edit:
    """A state a message had before an edit (``text`` is the text or caption it had)."""

    text: str | None
    reply_markup: dict[str, Any] | None
    at: float


@dataclass
class ChatMessage:
    """A message in a chat, as it is now (a snapshot when returned by the server)."""

    chat_id: int
    message_id: int
    from_bot: bool
    sender_id: int
    date: int
    text: str | None = None  # as the user sees it (HTML parsed)
    caption: str | None = None
    raw_text: str | None = None  # text or caption exactly as sent
    parse_mode: str | None = None
    reply_markup: dict[str, Any] | None = None
    reply_to: int | None = None
    file: StoredFile | None = None
    media_group_id: str | None = None
    history: list[Edit] = field(default_factory=list)
    edit_date: int | None = None
    deleted: bool = False
    _format: tuple[Any, ...] = ()

    @property
    def content(self) -> str:
        """The text, or the caption of a media message ("" when neither)."""
        if self.text is not None:
            return self.text
        return self.caption or ""

    @property
    def texts(self) -> list[str | None]:
        """Every text (or caption) the message has had, oldest first, the current one last."""
        return [edit.text for edit in self.history] + [self.text or self.caption]

    @property
    def keyboard(self) -> list[list[Button]]:
        """The inline keyboard's rows (empty when there is none)."""
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [[Button(b.get("text", ""), b.get("callback_data")) for b in row] for row in rows]

    @property
    def buttons(self) -> list[Button]:
        """All inline buttons, row by row."""
        return [button for row in self.keyboard for button in row]

    @property
    def has_keyboard(self) -> bool:
        return bool(self.buttons)

    def button(self, containing: str) -> Button:
        """The one button whose text contains ``containing``; fails listing the buttons."""
        found = [b for b in self.buttons if containing in b.text]
        if len(found) != 1:
            raise AssertionError(
                f"{len(found)} buttons contain {containing!r}; buttons: {self.buttons}"
            )
        return found[0]

    @property
    def file_name(self) -> str | None:
        return self.file.file_name if self.file else None

    @property
    def data(self) -> bytes | None:
        """The bytes of the message's file (audio, document, ...), if it has one."""
        return self.file.data if self.file else None


@dataclass(frozen=True)
class CallbackAnswer:
    """The bot's answerCallbackQuery for a press made with :meth:`FakeBotApi.press_button`."""

    query_id: str
    user_id: int
    chat_id: int
    message_id: int
    callback_data: str
    text: str | None
    show_alert: bool
    url: str | None
