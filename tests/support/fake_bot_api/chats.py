"""Chat state: users, chats and their messages, keyboard presses, and the Bot API on them.

Simulated users act here (a message, a button press) and each action is queued as an update;
the bot's sends, edits, deletions and callback answers are the handlers below, which the
server runs holding the lock.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from dataclasses import dataclass
from typing import Any

from tests.support.fake_bot_api.calls import Handler, MethodCall
from tests.support.fake_bot_api.files import (
    FILE_FOLDERS,
    FileStore,
    StoredFile,
    file_json,
    file_meta,
)
from tests.support.fake_bot_api.markup import check_markup, render
from tests.support.fake_bot_api.messages import CallbackAnswer, ChatMessage, Edit
from tests.support.fake_bot_api.telegram import (
    CALLBACK_ANSWER_LIMIT,
    CAPTION_LIMIT,
    NOT_MODIFIED,
    QUERY_INVALID,
    TEXT_LIMIT,
    ApiError,
    utf16_len,
)
from tests.support.fake_bot_api.updates import UpdateQueue

# The language a simulated user's client reports unless the test says otherwise.
DEFAULT_LANGUAGE = "en"


@dataclass
class _Press:
    """A button press queued as a callback query, and the bot's answer once it comes."""

    query_id: str
    user_id: int
    chat_id: int
    message_id: int
    callback_data: str
    answer: CallbackAnswer | None = None


