"""The public face of the fake: :class:`FakeBotApi` wires the parts and is what tests drive."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from tests.support.fake_bot_api.calls import ApiCall, Handler
from tests.support.fake_bot_api.chats import DEFAULT_LANGUAGE, Chats
from tests.support.fake_bot_api.commands import CommandMenus
from tests.support.fake_bot_api.faults import Faults, ParamsFilter
from tests.support.fake_bot_api.files import FileStore, StoredFile
from tests.support.fake_bot_api.messages import CallbackAnswer, ChatMessage
from tests.support.fake_bot_api.server import HttpServer
from tests.support.fake_bot_api.updates import UpdateQueue
from tests.support.waiting import async_wait_until, wait_until

if TYPE_CHECKING:
    from telegram import Bot

TEST_TOKEN = "123456:TEST-token-not-real"


class FakeBotApi:
    """A fake Bot API server; :meth:`start` / :meth:`stop` or use it as a context manager.

    Only ``token`` is accepted (others get 401). With ``local_mode=True`` it behaves like a
    self-hosted ``telegram-bot-api --local``: no 20 MB download limit, ``getFile`` answers
    with an absolute path on this machine, and ``file://`` uploads are read from disk.
    All query and simulation methods are thread-safe and may be called from any thread.
    ``host`` is the address it listens on: ``0.0.0.0`` lets containers reach it (the Compose
    end-to-end check); the URLs it gives (:attr:`api_base_url`, ...) stay on 127.0.0.1.
    """

    def __init__(
        self,
        token: str = TEST_TOKEN,
        *,
        local_mode: bool = False,
        bot_username: str = "demix_test_bot",
        bot_first_name: str = "Demix Test Bot",
        host: str = "127.0.0.1",
    ) -> None:
        self.token = token
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
        # One lock guards all state: handlers run holding it, tests read and act under it.
        lock = threading.RLock()
        # One counter for the ids of files, callback queries and albums, so none repeat.
        ids = itertools.count(1)
        self._updates = UpdateQueue(lock)
        self._files = FileStore(lock, ids, bot_id=self.bot_user["id"], local_mode=local_mode)
        self._chats = Chats(
            lock, ids, bot_user=self.bot_user, files=self._files, updates=self._updates
        )
        self._commands = CommandMenus(lock)
        self._faults = Faults(lock)
        handlers: dict[str, Handler] = {
            "getMe": lambda call: dict(self.bot_user),
            "logOut": lambda call: True,
            "close": lambda call: True,
            **self._updates.handlers(),
            **self._commands.handlers(),
            **self._chats.handlers(),
            **self._files.handlers(),
        }
        self._server = HttpServer(
            token,
            lock,
            handlers,
            updates=self._updates,
            files=self._files,
            faults=self._faults,
            host=host,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def local_mode(self) -> bool:
        return self._files.local_mode

    @property
    def port(self) -> int:
        return self._server.port

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

    def bot(self, token: str | None = None) -> Bot:
        """A real ``telegram.Bot`` talking to this server, in its mode; ``token`` to try
        another. Use it as ``async with api.bot() as bot:`` so it is shut down after."""
        from telegram import Bot

        return Bot(
            token or self.token,
            base_url=self.api_base_url,
            base_file_url=self.file_base_url,
            local_mode=self.local_mode,
        )

    def start(self) -> FakeBotApi:
        """Serve on 127.0.0.1 in a background thread; returns once it accepts connections.

        The first start picks a free port; a restart after :meth:`stop` reuses it and keeps
        all state, so a test can take "Telegram" down and bring it back.
        """
        self._server.start()
        return self

    def stop(self) -> None:
        """Release long polls, close connections and join the server thread."""
        self._server.stop()

    def __enter__(self) -> FakeBotApi:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- simulated users -----------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        *,
        first_name: str | None = None,
        username: str | None = None,
        language_code: str = DEFAULT_LANGUAGE,
    ) -> dict[str, Any]:
        """Register (or update) a simulated user; users are also made on first use."""
        return self._chats.add_user(user_id, first_name, username, language_code)

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
        return self._chats.post(user_id, chat_id, chat_type, text=text, reply_to=reply_to)

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
        stored = self._files.from_user(
            kind,
            content,
            file_name=file_name,
            mime_type=mime_type,
            declared_size=declared_size,
            **meta,
        )
        return self._chats.post(user_id, chat_id, chat_type, file=stored, caption=caption)

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
        return self._chats.press(user_id, chat_id, message_id, callback_data)

    def block_bot(self, user_id: int, blocked: bool = True) -> None:
        """The user blocks (or unblocks) the bot: sends to their chat get 403 Forbidden."""
        self._chats.block(user_id, blocked)

    # -- observing the bot ---------------------------------------------------------------

    def calls(self, method: str | None = None) -> list[ApiCall]:
        """Every request so far (or those of one method), in the order they completed."""
        return self._server.calls(method)

    def arrived(self, method: str) -> int:
        """How many requests of ``method`` the server has received, answered or not: one
        that has arrived but is not in :meth:`calls` is under way."""
        return self._server.arrived(self._server.method_name(method))

    def chat_messages(
        self, chat_id: int, *, include_user: bool = False, include_deleted: bool = False
    ) -> list[ChatMessage]:
        """Snapshots of the bot's messages in a chat (current state), oldest first."""
        return self._chats.messages(
            chat_id, include_user=include_user, include_deleted=include_deleted
        )

    def message(self, chat_id: int, message_id: int) -> ChatMessage | None:
        """A snapshot of one message (bot's or user's), deleted ones included."""
        return self._chats.message(chat_id, message_id)

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
        return self._chats.callback_answers()

    def answer_for(self, query_id: str) -> CallbackAnswer | None:
        """The answer to a press made with :meth:`press_button`, or None while unanswered."""
        return self._chats.answer_for(query_id)

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
        return self._chats.chat_actions(chat_id)

    def pending_updates(self) -> int:
        """Updates queued and not yet confirmed by the bot (getUpdates offset)."""
        return self._updates.pending()

    def is_polling(self) -> bool:
        """Whether a getUpdates long poll is waiting now (the bot is up and idle)."""
        return self._updates.is_polling()

    def file(self, file_id: str) -> StoredFile | None:
        """A file the server knows (sent by a user or uploaded by the bot)."""
        return self._files.file(file_id)

    def downloads(self) -> list[str]:
        """file_ids of every file download served, in order."""
        return self._files.downloads()

    def commands(self) -> list[dict[str, Any]]:
        """The bot's command list for the default scope and language (setMyCommands)."""
        return self._commands.default_menu()

    def commands_for(self, *, language_code: str) -> list[dict[str, Any]]:
        """The bot's command list for the default scope and ``language_code``."""
        return self._commands.menu(language_code)

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
        when: ParamsFilter | None = None,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail with a Telegram-shaped error.

        ``method`` is a Bot API method name, or ``"download"`` for file downloads.
        ``status=429`` carries ``retry_after`` (PTB raises ``RetryAfter``). With
        ``applied=True`` the call still takes effect and only its answer is lost, like a
        response that never arrived. ``when`` limits the fault to matching (decoded) params.
        """
        self._faults.fail_next(
            method,
            status=status,
            description=description,
            retry_after=retry_after,
            times=times,
            applied=applied,
            when=when,
        )

    def stall_next(
        self,
        method: str,
        seconds: float,
        *,
        applied: bool = True,
        times: int = 1,
        when: ParamsFilter | None = None,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (or ``"download"``) ``seconds`` late.

        A client whose read timeout is shorter sees a timeout. With ``applied=True`` (the
        default) the call still takes effect, as when Telegram acted on a request whose
        answer never reached the bot; with ``applied=False`` it is dropped (a 504 answers it).
        """
        self._faults.fail_next(
            method,
            status=504,
            description="Gateway Timeout",
            retry_after=None,
            times=times,
            applied=applied,
            when=when,
            stall_s=seconds,
        )

    def set_latency(self, method: str, seconds: float) -> None:
        """Delay every answer to ``method`` by ``seconds`` (0 removes the delay)."""
        self._faults.set_latency(self._server.method_name(method), seconds)
