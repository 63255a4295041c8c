"""A fake Telegram Bot API server for tests: real HTTP on 127.0.0.1, Telegram-shaped answers.

The real python-telegram-bot ``Application`` / ``telegram.Bot`` talk to it exactly as they talk
to api.telegram.org: point ``base_url`` at :attr:`FakeBotApi.api_base_url` and
``base_file_url`` at :attr:`FakeBotApi.file_base_url` (PTB appends the token). The server runs
in its own thread with its own event loop, so sync tests, async tests (PTB running in the
test's loop) and child processes can all use it.

Simulated users queue updates (:meth:`FakeBotApi.send_text`, :meth:`~FakeBotApi.send_audio`,
:meth:`~FakeBotApi.press_button`, ...); what the bot did is observed through snapshots
(:meth:`~FakeBotApi.chat_messages`, :meth:`~FakeBotApi.last_message`,
:meth:`~FakeBotApi.calls`, :meth:`~FakeBotApi.callback_answers`) that never change after they
are returned. Wait for the bot with the ``wait_for_*`` helpers::

    with FakeBotApi() as api:                         # or the `fake_bot_api` fixture
        sent = api.send_audio(42, song_path)
        picker = api.wait_for_message(42, with_keyboard=True, after=sent)
        answer = api.wait_for_answer(api.press_button(42, picker, "toggle:vocals"))

Never block the test's event loop while PTB runs in it: there use the ``async_wait_for_*``
twins (or ``await async_wait_until(...)`` from tests.support.waiting).

Failures: :meth:`~FakeBotApi.fail_next` (any status, 429 with ``retry_after``, optionally after
the call took effect), :meth:`~FakeBotApi.set_latency`, :meth:`~FakeBotApi.block_bot` (403 for
a user's chat), and :meth:`~FakeBotApi.stop` then :meth:`~FakeBotApi.start` (Telegram down and
back, same port, same state).

Fidelity notes: error descriptions are Telegram's own wording for the cases modelled here
("message is not modified", "message to edit not found", "file is too big", "chat not
found", ...), and so are its limits (20 MB getFile, 50 MB upload, 4096-character texts,
64-byte callback data). ``parse_mode="HTML"`` is parsed (unsupported or unbalanced tags are
refused like Telegram does, and :attr:`ChatMessage.text` is the plain text a user sees); other
parse modes are stored as sent. Audio, voice and video sent by a simulated user report the
duration (and an audio's title/performer tags) that ffprobe reads, as Telegram clients do;
files the bot uploads keep what the bot sent. Privacy mode is not modelled: the bot gets
every group message.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import json
import logging
import mimetypes
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple
from urllib.parse import unquote, urlparse

from aiohttp import BodyPartReader, web

from tests.support.waiting import async_wait_until, wait_until

logger = logging.getLogger(__name__)

TEST_TOKEN = "123456:TEST-token-not-real"

MB = 1024 * 1024
DOWNLOAD_LIMIT = 20 * MB  # getFile refuses bigger files unless the server runs in local mode
UPLOAD_LIMIT = 50 * MB  # multipart uploads bigger than this are refused (413)
LOCAL_UPLOAD_LIMIT = 2000 * MB
TEXT_LIMIT = 4096  # characters of a message text
CAPTION_LIMIT = 1024
CALLBACK_DATA_LIMIT = 64  # bytes
CALLBACK_ANSWER_LIMIT = 200

NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"
WRONG_FILE = "Bad Request: wrong file identifier/HTTP URL specified"


def _names(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Bot API parameters that PTB (and Telegram) carry as JSON text inside form fields.
_JSON_PARAMS = _names(
    "reply_markup media allowed_updates entities caption_entities commands scope "
    "link_preview_options reply_parameters"
)
_INT_PARAMS = _names(
    "chat_id from_chat_id user_id message_id message_thread_id reply_to_message_id offset "
    "limit duration width height cache_time max_connections"
)
_FLOAT_PARAMS = frozenset({"timeout"})
_BOOL_PARAMS = _names(
    "show_alert disable_notification protect_content allow_sending_without_reply "
    "drop_pending_updates disable_web_page_preview disable_content_type_detection "
    "supports_streaming has_spoiler show_caption_above_media allow_paid_broadcast"
)

_FILE_FOLDERS = {
    "audio": "music",
    "document": "documents",
    "voice": "voice",
    "video": "videos",
    "photo": "photos",
}
_HTML_TAGS = _names(
    "b strong i em u ins s strike del a code pre span tg-spoiler tg-emoji blockquote"
)


class Button(NamedTuple):
    """One inline keyboard button as ``(text, callback_data)`` (None for link buttons)."""

    text: str
    callback_data: str | None


@dataclass
class StoredFile:
    """A file the server knows: sent by a simulated user or uploaded by the bot."""

    file_id: str
    file_unique_id: str
    kind: str  # "audio", "document", "voice", "video" or "photo"
    data: bytes
    file_name: str | None
    mime_type: str | None
    file_path: str
    declared_size: int | None = None
    duration: int | None = None
    title: str | None = None
    performer: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def size(self) -> int:
        """The size Telegram reports: ``declared_size`` when given, else the real length."""
        return self.declared_size if self.declared_size is not None else len(self.data)


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
class UploadedPart:
    """A file part of a multipart request."""

    filename: str | None
    content_type: str | None
    data: bytes


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


@dataclass
class _Press:
    query_id: str
    user_id: int
    chat_id: int
    message_id: int
    callback_data: str
    answer: CallbackAnswer | None = None


@dataclass
class _Fault:
    method: str
    status: int
    description: str
    retry_after: int | None
    remaining: int
    applied: bool
    when: Callable[[dict[str, Any]], bool] | None


@dataclass
class _Call:
    method: str
    params: dict[str, Any]
    files: dict[str, UploadedPart]


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


def _default_description(status: int, retry_after: int | None) -> str:
    if status == 429:
        return f"Too Many Requests: retry after {retry_after or 1}"
    return {
        400: "Bad Request: injected failure",
        401: "Unauthorized",
        403: "Forbidden: bot was blocked by the user",
        404: "Not Found",
        409: "Conflict: terminated by other getUpdates request",
        500: "Internal Server Error",
        502: "Bad Gateway",
    }.get(status, f"Error {status}")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _decode_param(name: str, value: Any) -> Any:
    """Turn a form/multipart string into the value it encodes (PTB JSON-encodes non-strings)."""
    if not isinstance(value, str):
        return value
    if name in _JSON_PARAMS:
        try:
            return json.loads(value)
        except ValueError:
            if name == "reply_markup":
                raise ApiError(
                    400, "Bad Request: can't parse reply keyboard markup JSON object"
                ) from None
            raise ApiError(400, f"Bad Request: can't parse {name} JSON object") from None
    if name in _INT_PARAMS:
        try:
            return int(value)
        except ValueError:
            return value
    if name in _FLOAT_PARAMS:
        try:
            return float(value)
        except ValueError:
            return value
    if name in _BOOL_PARAMS:
        return value.strip().lower() in {"true", "1"}
    return value


class _TelegramHtml(HTMLParser):
    """Telegram's HTML subset: plain text plus a format signature; bad markup is refused."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[str] = []
        self.events: list[tuple[Any, ...]] = []

    def _offset(self) -> int:
        return sum(_utf16_len(part) for part in self.parts)

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