@dataclass(eq=False)
class Chats:
    """Users, chats and messages (the bot's and the users'), presses and chat actions."""

    lock: threading.RLock
    ids: itertools.count[int]  # shared with FileStore, so no two ids the server makes are alike
    bot_user: dict[str, Any]
    files: FileStore
    updates: UpdateQueue  # where users' actions go, as updates for the bot

    def __post_init__(self) -> None:
        self._users: dict[int, dict[str, Any]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._messages: dict[int, list[ChatMessage]] = {}
        self._message_index: dict[tuple[int, int], ChatMessage] = {}
        self._next_message_id: dict[int, int] = {}
        self._presses: dict[str, _Press] = {}
        self._answers: list[CallbackAnswer] = []
        self._chat_actions: list[tuple[int, str]] = []
        self._blocked: set[int] = set()

    def handlers(self) -> dict[str, Handler]:
        return {
            "sendMessage": self._send_message,
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "answerCallbackQuery": self._answer_callback_query,
            "sendChatAction": self._send_chat_action,
            "sendAudio": lambda call: self._send_file(call, "audio"),
            "sendDocument": lambda call: self._send_file(call, "document"),
            "sendVoice": lambda call: self._send_file(call, "voice"),
            "sendVideo": lambda call: self._send_file(call, "video"),
            "sendPhoto": lambda call: self._send_file(call, "photo"),
            "sendMediaGroup": self._send_media_group,
            "getChat": self._get_chat,
        }

    # -- users and chats -----------------------------------------------------------------

    def add_user(
        self, user_id: int, first_name: str | None, username: str | None, language_code: str
    ) -> dict[str, Any]:
        """Register (or update) a simulated user; None names get made-up ones."""
        with self.lock:
            user = {
                "id": user_id,
                "is_bot": False,
                "first_name": first_name or f"User{user_id}",
                "username": username or f"user{user_id}",
                "language_code": language_code,
            }
            self._users[user_id] = user
            return dict(user)

    def _user(self, user_id: int) -> dict[str, Any]:
        if user_id not in self._users:
            self.add_user(user_id, None, None, DEFAULT_LANGUAGE)
        return self._users[user_id]

    def _chat_for(self, user_id: int, chat_id: int | None, chat_type: str) -> int:
        user = self._user(user_id)
        if chat_id is None or chat_id == user_id:
            if chat_type != "private" and chat_id is not None:
                raise ValueError("a group chat needs its own (negative) chat id")
            self._chats.setdefault(
                user_id,
                {
                    "id": user_id,
                    "type": "private",
                    "first_name": user["first_name"],
                    "username": user["username"],
                },
            )
            return user_id
        if chat_id > 0:
            raise ValueError(f"chat {chat_id} is another user's private chat")
        if chat_type == "private":
            chat_type = "supergroup" if str(chat_id).startswith("-100") else "group"
        self._chats.setdefault(
            chat_id, {"id": chat_id, "type": chat_type, "title": f"Test group {chat_id}"}
        )
        return chat_id

    def block(self, user_id: int, blocked: bool) -> None:
        with self.lock:
            if blocked:
                self._blocked.add(user_id)
            else:
                self._blocked.discard(user_id)

    # -- messages ------------------------------------------------------------------------

    def _new_message(self, chat_id: int, *, from_bot: bool, sender_id: int) -> ChatMessage:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        message = ChatMessage(
            chat_id=chat_id,
            message_id=message_id,
            from_bot=from_bot,
            sender_id=sender_id,
            date=int(time.time()),
        )
        self._messages.setdefault(chat_id, []).append(message)
        self._message_index[(chat_id, message_id)] = message
        return message

    def _message_json(self, message: ChatMessage, *, nested: bool = False) -> dict[str, Any]:
        sender = self.bot_user if message.from_bot else self._users[message.sender_id]
        data: dict[str, Any] = {
            "message_id": message.message_id,
            "date": message.date,
            "chat": dict(self._chats[message.chat_id]),
            "from": dict(sender),
        }
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        if message.text is not None:
            data["text"] = message.text
            if message.text.startswith("/") and not message.from_bot:
                command = message.text.split()[0]
                data["entities"] = [
                    {"type": "bot_command", "offset": 0, "length": utf16_len(command)}
                ]
        if message.caption is not None:
            data["caption"] = message.caption
        if message.file is not None:
            data[message.file.kind] = file_json(message.file)
        if message.media_group_id is not None:
            data["media_group_id"] = message.media_group_id
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            data["reply_markup"] = copy.deepcopy(message.reply_markup)
        if message.reply_to is not None and not nested:
            target = self._message_index.get((message.chat_id, message.reply_to))
            if target is not None and not target.deleted:
                data["reply_to_message"] = self._message_json(target, nested=True)
        return data

    def messages(
        self, chat_id: int, *, include_user: bool, include_deleted: bool
    ) -> list[ChatMessage]:
        """Snapshots of a chat's messages, oldest first."""
        with self.lock:
            return [
                copy.deepcopy(m)
                for m in self._messages.get(chat_id, [])
                if (include_user or m.from_bot) and (include_deleted or not m.deleted)
            ]

    def message(self, chat_id: int, message_id: int) -> ChatMessage | None:
        with self.lock:
            found = self._message_index.get((chat_id, message_id))
            return copy.deepcopy(found) if found is not None else None

    def chat_actions(self, chat_id: int) -> list[str]:
        with self.lock:
            return [action for chat, action in self._chat_actions if chat == chat_id]

    # -- what simulated users do ---------------------------------------------------------

    def post(
        self,
        user_id: int,
        chat_id: int | None,
        chat_type: str,
        *,
        text: str | None = None,
        reply_to: int | None = None,
        file: StoredFile | None = None,
        caption: str | None = None,
    ) -> ChatMessage:
        """A user's message (a text, or a file with a caption) queued as an update; a snapshot."""
        with self.lock:
            chat = self._chat_for(user_id, chat_id, chat_type)
            message = self._new_message(chat, from_bot=False, sender_id=user_id)
            message.text, message.reply_to = text, reply_to
            message.file, message.caption = file, caption
            message.raw_text = text if text is not None else caption
            payload = self._message_json(message)
            snapshot = copy.deepcopy(message)
        self.updates.queue("message", payload)
        return snapshot

    def press(self, user_id: int, chat_id: int, message_id: int, callback_data: str) -> str:
        """A user presses a button on a message, queued as a callback query; returns its id."""
        with self.lock:
            target = self._message_index.get((chat_id, message_id))
            if target is None or target.deleted:
                raise ValueError(f"no message {message_id} in chat {chat_id} to press")
            query_id = str(10**12 + next(self.ids))
            self._presses[query_id] = _Press(query_id, user_id, chat_id, message_id, callback_data)
            payload = {
                "id": query_id,
                "from": dict(self._user(user_id)),
                "chat_instance": f"ci{abs(chat_id)}",
                "message": self._message_json(target),
                "data": callback_data,
            }
        self.updates.queue("callback_query", payload)
        return query_id

    def callback_answers(self) -> list[CallbackAnswer]:
        with self.lock:
            return list(self._answers)

    def answer_for(self, query_id: str) -> CallbackAnswer | None:
        with self.lock:
            press = self._presses.get(query_id)
            return press.answer if press is not None else None

    # -- Bot API methods (run in the server thread, holding the lock) --------------------

    def _chat(self, call: MethodCall) -> int:
        chat_id = call.params.get("chat_id")
        if not isinstance(chat_id, int) or chat_id not in self._chats:
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _bot_message(self, call: MethodCall, chat_id: int) -> ChatMessage:
        reply_to = call.params.get("reply_to_message_id")
        reply_parameters = call.params.get("reply_parameters")
        allow_missing = bool(call.params.get("allow_sending_without_reply"))
        if isinstance(reply_parameters, dict):
            reply_to = reply_parameters.get("message_id")
            allow_missing = allow_missing or bool(
                reply_parameters.get("allow_sending_without_reply")
            )
        if reply_to is not None:
            target = self._message_index.get((chat_id, int(reply_to)))
            if target is None or target.deleted:
                if not allow_missing:
                    raise ApiError(400, "Bad Request: message to be replied not found")
                reply_to = None
        markup = check_markup(
            call.params.get("reply_markup"), private=self._chats[chat_id]["type"] == "private"
        )
        message = self._new_message(chat_id, from_bot=True, sender_id=self.bot_user["id"])
        message.reply_to = int(reply_to) if reply_to is not None else None
        message.reply_markup = markup
        return message

    def _target(self, call: MethodCall, *, purpose: str = "edit") -> ChatMessage:
        if call.params.get("inline_message_id") is not None:
            raise ApiError(400, "Bad Request: inline messages are not supported by the fake")
        chat_id = self._chat(call)
        message_id = call.params.get("message_id")
        found = (
            self._message_index.get((chat_id, message_id)) if isinstance(message_id, int) else None
        )
        if found is None or found.deleted:
            raise ApiError(400, f"Bad Request: message to {purpose} not found")
        if purpose == "edit" and not found.from_bot:
            raise ApiError(400, "Bad Request: message can't be edited")
        return found

    def _get_chat(self, call: MethodCall) -> dict[str, Any]:
        return dict(self._chats[self._chat(call)])

    def _send_message(self, call: MethodCall) -> dict[str, Any]:
        chat_id = self._chat(call)
        raw, parse_mode, text, formatting = _text_param(call, too_long="message is too long")
        message = self._bot_message(call, chat_id)
        message.text, message.raw_text, message.parse_mode = text, raw, parse_mode
        message._format = formatting
        return self._message_json(message)

    def _apply_edit(
        self,
        call: MethodCall,
        message: ChatMessage,
        *,
        text: str | None,
        raw: str | None,
        parse_mode: str | None,
        formatting: tuple[Any, ...],
    ) -> dict[str, Any]:
        # Like Telegram: an edit without reply_markup removes the inline keyboard.
        markup = check_markup(call.params.get("reply_markup"))
        current = message.text if message.text is not None else message.caption
        if current == text and message._format == formatting and message.reply_markup == markup:
            raise ApiError(400, NOT_MODIFIED)
        message.history.append(Edit(current, copy.deepcopy(message.reply_markup), time.time()))
        if message.text is not None:
            message.text = text
        else:
            message.caption = text
        message.raw_text, message.parse_mode, message._format = raw, parse_mode, formatting
        message.reply_markup = markup
        message.edit_date = int(time.time())
        return self._message_json(message)

    def _edit_message_text(self, call: MethodCall) -> dict[str, Any]:
        message = self._target(call)
        if message.text is None:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        raw, parse_mode, text, formatting = _text_param(call, too_long="MESSAGE_TOO_LONG")
        return self._apply_edit(
            call, message, text=text, raw=raw, parse_mode=parse_mode, formatting=formatting
        )

    def _edit_message_caption(self, call: MethodCall) -> dict[str, Any]:
        message = self._target(call)
        if message.file is None:
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        raw = call.params.get("caption")
        parse_mode = call.params.get("parse_mode")
        text, formatting = render(str(raw), parse_mode) if raw is not None else (None, ())
        if text is not None and utf16_len(text) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        return self._apply_edit(
            call, message, text=text, raw=raw, parse_mode=parse_mode, formatting=formatting
        )

    def _edit_message_reply_markup(self, call: MethodCall) -> dict[str, Any]:
        message = self._target(call)
        markup = check_markup(call.params.get("reply_markup"))
        if message.reply_markup == markup:
            raise ApiError(400, NOT_MODIFIED)
        message.history.append(
            Edit(
                message.text if message.text is not None else message.caption,
                copy.deepcopy(message.reply_markup),
                time.time(),
            )
        )
        message.reply_markup = markup
        message.edit_date = int(time.time())
        return self._message_json(message)

    def _delete_message(self, call: MethodCall) -> bool:
        message = self._target(call, purpose="delete")
        message.deleted = True
        return True

    def _answer_callback_query(self, call: MethodCall) -> bool:
        query_id = str(call.params.get("callback_query_id") or "")
        press = self._presses.get(query_id)
        if press is None or press.answer is not None:
            raise ApiError(400, QUERY_INVALID)
        text = call.params.get("text")
        if text is not None and len(str(text)) > CALLBACK_ANSWER_LIMIT:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        press.answer = CallbackAnswer(
            query_id=query_id,
            user_id=press.user_id,
            chat_id=press.chat_id,
            message_id=press.message_id,
            callback_data=press.callback_data,
            text=str(text) if text is not None else None,
            show_alert=bool(call.params.get("show_alert")),
            url=call.params.get("url"),
        )
        self._answers.append(press.answer)
        return True

    def _send_chat_action(self, call: MethodCall) -> bool:
        chat_id = self._chat(call)
        action = str(call.params.get("action") or "")
        if not action:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self._chat_actions.append((chat_id, action))
        return True

    def _send_file(self, call: MethodCall, kind: str) -> dict[str, Any]:
        chat_id = self._chat(call)
        meta = file_meta(kind, call.params)
        stored = self.files.input_file(call, kind, call.params.get(kind), kind, meta)
        message = self._bot_message(call, chat_id)
        self._set_caption(message, call.params.get("caption"), call.params.get("parse_mode"))
        message.file = stored
        return self._message_json(message)

    def _set_caption(self, message: ChatMessage, raw: Any, parse_mode: Any) -> None:
        if raw is None:
            return
        text, formatting = render(str(raw), parse_mode)
        if utf16_len(text) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        message.caption, message.raw_text, message.parse_mode = text, str(raw), parse_mode
        message._format = formatting

    def _send_media_group(self, call: MethodCall) -> list[dict[str, Any]]:
        chat_id = self._chat(call)
        media = call.params.get("media")
        if not isinstance(media, list) or not all(isinstance(item, dict) for item in media):
            raise ApiError(400, "Bad Request: can't parse media JSON object")
        if not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: wrong number of media items: must be 2-10")
        kinds = {item.get("type") for item in media}
        if not kinds <= set(FILE_FOLDERS) - {"voice"}:
            raise ApiError(400, f"Bad Request: unsupported media types {sorted(map(str, kinds))}")
        if len(kinds) > 1 and kinds & {"audio", "document"}:
            raise ApiError(
                400, "Bad Request: audio and documents can't be mixed with other media types"
            )
        # Resolve every file first, so a bad item leaves no half-sent album.
        items = [
            (
                item,
                self.files.input_file(
                    call,
                    str(item["type"]),
                    item.get("media"),
                    "",
                    file_meta(str(item["type"]), item),
                ),
            )
            for item in media
        ]
        group_id = str(next(self.ids) * 1_000_003)
        sent = []
        for item, stored in items:
            message = self._bot_message(call, chat_id)
            self._set_caption(message, item.get("caption"), item.get("parse_mode"))
            message.file = stored
            message.media_group_id = group_id
            sent.append(self._message_json(message))
        return sent


def _text_param(call: MethodCall, *, too_long: str) -> tuple[str, Any, str, tuple[Any, ...]]:
    """A send or edit call's ``text``: as sent, its parse_mode, as shown, and its formatting.

    Empty and over-long texts are refused; Telegram words "too long" differently for a send
    and an edit, hence ``too_long``.
    """
    raw = str(call.params.get("text") or "")
    parse_mode = call.params.get("parse_mode")
    text, formatting = render(raw, parse_mode)
    if not text.strip():
        raise ApiError(400, "Bad Request: message text is empty")
    if utf16_len(text) > TEXT_LIMIT:
        raise ApiError(400, f"Bad Request: {too_long}")
    return raw, parse_mode, text, formatting
