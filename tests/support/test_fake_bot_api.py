"""The fake Bot API server, driven by the real telegram.Bot and a real PTB Application."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InputMediaAudio, Update
from telegram.error import (
    BadRequest,
    Conflict,
    EndPointNotFound,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
)
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)

from tests.support.fake_bot_api import MB, TEST_TOKEN, FakeBotApi
from tests.support.processes import child_env
from tests.support.waiting import async_wait_until, wait_until

USER = 42
OTHER_USER = 43
GROUP = -1001234


@asynccontextmanager
async def polling_app(api: FakeBotApi, *handlers: object) -> AsyncIterator[Application]:
    """A real PTB Application polling the fake server in this test's event loop."""
    app = (
        Application.builder()
        .token(api.token)
        .base_url(api.api_base_url)
        .base_file_url(api.file_base_url)
        .build()
    )
    for handler in handlers:
        app.add_handler(handler)  # type: ignore[arg-type]
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0)
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


def keyboard(*pairs: tuple[str, str]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(text, callback_data=data)] for text, data in pairs]
    )


async def test_get_me_and_bad_token(fake_bot_api: FakeBotApi) -> None:
    async with fake_bot_api.bot() as bot:
        assert bot.username == "demix_test_bot"
        assert bot.id == 123456
    with pytest.raises(InvalidToken):
        async with fake_bot_api.bot(token="123456:wrong-token"):
            pass


def test_bad_token_gets_telegram_shaped_401(fake_bot_api: FakeBotApi) -> None:
    response = httpx.post(f"{fake_bot_api.api_base_url}999:nope/getMe")
    assert response.status_code == 401
    assert response.json() == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    download = httpx.get(f"{fake_bot_api.file_base_url}999:nope/music/file_1.mp3")
    assert download.status_code == 401


async def test_application_replies_to_command_and_text(fake_bot_api: FakeBotApi) -> None:
    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("Send me an mp3")

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None and update.effective_message.text
        await update.effective_message.reply_text(
            f"echo: {update.effective_message.text}", do_quote=True
        )

    async with polling_app(
        fake_bot_api,
        CommandHandler("start", start),
        MessageHandler(filters.TEXT & ~filters.COMMAND, echo),
    ):
        command = fake_bot_api.send_text(USER, "/start")
        text = fake_bot_api.send_text(USER, "hello there")
        reply = await fake_bot_api.async_wait_for_message(USER, containing="echo")
        assert reply.text == "echo: hello there"
        assert reply.reply_to == text.message_id
        # The command reached the command handler, and only it: one answer each, in order.
        welcome, echoed = fake_bot_api.chat_messages(USER)
        assert (welcome.text, echoed.message_id) == ("Send me an mp3", reply.message_id)
        assert welcome.message_id > command.message_id
        assert welcome.reply_to is None  # PTB quotes only in groups
        await async_wait_until(lambda: fake_bot_api.pending_updates() == 0, what="offset")


