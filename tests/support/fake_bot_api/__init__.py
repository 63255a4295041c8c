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
found", ...), and so are its limits (20 MB getFile, 50 MB upload, texts of 4096 and
captions of 1024 UTF-16 units, 64-byte callback data). ``parse_mode="HTML"`` is parsed by
Telegram's rules (a bare ``<``, an unsupported or unbalanced tag is refused; an unknown
``&entity;`` is shown as typed; :attr:`ChatMessage.text` is the plain text a user sees);
other parse modes are stored as sent. Audio, voice and video sent by a simulated user report the
duration (and an audio's title/performer tags) that ffprobe reads, as Telegram clients do;
files the bot uploads keep what the bot sent. Privacy mode is not modelled: the bot gets
every group message.

The modules, one concern each: ``server`` (HTTP, request parsing, dispatch, the call log),
``updates`` (the update queue and getUpdates long polling), ``chats`` (users, chats, messages,
button presses and the Bot API methods on them), ``files`` (uploads, getFile, downloads and
their limits), ``commands`` (the bot's command menu), ``faults`` (injected failures and
latency), ``markup`` (HTML texts and inline keyboards as Telegram checks them), ``telegram``
(Telegram's limits and error wording), ``messages`` (the message snapshots tests read),
``calls`` (a request as handlers get it and as tests read it back), and ``api``
(:class:`FakeBotApi`, which wires them together).
"""

from tests.support.fake_bot_api.api import TEST_TOKEN, FakeBotApi
from tests.support.fake_bot_api.calls import ApiCall, UploadedPart
from tests.support.fake_bot_api.files import StoredFile
from tests.support.fake_bot_api.messages import Button, CallbackAnswer, ChatMessage, Edit
from tests.support.fake_bot_api.telegram import (
    CALLBACK_ANSWER_LIMIT,
    CALLBACK_DATA_LIMIT,
    CAPTION_LIMIT,
    DOWNLOAD_LIMIT,
    LOCAL_UPLOAD_LIMIT,
    MB,
    NOT_MODIFIED,
    QUERY_INVALID,
    TEXT_LIMIT,
    UPLOAD_LIMIT,
    WRONG_FILE,
    ApiError,
)

__all__ = [
    "CALLBACK_ANSWER_LIMIT",
    "CALLBACK_DATA_LIMIT",
    "CAPTION_LIMIT",
    "DOWNLOAD_LIMIT",
    "LOCAL_UPLOAD_LIMIT",
    "MB",
    "NOT_MODIFIED",
    "QUERY_INVALID",
    "TEST_TOKEN",
    "TEXT_LIMIT",
    "UPLOAD_LIMIT",
    "WRONG_FILE",
    "ApiCall",
    "ApiError",
    "Button",
    "CallbackAnswer",
    "ChatMessage",
    "Edit",
    "FakeBotApi",
    "StoredFile",
    "UploadedPart",
]