def _render(text: str, parse_mode: str | None) -> tuple[str, tuple[Any, ...]]:
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


def _check_markup(markup: Any) -> dict[str, Any] | None:
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


class FakeBotApi:
    """A fake Bot API server; :meth:`start` / :meth:`stop` or use it as a context manager.

    Only ``token`` is accepted (others get 401). With ``local_mode=True`` it behaves like a
    self-hosted ``telegram-bot-api --local``: no 20 MB download limit, ``getFile`` answers
    with an absolute path on this machine, and ``file://`` uploads are read from disk.
    All query and simulation methods are thread-safe and may be called from any thread.
    """

    def __init__(
        self,
        token: str = TEST_TOKEN,
        *,
        local_mode: bool = False,
        bot_username: str = "demix_test_bot",
        bot_first_name: str = "Demix Test Bot",
    ) -> None:
        self.token = token
        self.local_mode = local_mode
        prefix = token.split(":", 1)[0]
        self.bot_user: dict[str, Any] = {
            "id": int(prefix) if prefix.isdigit() else 1,
            "is_bot": True,
            "first_name": bot_first_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._users: dict[int, dict[str, Any]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._messages: dict[int, list[ChatMessage]] = {}
        self._message_index: dict[tuple[int, int], ChatMessage] = {}
        self._next_message_id: dict[int, int] = {}
        self._files: dict[str, StoredFile] = {}
        self._files_by_path: dict[str, StoredFile] = {}
        self._downloads: list[str] = []
        self._updates: list[dict[str, Any]] = []
        self._next_update_id = 1
        self._allowed_updates: frozenset[str] | None = None
        self._webhook_url = ""
        self._presses: dict[str, _Press] = {}
        self._answers: list[CallbackAnswer] = []
        self._chat_actions: list[tuple[int, str]] = []
        self._commands: dict[str, list[dict[str, Any]]] = {}
        self._calls: list[ApiCall] = []
        self._faults: list[_Fault] = []
        self._latency: dict[str, float] = {}
        self._blocked: set[int] = set()
        self._poller = 0  # ticket of the getUpdates request allowed to answer
        self._polls_waiting = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._wakeup: asyncio.Event | None = None
        self._closing = False
        self._port: int | None = None
        self._local_dir: tempfile.TemporaryDirectory[str] | None = None

        self._handlers: dict[str, Callable[[_Call], Any]] = {
            "getMe": lambda call: dict(self.bot_user),
            "logOut": lambda call: True,
            "close": lambda call: True,
            "deleteWebhook": self._delete_webhook,
            "setWebhook": self._set_webhook,
            "getWebhookInfo": self._get_webhook_info,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "deleteMyCommands": self._delete_my_commands,
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
            "getFile": self._get_file,
            "getChat": self._get_chat,
        }
        self._method_names = {name.lower(): name for name in [*self._handlers, "getUpdates"]}

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeBotApi is not started")
        return self._port

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base_url(self) -> str:
        """PTB's ``base_url`` (it appends the token): ``http://127.0.0.1:PORT/bot``."""
        return f"{self.base_url}/bot"

    @property
    def file_base_url(self) -> str:
        """PTB's ``base_file_url``: ``http://127.0.0.1:PORT/file/bot``."""
        return f"{self.base_url}/file/bot"

    def settings_overrides(self) -> dict[str, Any]:
        """Keyword arguments for ``Settings`` (the ``make_settings`` fixture) to use this server."""
        return {
            "telegram_bot_token": self.token,
            "telegram_api_base_url": self.api_base_url,
            "telegram_file_base_url": self.file_base_url,
            "telegram_local_mode": self.local_mode,
        }

    def environment(self) -> dict[str, str]:
        """Environment variables pointing a child process (``demix bot``, ...) at this server."""
        return {
            "TELEGRAM_BOT_TOKEN": self.token,
            "TELEGRAM_API_BASE_URL": self.api_base_url,
            "TELEGRAM_FILE_BASE_URL": self.file_base_url,
            "TELEGRAM_LOCAL_MODE": "true" if self.local_mode else "false",
        }

    def start(self) -> FakeBotApi:
        """Serve on 127.0.0.1 in a background thread; returns once it accepts connections.

        The first start picks a free port; a restart after :meth:`stop` reuses it and keeps
        all state, so a test can take "Telegram" down and bring it back.
        """
        if self._thread is not None:
            raise RuntimeError("FakeBotApi is already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port or 0))
        self._port = int(sock.getsockname()[1])
        if self.local_mode:
            self._local_dir = tempfile.TemporaryDirectory(prefix="fake-bot-api-")
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._open(sock))
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._loop = loop
        self._closing = False
        self._thread = threading.Thread(target=serve, name="fake-bot-api", daemon=True)
        self._thread.start()
        if not ready.wait(timeout=10) or failure:
            self._thread = None
            raise RuntimeError("fake Bot API server did not start") from (
                failure[0] if failure else None
            )
        return self

    def stop(self) -> None:
        """Release long polls, close connections and join the server thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout=15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=15)
        self._loop = self._thread = None
        if self._local_dir is not None:
            self._local_dir.cleanup()
            self._local_dir = None

    def __enter__(self) -> FakeBotApi:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _open(self, sock: socket.socket) -> None:
        limit = LOCAL_UPLOAD_LIMIT if self.local_mode else UPLOAD_LIMIT
        app = web.Application(client_max_size=limit + MB)
        app.router.add_route("*", "/bot{token}/{method}", self._on_method)
        app.router.add_get("/file/bot{token}/{path:.+}", self._on_download)
        # No access log: request paths carry the bot token.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._wakeup = asyncio.Event()

    async def _close(self) -> None:
        self._closing = True
        self._notify()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _notify(self) -> None:
        """Wake every waiting getUpdates (runs in the server loop)."""
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = asyncio.Event()

    def _wake_pollers(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._notify)

    # -- HTTP ------------------------------------------------------------------------------

    @staticmethod
    def _json_response(status: int, body: dict[str, Any]) -> web.Response:
        return web.json_response(body, status=status)

    async def _read_params(self, request: web.Request) -> tuple[dict[str, Any], dict[str, Any]]:
        raw: dict[str, Any] = dict(request.query)
        files: dict[str, UploadedPart] = {}
        content_type = request.content_type
        if request.method == "POST" and request.can_read_body:
            if content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise ApiError(400, "Bad Request: can't parse JSON object") from None
                if not isinstance(body, dict):
                    raise ApiError(400, "Bad Request: can't parse JSON object")
                raw.update(body)
            elif content_type == "multipart/form-data":
                reader = await request.multipart()
                async for part in reader:
                    if not isinstance(part, BodyPartReader) or part.name is None:
                        continue
                    if part.filename is not None:
                        data = bytes(await part.read(decode=True))
                        files[part.name] = UploadedPart(
                            part.filename, part.headers.get("Content-Type"), data
                        )
                    else:
                        raw[part.name] = await part.text()
            elif content_type == "application/x-www-form-urlencoded":
                raw.update(await request.post())
        params = {name: _decode_param(name, value) for name, value in raw.items()}
        return params, files

    async def _on_method(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._json_response(401, ApiError(401, "Unauthorized").payload())
        asked = request.match_info["method"]
        method = self._method_names.get(asked.lower(), asked)
        try:
            params, files = await self._read_params(request)
        except ApiError as err:
            self._record(method, {}, {}, err.status, err.description, None)
            return self._json_response(err.status, err.payload())
        except web.HTTPRequestEntityTooLarge:
            too_large = ApiError(413, "Request Entity Too Large")
            self._record(method, {}, {}, 413, too_large.description, None)
            return self._json_response(413, too_large.payload())
        except Exception as exc:
            unreadable = ApiError(400, f"Bad Request: can't parse the request body: {exc!r}")
            self._record(method, {}, {}, 400, unreadable.description, None)
            return self._json_response(400, unreadable.payload())
        call = _Call(method, params, files)
        if method not in self._handlers and method != "getUpdates":
            self._record(method, params, files, 404, "Not Found", None)
            return self._json_response(404, ApiError(404, "Not Found").payload())

        delay = self._latency.get(method, 0.0)
        if delay:
            await asyncio.sleep(delay)
        fault = self._take_fault(method, params)
        if fault is not None and not fault.applied:
            return self._fail(call, fault)
        try:
            if method == "getUpdates":
                result = await self._get_updates(call)
            else:
                with self._lock:
                    result = self._handlers[method](call)
        except ApiError as err:
            self._record(method, params, files, err.status, err.description, None)
            return self._json_response(err.status, err.payload())
        except Exception as exc:
            logger.exception("fake Bot API failed on %s", method)
            bug = ApiError(500, f"Internal Server Error: fake Bot API bug: {exc!r}")
            self._record(method, params, files, 500, bug.description, None)
            return self._json_response(500, bug.payload())
        if fault is not None:
            return self._fail(call, fault)
        self._record(method, params, files, 200, None, result)
        return self._json_response(200, {"ok": True, "result": result})

    def _fail(self, call: _Call, fault: _Fault) -> web.Response:
        err = ApiError(fault.status, fault.description, fault.retry_after)
        self._record(call.method, call.params, call.files, err.status, err.description, None)
        return self._json_response(err.status, err.payload())

    async def _on_download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return self._json_response(401, ApiError(401, "Unauthorized").payload())
        path = unquote(request.match_info["path"])
        fault = self._take_fault("download", {"file_path": path})
        if fault is not None:
            err = ApiError(fault.status, fault.description, fault.retry_after)
            return self._json_response(err.status, err.payload())
        with self._lock:
            stored = self._files_by_path.get(path)
            if stored is not None:
                self._downloads.append(stored.file_id)
        if stored is None:
            return self._json_response(404, ApiError(404, "Not Found").payload())
        return web.Response(
            body=stored.data, content_type=stored.mime_type or "application/octet-stream"
        )

    def _record(
        self,
        method: str,
        params: dict[str, Any],
        files: dict[str, UploadedPart],
        status: int,
        description: str | None,
        result: Any,
    ) -> None:
        call = ApiCall(
            method,
            copy.deepcopy(params),
            dict(files),
            status,
            description,
            copy.deepcopy(result),
            time.time(),
        )
        with self._lock:
            self._calls.append(call)

    def _take_fault(self, method: str, params: dict[str, Any]) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method == method.lower() and (fault.when is None or fault.when(params)):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- getUpdates ----------------------------------------------------------------------

    async def _get_updates(self, call: _Call) -> list[dict[str, Any]]:
        params = call.params
        offset = params.get("offset")
        limit = min(max(int(params.get("limit") or 100), 1), 100)
        timeout = max(float(params.get("timeout") or 0), 0.0)
        allowed = params.get("allowed_updates")
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._webhook_url:
                raise ApiError(
                    409,
                    "Conflict: can't use getUpdates method while webhook is active; use "
                    "deleteWebhook to delete the webhook first",
                )
            if isinstance(allowed, list):
                self._allowed_updates = frozenset(allowed) or None
            if isinstance(offset, int):
                self._confirm(offset)
            self._poller += 1
            ticket = self._poller
        # A newer getUpdates terminates this one, as Telegram does.
        self._notify()
        deadline = loop.time() + timeout
        while True:
            wakeup = self._wakeup
            with self._lock:
                if self._poller != ticket:
                    raise ApiError(
                        409,
                        "Conflict: terminated by other getUpdates request; make "
                        "sure that only one bot instance is running",
                    )
                batch = [
                    copy.deepcopy(update)
                    for update in self._updates
                    if self._allowed_updates is None
                    or _update_type(update) in self._allowed_updates
                ][:limit]
            remaining = deadline - loop.time()
            if batch or self._closing or remaining <= 0 or wakeup is None:
                return batch
            with self._lock:
                self._polls_waiting += 1
            try:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), timeout=remaining)
            finally:
                with self._lock:
                    self._polls_waiting -= 1

    def _confirm(self, offset: int) -> None:
        if offset < 0:
            self._updates = self._updates[offset:]
        else:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]

    def _queue_update(self, kind: str, payload: dict[str, Any]) -> int:
        with self._lock:
            update_id = self._next_update_id
            self._next_update_id += 1
            self._updates.append({"update_id": update_id, kind: payload})
        self._wake_pollers()
        return update_id

    # -- chats, users, messages ----------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str = "en",
    ) -> dict[str, Any]:
        """Register (or update) a simulated user; users are also made on first use."""
        with self._lock:
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
            self.add_user(user_id)
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
                    {"type": "bot_command", "offset": 0, "length": _utf16_len(command)}
                ]
        if message.caption is not None:
            data["caption"] = message.caption
        if message.file is not None:
            data[message.file.kind] = self._file_json(message.file)
        if message.media_group_id is not None:
            data["media_group_id"] = message.media_group_id
        if message.reply_markup and "inline_keyboard" in message.reply_markup:
            data["reply_markup"] = copy.deepcopy(message.reply_markup)
        if message.reply_to is not None and not nested:
            target = self._message_index.get((message.chat_id, message.reply_to))
            if target is not None and not target.deleted:
                data["reply_to_message"] = self._message_json(target, nested=True)
        return data

    @staticmethod
    def _file_json(stored: StoredFile) -> Any:
        base: dict[str, Any] = {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
        }
        if stored.kind == "photo":
            base.update(width=stored.width or 640, height=stored.height or 480)
            return [base]
        if stored.kind in {"audio", "voice", "video"}:
            base["duration"] = stored.duration or 0
        if stored.kind == "video":
            base.update(width=stored.width or 640, height=stored.height or 360)
        for key in ("file_name", "mime_type", "title", "performer"):
            value = getattr(stored, key)
            if value is not None:
                base[key] = value
        return base

    def _register_file(
        self,
        kind: str,
        data: bytes,
        *,
        file_name: str | None,
        mime_type: str | None,
        declared_size: int | None = None,
        **meta: Any,
    ) -> StoredFile:
        with self._lock:
            number = next(self._ids)
            suffix = Path(file_name).suffix if file_name else ""
            if not suffix and mime_type:
                suffix = mimetypes.guess_extension(mime_type) or ""
            stored = StoredFile(
                file_id=f"FAKE-{kind}-{number:06d}-{self.bot_user['id']}",
                file_unique_id=f"U{number:06d}",
                kind=kind,
                data=bytes(data),
                file_name=file_name,
                mime_type=mime_type,
                file_path=f"{_FILE_FOLDERS[kind]}/file_{number}{suffix}",
                declared_size=declared_size,
                **meta,
            )
            self._files[stored.file_id] = stored
            self._files_by_path[stored.file_path] = stored
            return stored

    # -- simulated users -----------------------------------------------------------------

    def send_text(
        self,
        user_id: int,
        text: str,
        chat_id: int | None = None,
        chat_type: str = "private",
        *,
        reply_to: int | None = None,
    ) -> ChatMessage:
        """A user writes ``text`` (``/commands`` get a bot_command entity); returns the message."""
        with self._lock:
            chat = self._chat_for(user_id, chat_id, chat_type)
            message = self._new_message(chat, from_bot=False, sender_id=user_id)
            message.text = message.raw_text = text
            message.reply_to = reply_to
            payload = self._message_json(message)
            snapshot = copy.deepcopy(message)
        self._queue_update("message", payload)
        return snapshot

    def _send_user_file(
        self,
        kind: str,
        user_id: int,
        content: Path | bytes,
        *,
        chat_id: int | None,
        chat_type: str,
        file_name: str | None,
        mime_type: str | None,
        declared_size: int | None,
        caption: str | None,
        **meta: Any,
    ) -> ChatMessage:
        if isinstance(content, Path):
            data = content.read_bytes()
            file_name = file_name or content.name
        else:
            data = bytes(content)
        if mime_type is None and file_name:
            mime_type = mimetypes.guess_type(file_name)[0]
        if kind in {"audio", "voice", "video"}:
            # Telegram clients fill duration (and an audio's title/performer) from the file.
            probed = _probe(data)
            for key, value in probed.items():
                if key in meta and meta[key] is None:
                    meta[key] = value
            meta["duration"] = meta.get("duration") or probed.get("duration") or 0
        stored = self._register_file(
            kind,
            data,
            file_name=file_name,
            mime_type=mime_type,
            declared_size=declared_size,
            **meta,
        )
        with self._lock:
            chat = self._chat_for(user_id, chat_id, chat_type)
            message = self._new_message(chat, from_bot=False, sender_id=user_id)
            message.file = stored
            message.caption = message.raw_text = caption
            payload = self._message_json(message)
            snapshot = copy.deepcopy(message)
        self._queue_update("message", payload)
        return snapshot

    def send_audio(
        self,
        user_id: int,
        content: Path | bytes,
        file_name: str | None = None,
        mime_type: str | None = "audio/mpeg",
        title: str | None = None,
        performer: str | None = None,
        duration: int | None = None,
        declared_size: int | None = None,
        chat_id: int | None = None,
        *,
        chat_type: str = "private",
        caption: str | None = None,
    ) -> ChatMessage:
        """A user sends an audio message; ``declared_size`` overrides the reported file size."""
        if file_name is None and not isinstance(content, Path):
            file_name = "audio.mp3"
        return self._send_user_file(
            "audio",
            user_id,
            content,
            chat_id=chat_id,
            chat_type=chat_type,
            file_name=file_name,
            mime_type=mime_type,
            declared_size=declared_size,
            caption=caption,
            title=title,
            performer=performer,
            duration=duration,
        )

    def send_document(
        self,
        user_id: int,
        content: Path | bytes,
        file_name: str | None = None,
        mime_type: str | None = None,
        declared_size: int | None = None,
        chat_id: int | None = None,
        *,
        chat_type: str = "private",
        caption: str | None = None,
    ) -> ChatMessage:
        """A user sends a file as a document (mime type guessed from the name if not given)."""
        if file_name is None and not isinstance(content, Path):
            file_name = "document.bin"
        return self._send_user_file(
            "document",
            user_id,
            content,
            chat_id=chat_id,
            chat_type=chat_type,
            file_name=file_name,
            mime_type=mime_type,
            declared_size=declared_size,
            caption=caption,
        )

    def send_voice(
        self,
        user_id: int,
        content: Path | bytes,
        duration: int | None = None,
        mime_type: str | None = "audio/ogg",
        declared_size: int | None = None,
        chat_id: int | None = None,
        *,
        chat_type: str = "private",
    ) -> ChatMessage:
        """A user sends a voice note (Telegram gives voice notes no file name)."""
        return self._send_user_file(
            "voice",
            user_id,
            content,
            chat_id=chat_id,
            chat_type=chat_type,
            file_name=None,
            mime_type=mime_type,
            declared_size=declared_size,
            caption=None,
            duration=duration,
        )

    def send_video(
        self,
        user_id: int,
        content: Path | bytes,
        file_name: str | None = None,
        mime_type: str | None = "video/mp4",
        duration: int | None = None,
        declared_size: int | None = None,
        chat_id: int | None = None,
        *,
        chat_type: str = "private",
        caption: str | None = None,
    ) -> ChatMessage:
        """A user sends a video."""
        return self._send_user_file(
            "video",
            user_id,
            content,
            chat_id=chat_id,
            chat_type=chat_type,
            file_name=file_name,
            mime_type=mime_type,
            declared_size=declared_size,
            caption=caption,
            duration=duration,
            width=640,
            height=360,
        )

    def send_photo(
        self,
        user_id: int,
        content: Path | bytes,
        declared_size: int | None = None,
        chat_id: int | None = None,
        *,
        chat_type: str = "private",
        caption: str | None = None,
    ) -> ChatMessage:
        """A user sends a photo (Telegram gives photos no file name or mime type)."""
        return self._send_user_file(
            "photo",
            user_id,
            content,
            chat_id=chat_id,
            chat_type=chat_type,
            file_name=None,
            mime_type="image/jpeg",
            declared_size=declared_size,
            caption=caption,
            width=640,
            height=480,
        )

    def press_button(
        self,
        user_id: int,
        message: ChatMessage | tuple[int, int],
        callback_data: str,
    ) -> str:
        """``user_id`` presses a button on a bot message; any ``callback_data`` may be forged.

        ``message`` is a snapshot or ``(chat_id, message_id)``. Returns the callback query id
        (see :meth:`answer_for`).
        """
        chat_id, message_id = (
            (message.chat_id, message.message_id) if isinstance(message, ChatMessage) else message
        )
        with self._lock:
            target = self._message_index.get((chat_id, message_id))
            if target is None or target.deleted:
                raise ValueError(f"no message {message_id} in chat {chat_id} to press")
            query_id = str(10**12 + next(self._ids))
            self._presses[query_id] = _Press(query_id, user_id, chat_id, message_id, callback_data)
            payload = {
                "id": query_id,
                "from": dict(self._user(user_id)),
                "chat_instance": f"ci{abs(chat_id)}",
                "message": self._message_json(target),
                "data": callback_data,
            }
        self._queue_update("callback_query", payload)
        return query_id

    def block_bot(self, user_id: int, blocked: bool = True) -> None:
        """The user blocks (or unblocks) the bot: sends to their chat get 403 Forbidden."""
        with self._lock:
            if blocked:
                self._blocked.add(user_id)
            else:
                self._blocked.discard(user_id)

    # -- observing the bot ---------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[ApiCall]:
        """Every request so far (or those of one method), in the order they completed."""
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def chat_messages(
        self, chat_id: int, *, include_user: bool = False, include_deleted: bool = False
    ) -> list[ChatMessage]:
        """Snapshots of the bot's messages in a chat (current state), oldest first."""
        with self._lock:
            return [
                copy.deepcopy(m)
                for m in self._messages.get(chat_id, [])
                if (include_user or m.from_bot) and (include_deleted or not m.deleted)
            ]

    def message(self, chat_id: int, message_id: int) -> ChatMessage | None:
        """A snapshot of one message (bot's or user's), deleted ones included."""
        with self._lock:
            found = self._message_index.get((chat_id, message_id))
            return copy.deepcopy(found) if found is not None else None

    def last_message(
        self,
        chat_id: int,
        *,
        with_keyboard: bool = False,
        containing: str | None = None,
        after: ChatMessage | int | None = None,
    ) -> ChatMessage | None:
        """The bot's latest matching message in a chat, or None (for ``wait_until``).

        ``after`` (a message or message id) only considers messages sent after it.
        """
        after_id = after.message_id if isinstance(after, ChatMessage) else (after or 0)
        for message in reversed(self.chat_messages(chat_id)):
            if message.message_id <= after_id:
                break
            if with_keyboard and not message.has_keyboard:
                continue
            if containing is not None and containing not in message.content:
                continue
            return message
        return None

    def wait_for_message(
        self,
        chat_id: int,
        *,
        with_keyboard: bool = False,
        containing: str | None = None,
        after: ChatMessage | int | None = None,
        timeout: float = 10.0,
    ) -> ChatMessage:
        """Block until :meth:`last_message` finds a match (sync tests; never in PTB's loop)."""
        found = wait_until(
            lambda: self.last_message(
                chat_id, with_keyboard=with_keyboard, containing=containing, after=after
            ),
            timeout=timeout,
            what=f"a bot message in chat {chat_id} (containing={containing!r})",
        )
        assert found is not None
        return found

    async def async_wait_for_message(
        self,
        chat_id: int,
        *,
        with_keyboard: bool = False,
        containing: str | None = None,
        after: ChatMessage | int | None = None,
        timeout: float = 10.0,
    ) -> ChatMessage:
        """The asyncio twin of :meth:`wait_for_message`, for tests that run PTB in their loop."""
        found = await async_wait_until(
            lambda: self.last_message(
                chat_id, with_keyboard=with_keyboard, containing=containing, after=after
            ),
            timeout=timeout,
            what=f"a bot message in chat {chat_id} (containing={containing!r})",
        )
        assert found is not None
        return found

    def audio_messages(self, chat_id: int) -> list[ChatMessage]:
        """The bot's audio messages in a chat (sendAudio and media groups), oldest first."""
        return [
            m for m in self.chat_messages(chat_id) if m.file is not None and m.file.kind == "audio"
        ]

    def callback_answers(self) -> list[CallbackAnswer]:
        """Every answerCallbackQuery, in order."""
        with self._lock:
            return list(self._answers)

    def answer_for(self, query_id: str) -> CallbackAnswer | None:
        """The answer to a press made with :meth:`press_button`, or None while unanswered."""
        with self._lock:
            press = self._presses.get(query_id)
            return press.answer if press is not None else None

    def wait_for_answer(self, query_id: str, timeout: float = 10.0) -> CallbackAnswer:
        """Block until the bot answers a press (sync tests; never in PTB's loop)."""
        answer = wait_until(
            lambda: self.answer_for(query_id), timeout=timeout, what=f"answer to {query_id}"
        )
        assert answer is not None
        return answer

    async def async_wait_for_answer(self, query_id: str, timeout: float = 10.0) -> CallbackAnswer:
        """The asyncio twin of :meth:`wait_for_answer`."""
        answer = await async_wait_until(
            lambda: self.answer_for(query_id), timeout=timeout, what=f"answer to {query_id}"
        )
        assert answer is not None
        return answer

    def chat_actions(self, chat_id: int) -> list[str]:
        """The sendChatAction actions sent to a chat, in order."""
        with self._lock:
            return [action for chat, action in self._chat_actions if chat == chat_id]

    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by the bot (getUpdates offset)."""
        with self._lock:
            return len(self._updates)

    def is_polling(self) -> bool:
        """Whether a getUpdates long poll is waiting now (the bot is up and idle)."""
        with self._lock:
            return self._polls_waiting > 0

    def file(self, file_id: str) -> StoredFile | None:
        """A file the server knows (sent by a user or uploaded by the bot)."""
        with self._lock:
            return self._files.get(file_id)

    def downloads(self) -> list[str]:
        """file_ids of every file download served, in order."""
        with self._lock:
            return list(self._downloads)

    def commands(self) -> list[dict[str, Any]]:
        """The bot's command list for the default scope and language (setMyCommands)."""
        with self._lock:
            return copy.deepcopy(self._commands.get(_commands_key({}), []))

    # -- fault injection -----------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        *,
        status: int = 500,
        description: str | None = None,
        retry_after: int | None = None,
        times: int = 1,
        applied: bool = False,
        when: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with a Telegram-shaped error.

        ``method`` is a Bot API method name, or ``"download"`` for file downloads.
        ``status=429`` carries ``retry_after`` (PTB raises ``RetryAfter``). With
        ``applied=True`` the call still takes effect and only its answer is lost, like a
        response that never arrived. ``when`` limits the fault to matching (decoded) params.
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        with self._lock:
            self._faults.append(
                _Fault(
                    method=method.lower(),
                    status=status,
                    description=description or _default_description(status, retry_after),
                    retry_after=retry_after,
                    remaining=times,
                    applied=applied,
                    when=when,
                )
            )

    def set_latency(self, method: str, seconds: float) -> None:
        """Delay every answer to ``method`` by ``seconds`` (0 removes the delay)."""
        name = self._method_names.get(method.lower(), method)
        with self._lock:
            self._latency[name] = seconds

    # -- Bot API methods (run in the server thread, holding the lock) --------------------

    def _chat(self, call: _Call) -> int:
        chat_id = call.params.get("chat_id")
        if not isinstance(chat_id, int) or chat_id not in self._chats:
            raise ApiError(400, "Bad Request: chat not found")
        if chat_id in self._blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")
        return chat_id

    def _bot_message(self, call: _Call, chat_id: int) -> ChatMessage:
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
        markup = _check_markup(call.params.get("reply_markup"))
        message = self._new_message(chat_id, from_bot=True, sender_id=self.bot_user["id"])
        message.reply_to = int(reply_to) if reply_to is not None else None
        message.reply_markup = markup
        return message

    def _target(self, call: _Call, *, purpose: str = "edit") -> ChatMessage:
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

    def _delete_webhook(self, call: _Call) -> bool:
        self._webhook_url = ""
        if call.params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _set_webhook(self, call: _Call) -> bool:
        self._webhook_url = str(call.params.get("url") or "")
        if call.params.get("drop_pending_updates"):
            self._updates.clear()
        return True

    def _get_webhook_info(self, call: _Call) -> dict[str, Any]:
        return {
            "url": self._webhook_url,
            "has_custom_certificate": False,
            "pending_update_count": len(self._updates),
        }

    def _set_my_commands(self, call: _Call) -> bool:
        commands = call.params.get("commands")
        if not isinstance(commands, list):
            raise ApiError(400, "Bad Request: can't parse commands JSON object")
        for command in commands:
            name = str(command.get("command", ""))
            if not (1 <= len(name) <= 32) or not all(
                c.islower() or c.isdigit() or c == "_" for c in name
            ):
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                raise ApiError(400, "Bad Request: command description is empty")
        self._commands[_commands_key(call.params)] = commands
        return True

    def _get_my_commands(self, call: _Call) -> list[dict[str, Any]]:
        return self._commands.get(_commands_key(call.params), [])

    def _delete_my_commands(self, call: _Call) -> bool:
        self._commands.pop(_commands_key(call.params), None)
        return True

    def _get_chat(self, call: _Call) -> dict[str, Any]:
        return dict(self._chats[self._chat(call)])

    def _send_message(self, call: _Call) -> dict[str, Any]:
        chat_id = self._chat(call)
        raw = str(call.params.get("text") or "")
        parse_mode = call.params.get("parse_mode")
        text, formatting = _render(raw, parse_mode)
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > TEXT_LIMIT:
            raise ApiError(400, "Bad Request: message is too long")
        message = self._bot_message(call, chat_id)
        message.text, message.raw_text, message.parse_mode = text, raw, parse_mode
        message._format = formatting
        return self._message_json(message)

    def _apply_edit(
        self,
        message: ChatMessage,
        *,
        text: str | None,
        raw: str | None,
        parse_mode: str | None,
        formatting: tuple[Any, ...],
        markup: dict[str, Any] | None,
    ) -> dict[str, Any]:
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

    def _edit_message_text(self, call: _Call) -> dict[str, Any]:
        message = self._target(call)
        if message.text is None:
            raise ApiError(400, "Bad Request: there is no text in the message to edit")
        raw = str(call.params.get("text") or "")
        parse_mode = call.params.get("parse_mode")
        text, formatting = _render(raw, parse_mode)
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if len(text) > TEXT_LIMIT:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        # Like Telegram: an edit without reply_markup removes the inline keyboard.
        markup = _check_markup(call.params.get("reply_markup"))
        return self._apply_edit(
            message,
            text=text,
            raw=raw,
            parse_mode=parse_mode,
            formatting=formatting,
            markup=markup,
        )

    def _edit_message_caption(self, call: _Call) -> dict[str, Any]:
        message = self._target(call)
        if message.file is None:
            raise ApiError(400, "Bad Request: there is no caption in the message to edit")
        raw = call.params.get("caption")
        parse_mode = call.params.get("parse_mode")
        text, formatting = _render(str(raw), parse_mode) if raw is not None else (None, ())
        if text is not None and len(text) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        markup = _check_markup(call.params.get("reply_markup"))
        return self._apply_edit(
            message,
            text=text,
            raw=raw,
            parse_mode=parse_mode,
            formatting=formatting,
            markup=markup,
        )

    def _edit_message_reply_markup(self, call: _Call) -> dict[str, Any]:
        message = self._target(call)
        markup = _check_markup(call.params.get("reply_markup"))
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

    def _delete_message(self, call: _Call) -> bool:
        message = self._target(call, purpose="delete")
        message.deleted = True
        return True

    def _answer_callback_query(self, call: _Call) -> bool:
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

    def _send_chat_action(self, call: _Call) -> bool:
        chat_id = self._chat(call)
        action = str(call.params.get("action") or "")
        if not action:
            raise ApiError(400, "Bad Request: wrong parameter action in request")
        self._chat_actions.append((chat_id, action))
        return True

    def _input_file(
        self, call: _Call, kind: str, value: Any, part_name: str, meta: dict[str, Any]
    ) -> StoredFile:
        """The file a send call refers to: an upload, an attach:// part, a file_id or file://."""
        part = call.files.get(part_name)
        if isinstance(value, str) and value.startswith("attach://"):
            part = call.files.get(value.removeprefix("attach://"))
            if part is None:
                raise ApiError(400, f"Bad Request: file {value} not found in the request")
        if part is not None:
            limit = LOCAL_UPLOAD_LIMIT if self.local_mode else UPLOAD_LIMIT
            if len(part.data) > limit:
                raise ApiError(413, "Request Entity Too Large")
            return self._register_file(
                kind,
                part.data,
                file_name=part.filename,
                mime_type=part.content_type or mimetypes.guess_type(part.filename or "")[0],
                **meta,
            )
        if not isinstance(value, str) or not value:
            raise ApiError(400, f"Bad Request: there is no {kind} in the request")
        if value.startswith("file://"):
            if not self.local_mode:
                raise ApiError(400, WRONG_FILE)
            path = Path(unquote(urlparse(value).path))
            if not path.is_file():
                raise ApiError(400, "Bad Request: file not found")
            return self._register_file(
                kind,
                path.read_bytes(),
                file_name=path.name,
                mime_type=mimetypes.guess_type(path.name)[0],
                **meta,
            )
        stored = self._files.get(value)
        if stored is None:
            raise ApiError(400, WRONG_FILE)
        if stored.kind != kind:
            raise ApiError(
                400, f"Bad Request: can't use file of type {stored.kind.title()} as {kind.title()}"
            )
        return stored

    def _send_file(self, call: _Call, kind: str) -> dict[str, Any]:
        chat_id = self._chat(call)
        meta = _file_meta(kind, call.params)
        stored = self._input_file(call, kind, call.params.get(kind), kind, meta)
        message = self._bot_message(call, chat_id)
        self._set_caption(message, call.params.get("caption"), call.params.get("parse_mode"))
        message.file = stored
        return self._message_json(message)

    def _set_caption(self, message: ChatMessage, raw: Any, parse_mode: Any) -> None:
        if raw is None:
            return
        text, formatting = _render(str(raw), parse_mode)
        if len(text) > CAPTION_LIMIT:
            raise ApiError(400, "Bad Request: message caption is too long")
        message.caption, message.raw_text, message.parse_mode = text, str(raw), parse_mode
        message._format = formatting

    def _send_media_group(self, call: _Call) -> list[dict[str, Any]]:
        chat_id = self._chat(call)
        media = call.params.get("media")
        if not isinstance(media, list) or not all(isinstance(item, dict) for item in media):
            raise ApiError(400, "Bad Request: can't parse media JSON object")
        if not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: wrong number of media items: must be 2-10")
        kinds = {item.get("type") for item in media}
        if not kinds <= set(_FILE_FOLDERS) - {"voice"}:
            raise ApiError(400, f"Bad Request: unsupported media types {sorted(map(str, kinds))}")
        if len(kinds) > 1 and kinds & {"audio", "document"}:
            raise ApiError(
                400, "Bad Request: audio and documents can't be mixed with other media types"
            )
        # Resolve every file first, so a bad item leaves no half-sent album.
        items = [
            (
                item,
                self._input_file(
                    call,
                    str(item["type"]),
                    item.get("media"),
                    "",
                    _file_meta(str(item["type"]), item),
                ),
            )
            for item in media
        ]
        group_id = str(next(self._ids) * 1_000_003)
        sent = []
        for item, stored in items:
            message = self._bot_message(call, chat_id)
            self._set_caption(message, item.get("caption"), item.get("parse_mode"))
            message.file = stored
            message.media_group_id = group_id
            sent.append(self._message_json(message))
        return sent

    def _get_file(self, call: _Call) -> dict[str, Any]:
        stored = self._files.get(str(call.params.get("file_id") or ""))
        if stored is None:
            raise ApiError(400, "Bad Request: invalid file_id")
        if stored.size > DOWNLOAD_LIMIT and not self.local_mode:
            raise ApiError(400, "Bad Request: file is too big")
        file_path = stored.file_path
        if self.local_mode and self._local_dir is not None:
            # telegram-bot-api --local answers with a path on its own disk; PTB reads it there.
            local = Path(self._local_dir.name) / stored.file_path
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(stored.data)
            file_path = str(local)
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.size,
            "file_path": file_path,
        }


def _probe(data: bytes) -> dict[str, Any]:
    """Duration and title/performer tags of an audio file, as ffprobe reads them ({} if not)."""
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None or not data:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".bin") as handle:
        handle.write(data)
        handle.flush()
        result = subprocess.run(
            [
                ffprobe,
                "-v",
                "error",
                "-show_entries",
                "format=duration:format_tags=title,artist",
                "-of",
                "json",
                handle.name,
            ],
            capture_output=True,
            check=False,
        )
    if result.returncode != 0:
        return {}
    try:
        found = json.loads(result.stdout).get("format", {})
        tags = {key.lower(): value for key, value in (found.get("tags") or {}).items()}
        probed: dict[str, Any] = {"duration": round(float(found["duration"]))}
    except (ValueError, KeyError, TypeError):
        return {}
    if tags.get("title"):
        probed["title"] = tags["title"]
    if tags.get("artist"):
        probed["performer"] = tags["artist"]
    return probed


def _update_type(update: dict[str, Any]) -> str:
    return next(key for key in update if key != "update_id")


def _commands_key(params: dict[str, Any]) -> str:
    scope = params.get("scope") or {"type": "default"}
    return json.dumps([scope, params.get("language_code") or ""], sort_keys=True)


def _file_meta(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """Attributes a send call sets on the file it sends (title, performer, duration, ...)."""
    keys: Iterable[str] = {
        "audio": ("title", "performer", "duration"),
        "voice": ("duration",),
        "video": ("duration", "width", "height"),
    }.get(kind, ())
    meta = {key: params[key] for key in keys if params.get(key) is not None}
    for key in ("duration", "width", "height"):
        if key in meta:
            meta[key] = int(meta[key])
    return meta