async def test_callback_press_is_answered_and_message_edited(fake_bot_api: FakeBotApi) -> None:
    async def offer(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text(
            "Pick", reply_markup=keyboard(("vocals", "t:vocals"), ("Separate", "go"))
        )

    async def pressed(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.data is not None
        if query.data == "go":
            await query.answer("Pick a source first", show_alert=True)
            return
        await query.answer()
        await query.edit_message_text(
            "Pick", reply_markup=keyboard(("✅ vocals", "t:vocals"), ("Separate", "go"))
        )

    async with polling_app(
        fake_bot_api,
        MessageHandler(filters.TEXT, offer),
        CallbackQueryHandler(pressed),
    ):
        fake_bot_api.send_text(USER, "song please")
        picker = await fake_bot_api.async_wait_for_message(USER, with_keyboard=True)
        assert picker.buttons == [("vocals", "t:vocals"), ("Separate", "go")]

        alert = fake_bot_api.press_button(
            USER, picker, picker.button("Separate").callback_data or ""
        )
        answer = await fake_bot_api.async_wait_for_answer(alert)
        assert answer.show_alert and answer.text == "Pick a source first"

        toggle = fake_bot_api.press_button(USER, picker, "t:vocals")
        await fake_bot_api.async_wait_for_answer(toggle)
        await async_wait_until(
            lambda: bool((m := fake_bot_api.message(USER, picker.message_id)) and m.history),
            what="the picker edited",
        )
        edited = fake_bot_api.message(USER, picker.message_id)
        assert edited is not None
        assert edited.button("vocals").text == "✅ vocals"
        assert edited.history[0].reply_markup == picker.reply_markup
        assert [a.callback_data for a in fake_bot_api.callback_answers()] == ["go", "t:vocals"]


async def test_audio_round_trips_both_ways(fake_bot_api: FakeBotApi, tmp_path: Path) -> None:
    song_bytes = bytes(range(256)) * 400
    sent = fake_bot_api.send_audio(USER, song_bytes, file_name="My Song.mp3", title="My Song")
    assert sent.file is not None and sent.file.size == len(song_bytes)
    async with fake_bot_api.bot() as bot:
        new_file = await bot.get_file(sent.file.file_id)
        assert new_file.file_size == len(song_bytes)
        assert bytes(await new_file.download_as_bytearray()) == song_bytes
        saved = await new_file.download_to_drive(tmp_path / "in.mp3")
        assert saved.read_bytes() == song_bytes

        stem = song_bytes[::-1]
        message = await bot.send_audio(
            USER, stem, filename="My Song - vocals.mp3", title="vocals", performer="demix"
        )
        assert message.audio is not None and message.audio.file_name == "My Song - vocals.mp3"
        assert message.audio.file_size == len(stem)
    assert fake_bot_api.downloads() == [sent.file.file_id, sent.file.file_id]
    [delivered] = fake_bot_api.audio_messages(USER)
    assert delivered.file_name == "My Song - vocals.mp3"
    assert delivered.data == stem
    assert delivered.file is not None and delivered.file.title == "vocals"
    [upload] = fake_bot_api.calls("sendAudio")
    assert upload.params["chat_id"] == USER
    assert upload.files["audio"].filename == "My Song - vocals.mp3"
    assert upload.files["audio"].content_type == "audio/mpeg"


async def test_media_group_of_audio(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    tracks = {"vocals": b"V" * 1000, "no_vocals": b"N" * 2000}
    async with fake_bot_api.bot() as bot:
        messages = await bot.send_media_group(
            USER,
            [
                InputMediaAudio(data, filename=f"Song - {name}.mp3", title=name)
                for name, data in tracks.items()
            ],
        )
        assert len(messages) == 2
        album = {m.media_group_id for m in messages}
        assert len(album) == 1 and None not in album
        with pytest.raises(BadRequest, match="number of media"):
            await bot.send_media_group(USER, [InputMediaAudio(b"x", filename="one.mp3")])
    delivered = fake_bot_api.audio_messages(USER)
    assert [(m.file_name, m.data) for m in delivered] == [
        (f"Song - {name}.mp3", data) for name, data in tracks.items()
    ]
    call, refused = fake_bot_api.calls("sendMediaGroup")
    assert refused.status == 400
    assert all(item["media"].startswith("attach://") for item in call.params["media"])


async def test_get_file_refuses_files_over_20_mb(fake_bot_api: FakeBotApi) -> None:
    big = fake_bot_api.send_audio(USER, b"ID3tiny", declared_size=21 * MB)
    small = fake_bot_api.send_document(USER, b"tiny", file_name="x.wav", declared_size=20 * MB)
    assert big.file is not None and small.file is not None
    async with fake_bot_api.bot() as bot:
        with pytest.raises(BadRequest, match="File is too big"):
            await bot.get_file(big.file.file_id)
        assert (await bot.get_file(small.file.file_id)).file_size == 20 * MB
        with pytest.raises(BadRequest, match="Invalid file_id"):
            await bot.get_file("no-such-file")


async def test_local_mode_lifts_limit_and_reads_paths(tmp_path: Path) -> None:
    stem_path = tmp_path / "Song - drums.mp3"
    stem_path.write_bytes(b"drums" * 100)
    with FakeBotApi(local_mode=True) as api:
        big = api.send_audio(USER, b"ID3big", declared_size=300 * MB)
        assert big.file is not None
        async with api.bot() as bot:
            got = await bot.get_file(big.file.file_id)
            assert got.file_path is not None and Path(got.file_path).is_absolute()
            assert (await got.download_to_drive(tmp_path / "in.mp3")).read_bytes() == b"ID3big"
            # PTB in local mode sends file:// URIs instead of uploading.
            await bot.send_audio(USER, stem_path)
        [call] = api.calls("sendAudio")
        assert call.params["audio"].startswith("file://") and not call.files
        [delivered] = api.audio_messages(USER)
        assert delivered.file_name == "Song - drums.mp3"
        assert delivered.data == stem_path.read_bytes()


async def test_edit_not_modified_and_not_found(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    markup = keyboard(("vocals", "t:vocals"))
    async with fake_bot_api.bot() as bot:
        status = await bot.send_message(USER, "Queued: position 1", reply_markup=markup)
        with pytest.raises(BadRequest, match="Message is not modified"):
            await bot.edit_message_text(
                "Queued: position 1", USER, status.message_id, reply_markup=markup
            )
        await bot.edit_message_text("Running: 50%", USER, status.message_id, reply_markup=markup)
        # An edit without reply_markup removes the keyboard, as on Telegram.
        await bot.edit_message_text("Running: 50%", USER, status.message_id)
        with pytest.raises(BadRequest, match="Message is not modified"):
            await bot.edit_message_reply_markup(USER, status.message_id, reply_markup=None)
        with pytest.raises(BadRequest, match="Message to edit not found"):
            await bot.edit_message_text("x", USER, 9999)
        await bot.delete_message(USER, status.message_id)
        with pytest.raises(BadRequest, match="Message to delete not found"):
            await bot.delete_message(USER, status.message_id)
    current = fake_bot_api.message(USER, status.message_id)
    assert current is not None and current.deleted and not current.has_keyboard
    assert current.texts == ["Queued: position 1", "Running: 50%", "Running: 50%"]
    assert fake_bot_api.chat_messages(USER) == []


async def test_fail_next_429_carries_retry_after(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    fake_bot_api.fail_next("sendMessage", status=429, retry_after=7)
    fake_bot_api.fail_next("sendChatAction", status=500, times=2)
    async with fake_bot_api.bot() as bot:
        with pytest.raises(RetryAfter, match="Retry in 7 seconds"):
            await bot.send_message(USER, "first try")
        await bot.send_message(USER, "second try")
        for _ in range(2):
            with pytest.raises(NetworkError, match="Internal Server Error"):
                await bot.send_chat_action(USER, "upload_audio")
        await bot.send_chat_action(USER, "upload_audio")
    assert [m.text for m in fake_bot_api.chat_messages(USER)] == ["second try"]
    assert [c.status for c in fake_bot_api.calls("sendMessage")] == [429, 200]
    assert fake_bot_api.chat_actions(USER) == ["upload_audio"]


async def test_applied_fault_takes_effect_but_answer_is_lost(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    fake_bot_api.fail_next("sendAudio", status=502, applied=True)
    async with fake_bot_api.bot() as bot:
        with pytest.raises(NetworkError):
            await bot.send_audio(USER, b"abc", filename="a.mp3")
    assert len(fake_bot_api.audio_messages(USER)) == 1


async def test_unknown_method_is_404_and_recorded(fake_bot_api: FakeBotApi) -> None:
    async with fake_bot_api.bot() as bot:
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("sendHologram", api_kwargs={"chat_id": USER})
    [call] = fake_bot_api.calls("sendHologram")
    assert call.status == 404 and call.params == {"chat_id": USER}


async def test_get_updates_long_poll_and_offset(fake_bot_api: FakeBotApi) -> None:
    async with fake_bot_api.bot() as bot:
        poll = asyncio.create_task(bot.get_updates(timeout=20))
        await async_wait_until(fake_bot_api.is_polling, what="long poll")
        started = time.monotonic()
        # Queue from another thread, as a sync helper or a subprocess driver would.
        threading.Thread(target=fake_bot_api.send_text, args=(USER, "wake up")).start()
        updates = await poll
        assert time.monotonic() - started < 10
        assert [u.message.text for u in updates if u.message] == ["wake up"]
        assert fake_bot_api.pending_updates() == 1
        assert await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0) == ()
        assert fake_bot_api.pending_updates() == 0


async def test_second_get_updates_terminates_the_first(fake_bot_api: FakeBotApi) -> None:
    async with fake_bot_api.bot() as first, fake_bot_api.bot() as second:
        waiting = asyncio.create_task(first.get_updates(timeout=20))
        await async_wait_until(fake_bot_api.is_polling, what="first poll")
        assert await second.get_updates(timeout=0) == ()
        with pytest.raises(Conflict, match="terminated by other getUpdates"):
            await waiting


async def test_group_chat_presses_by_another_user(fake_bot_api: FakeBotApi) -> None:
    owner_message = fake_bot_api.send_text(USER, "/start@demix_test_bot", chat_id=GROUP)
    fake_bot_api.send_text(OTHER_USER, "me too", chat_id=GROUP)
    async with fake_bot_api.bot() as bot:
        updates = await bot.get_updates(timeout=0)
        assert [u.effective_user.id for u in updates if u.effective_user] == [USER, OTHER_USER]
        assert updates[0].effective_chat is not None
        assert updates[0].effective_chat.type == "supergroup"
        assert updates[0].message is not None
        assert updates[0].message.entities[0].type == "bot_command"
        picker = await bot.send_message(
            GROUP,
            "Pick",
            reply_markup=keyboard(("vocals", "t:1")),
            reply_to_message_id=owner_message.message_id,
        )
        query_id = fake_bot_api.press_button(OTHER_USER, (GROUP, picker.message_id), "forged!")
        updates = await bot.get_updates(offset=updates[-1].update_id + 1, timeout=0)
        query = updates[-1].callback_query
        assert query is not None and query.from_user.id == OTHER_USER and query.data == "forged!"
        assert query.message is not None and query.message.message_id == picker.message_id
        await bot.answer_callback_query(query.id, "Not your song", show_alert=True)
        with pytest.raises(BadRequest, match="Query is too old"):
            await bot.answer_callback_query(query.id, "twice")
    answer = fake_bot_api.answer_for(query_id)
    assert answer is not None and answer.user_id == OTHER_USER and answer.show_alert


async def test_telegram_validation_errors(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    async with fake_bot_api.bot() as bot:
        with pytest.raises(BadRequest, match="Chat not found"):
            await bot.send_message(999, "nobody here")
        with pytest.raises(BadRequest, match="Message text is empty"):
            await bot.send_message(USER, " ")
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(USER, "x" * 4097)
        with pytest.raises(BadRequest, match="Button_data_invalid"):
            await bot.send_message(USER, "k", reply_markup=keyboard(("b", "x" * 65)))
        with pytest.raises(BadRequest, match="Can't parse entities"):
            await bot.send_message(USER, "Song <Live>.mp3", parse_mode="HTML")
        html = await bot.send_message(USER, "<b>Done</b> in 3 s &amp; ok", parse_mode="HTML")
        assert html.text == "Done in 3 s & ok"
        with pytest.raises(BadRequest, match="Wrong file identifier"):
            await bot.send_audio(USER, "not-a-file-id")


@pytest.mark.parametrize(
    "text",
    [
        "a < b",  # every "<" opens a tag for Telegram, unlike a browser
        "I <3 it",
        "<!-- note -->hi",
        "x <b",
        "<b>x</i>",
        "</b>",
        "<br>",
    ],
)
async def test_html_telegram_refuses(fake_bot_api: FakeBotApi, text: str) -> None:
    fake_bot_api.send_text(USER, "hi")
    async with fake_bot_api.bot() as bot:
        with pytest.raises(BadRequest, match="Can't parse entities"):
            await bot.send_message(USER, text, parse_mode="HTML")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("&copy; &foo; & &nbsp;", "&copy; &foo; & &nbsp;"),  # entities Telegram doesn't know
        ("&amp &lt;b&gt; &quot;q&quot;", '& <b> "q"'),
        ("&#60;&#x1F3B8;&#0;", "<🎸&#0;"),
        ("a > b", "a > b"),
        ("<b>x</b ><i>y</>", "xy"),
    ],
)
async def test_html_is_shown_as_telegram_shows_it(
    fake_bot_api: FakeBotApi, text: str, shown: str
) -> None:
    fake_bot_api.send_text(USER, "hi")
    async with fake_bot_api.bot() as bot:
        assert (await bot.send_message(USER, text, parse_mode="HTML")).text == shown


async def test_lengths_are_counted_in_utf16_units(fake_bot_api: FakeBotApi, tmp_path: Path) -> None:
    fake_bot_api.send_text(USER, "hi")
    song = tmp_path / "a.mp3"
    song.write_bytes(b"ID3" + b"\x00" * 64)
    async with fake_bot_api.bot() as bot:
        await bot.send_message(USER, "🎸" * 2048)  # 4096 units
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(USER, "🎸" * 2048 + "x")
        await bot.send_audio(USER, song, caption="🎸" * 512)
        with pytest.raises(BadRequest, match="Message caption is too long"):
            await bot.send_audio(USER, song, caption="<b>" + "🎸" * 512 + "x</b>")


async def test_uploaded_file_names_keep_semicolons(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    name = "Tom &amp; Jerry &lt;live&gt;; ok.mp3"
    async with fake_bot_api.bot() as bot:
        sent = await bot.send_audio(USER, b"ID3" + b"\x00" * 64, filename=name)
    assert sent.audio is not None and sent.audio.file_name == name


def test_form_json_and_multipart_bodies_from_any_thread(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    base = f"{fake_bot_api.api_base_url}{TEST_TOKEN}"
    markup = {"inline_keyboard": [[{"text": "A", "callback_data": "a"}]]}
    form = httpx.post(
        f"{base}/sendMessage",
        data={"chat_id": str(USER), "text": "form", "reply_markup": json.dumps(markup)},
    )
    as_json = httpx.post(
        f"{base}/SENDMESSAGE", json={"chat_id": USER, "text": "json", "reply_markup": markup}
    )
    upload = httpx.post(
        f"{base}/sendDocument",
        data={"chat_id": str(USER), "caption": "doc"},
        files={"document": ("notes.txt", b"hello", "text/plain")},
    )
    assert form.json()["result"]["reply_markup"] == markup
    assert as_json.json()["ok"] and upload.json()["result"]["document"]["file_name"] == "notes.txt"
    messages = fake_bot_api.chat_messages(USER)
    assert [m.content for m in messages] == ["form", "json", "doc"]
    assert messages[0].reply_markup == messages[1].reply_markup == markup
    assert messages[2].data == b"hello"
    assert [c.method for c in fake_bot_api.calls()] == ["sendMessage"] * 2 + ["sendDocument"]
    file_id = upload.json()["result"]["document"]["file_id"]
    path = httpx.get(f"{base}/getFile", params={"file_id": file_id}).json()["result"]["file_path"]
    assert httpx.get(f"{fake_bot_api.file_base_url}{TEST_TOKEN}/{path}").content == b"hello"


def test_latency_delays_answers(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.set_latency("getMe", 0.3)
    started = time.monotonic()
    response = httpx.get(f"{fake_bot_api.api_base_url}{TEST_TOKEN}/getMe")
    assert response.json()["result"]["username"] == "demix_test_bot"
    assert time.monotonic() - started >= 0.3


def test_press_on_missing_message_is_a_test_error(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    with pytest.raises(ValueError, match="no message"):
        fake_bot_api.press_button(USER, (USER, 77), "x")
    wait_until(lambda: fake_bot_api.pending_updates() == 1)


async def test_uploads_over_50_mb_are_refused(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    async with fake_bot_api.bot() as bot:
        with pytest.raises(NetworkError, match="Request Entity Too Large"):
            await bot.send_document(USER, b"\0" * (50 * MB + 1), filename="huge.wav")
    assert fake_bot_api.chat_messages(USER) == []
    assert [c.status for c in fake_bot_api.calls("sendDocument")] == [413]


async def test_drop_pending_updates_and_allowed_updates(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "sent while the bot was down")
    async with fake_bot_api.bot() as bot:
        await bot.delete_webhook(drop_pending_updates=True)
        assert fake_bot_api.pending_updates() == 0
        fake_bot_api.send_text(USER, "hello")
        picker = await bot.send_message(USER, "Pick", reply_markup=keyboard(("a", "a")))
        fake_bot_api.press_button(USER, (USER, picker.message_id), "a")
        only_presses = await bot.get_updates(timeout=0, allowed_updates=["callback_query"])
        assert [u.callback_query.data for u in only_presses if u.callback_query] == ["a"]
        assert len(only_presses) == 1
        later = fake_bot_api.send_text(USER, "later")
        # An empty list means every type again; the offset confirms what came before.
        everything = await bot.get_updates(
            offset=only_presses[-1].update_id + 1, timeout=0, allowed_updates=[]
        )
        assert [u.message.message_id for u in everything if u.message] == [later.message_id]


async def test_blocked_user_gets_forbidden(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    fake_bot_api.block_bot(USER)
    async with fake_bot_api.bot() as bot:
        with pytest.raises(Forbidden, match="bot was blocked by the user"):
            await bot.send_message(USER, "your stems")
        fake_bot_api.block_bot(USER, blocked=False)
        await bot.send_message(USER, "your stems")


async def test_restart_keeps_port_and_state(fake_bot_api: FakeBotApi) -> None:
    fake_bot_api.send_text(USER, "hi")
    url = fake_bot_api.api_base_url
    async with fake_bot_api.bot() as bot:
        await bot.send_message(USER, "before")
        fake_bot_api.stop()
        with pytest.raises(NetworkError):
            await bot.send_message(USER, "while down")
        fake_bot_api.start()
        assert fake_bot_api.api_base_url == url
        await bot.send_message(USER, "after")
    assert [m.text for m in fake_bot_api.chat_messages(USER)] == ["before", "after"]


CHILD = """
import asyncio, os
from telegram import Bot

async def main() -> None:
    bot = Bot(
        os.environ["TELEGRAM_BOT_TOKEN"],
        base_url=os.environ["TELEGRAM_API_BASE_URL"],
        base_file_url=os.environ["TELEGRAM_FILE_BASE_URL"],
    )
    async with bot:
        [update] = await bot.get_updates(timeout=10)
        await bot.send_message(update.effective_chat.id, "child saw: " + update.message.text)
        await bot.get_updates(offset=update.update_id + 1, timeout=0)

asyncio.run(main())
"""


def test_a_child_process_talks_to_the_server(fake_bot_api: FakeBotApi) -> None:
    env = child_env(fake_bot_api.environment())
    child = subprocess.Popen([sys.executable, "-c", CHILD], env=env)
    try:
        wait_until(fake_bot_api.is_polling, timeout=30, what="the child to poll")
        fake_bot_api.send_text(USER, "ping")
        assert child.wait(timeout=30) == 0
    finally:
        if child.poll() is None:
            child.kill()
    reply = fake_bot_api.wait_for_message(USER, containing="child saw")
    assert reply.text == "child saw: ping"
    assert fake_bot_api.pending_updates() == 0


async def test_user_audio_reports_duration_and_tags_like_a_client(
    fake_bot_api: FakeBotApi, song: Path
) -> None:
    tagged = fake_bot_api.send_audio(USER, song)
    renamed = fake_bot_api.send_audio(USER, song, title="Mine", duration=100)
    not_audio = fake_bot_api.send_audio(USER, b"not audio", file_name="x.mp3")
    async with fake_bot_api.bot() as bot:
        updates = await bot.get_updates(timeout=0)
    audios = [u.message.audio for u in updates if u.message and u.message.audio]
    assert [(a.file_name, a.title, a.performer) for a in audios] == [
        ("Test Song.mp3", "Test Song", "Test Artist"),
        ("Test Song.mp3", "Mine", "Test Artist"),
        ("x.mp3", None, None),
    ]
    assert [m.file.duration for m in (tagged, renamed, not_audio) if m.file] == [3, 100, 0]


async def test_web_app_buttons_only_in_private_chats_and_over_https(
    fake_bot_api: FakeBotApi,
) -> None:
    from telegram import InlineKeyboardButton, InlineKeyboardMarkup, WebAppInfo
    from telegram.error import BadRequest

    def markup(url: str) -> InlineKeyboardMarkup:
        return InlineKeyboardMarkup([[InlineKeyboardButton("🎚 Mix", web_app=WebAppInfo(url))]])

    fake_bot_api.send_text(7, "hi")
    fake_bot_api.send_text(7, "hi", chat_id=-1007, chat_type="supergroup")
    async with fake_bot_api.bot() as bot:
        sent = await bot.send_message(7, "mix", reply_markup=markup("https://mix.example.org/m"))
        assert sent.reply_markup is not None
        with pytest.raises(BadRequest, match=r"(?i)button_type_invalid"):
            await bot.send_message(-1007, "mix", reply_markup=markup("https://mix.example.org/m"))
        with pytest.raises(BadRequest, match=r"(?i)button_url_invalid"):
            await bot.send_message(7, "mix", reply_markup=markup("http://mix.example.org/m"))
