"""Bad input gets a clear reply before any download, and the bot keeps serving."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from bot import texts
from common import callback_data as cd
from common import texts as shared_texts
from common.settings import Settings
from common.telegram import MB
from separation.naming import ELLIPSIS, MAX_SONG_NAME_CHARS, MAX_TAG_CHARS
from tests.bot.conftest import answer_to, picker_for, press, running_bot
from tests.support.audio import make_song
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.waiting import async_wait_until

USER = 401
PDF = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


async def refusal_for(api: FakeBotApi, sent: ChatMessage) -> str:
    reply = await answer_to(api, sent.chat_id, sent)
    assert not reply.has_keyboard, "a refused file must not get a picker"
    return reply.content


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (lambda api, song: api.send_document(USER, PDF, "score.pdf"), texts.NOT_AUDIO),
        (lambda api, song: api.send_document(USER, b"lyrics", "lyrics.txt"), texts.NOT_AUDIO),
        (lambda api, song: api.send_photo(USER, PNG), texts.NOT_AUDIO),
        (lambda api, song: api.send_video(USER, b"\x00" * 100, "clip.mp4"), texts.VIDEO_REFUSED),
        (lambda api, song: api.send_document(USER, b"", "empty.mp3"), texts.EMPTY_FILE),
        (lambda api, song: api.send_audio(USER, b"", "empty.mp3"), texts.EMPTY_FILE),
    ],
    ids=["pdf", "text", "photo", "video", "empty-document", "empty-audio"],
)
async def test_plainly_not_audio_or_empty_is_refused_at_once(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    send: Callable[[FakeBotApi, Path], ChatMessage],
    expected: str,
) -> None:
    async with running_bot(service_settings()) as bot:
        reply = await refusal_for(fake_bot_api, send(fake_bot_api, song))
        assert reply == expected
        if expected != texts.VIDEO_REFUSED:
            assert "mp3" in reply
        assert fake_bot_api.downloads() == []
        assert (await bot.services.db.stats()).requests == 0


async def test_file_over_the_size_limit_is_refused_before_download_naming_the_limit(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings(max_file_mb=5)) as bot:
        big = fake_bot_api.send_audio(USER, song, declared_size=5 * MB + 1)
        assert await refusal_for(fake_bot_api, big) == shared_texts.too_big(5)
        assert "5 MB" in shared_texts.too_big(5)
        # Exactly at the limit is fine.
        ok = fake_bot_api.send_document(USER, song, declared_size=5 * MB)
        await picker_for(fake_bot_api, USER, ok)
        assert fake_bot_api.downloads() == []
        assert (await bot.services.db.stats()).requests == 1


async def test_telegrams_20_mb_download_limit_caps_a_higher_setting(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings(max_file_mb=50)):
        sent = fake_bot_api.send_audio(USER, song, declared_size=30 * MB)
        assert await refusal_for(fake_bot_api, sent) == shared_texts.too_big(20)


async def test_local_bot_api_server_lifts_the_20_mb_cap(
    service_settings: Callable[..., Settings], song: Path
) -> None:
    with FakeBotApi(local_mode=True) as api:
        settings = service_settings(api=api, max_file_mb=50)
        async with running_bot(settings):
            await picker_for(api, USER, api.send_audio(USER, song, declared_size=30 * MB))
            sent = api.send_audio(USER, song, declared_size=51 * MB)
            assert await refusal_for(api, sent) == shared_texts.too_big(50)


async def test_song_over_the_duration_limit_is_refused_naming_the_limit(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings(max_duration_s=600)):
        sent = fake_bot_api.send_audio(USER, song, duration=601)
        reply = await refusal_for(fake_bot_api, sent)
        assert reply == shared_texts.too_long(600) and "10 min" in reply
        await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song, duration=600))


async def test_voice_message_is_offered_the_picker(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, tmp_path: Path
) -> None:
    voice = make_song(tmp_path / "voice.ogg", seconds=1.0, channels=1, samplerate=48000)
    async with running_bot(service_settings(max_duration_s=60)) as bot:
        picker = await picker_for(fake_bot_api, USER, fake_bot_api.send_voice(USER, voice, 1))
        assert "voice message" in picker.content
        request = await bot.services.db.get_request(1)
        assert request is not None and request.kind == "voice"
        long_voice = fake_bot_api.send_voice(USER, voice, duration=61)
        assert await refusal_for(fake_bot_api, long_voice) == shared_texts.too_long(60)


async def test_unsafe_file_names_are_sanitised(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings()) as bot:
        sent = fake_bot_api.send_document(
            USER, song, '../../etc/<evil>:"name"|\x07 song.mp3', mime_type="audio/mpeg"
        )
        picker = await picker_for(fake_bot_api, USER, sent)
        request = await bot.services.db.get_request(1)
        assert request is not None
        assert request.song_name == "evil name song"
        assert request.song_name in picker.content


# Markup, escaped markup, an RTL override, controls and 300 characters of two scripts and
# emoji, as one file name; and a performer tag of thousands of characters.
HOSTILE_HTML_NAME = (
    "../../<script>alert(1)<b>Tom &amp; Jerry's &lt;i&gt;mix&lt;i&gt; \u202eevil\u202c\x00"
    "\r\n" + "Ω🎸" * 150 + ".mp3"
)
HOSTILE_PERFORMER = "<i>\u2066" + "Ж" * 5000 + "\x1b[0m"


async def test_a_hostile_long_name_gets_a_picker_telegram_accepts(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings()) as bot:
        sent = fake_bot_api.send_audio(
            USER, song, HOSTILE_HTML_NAME, title="x", performer=HOSTILE_PERFORMER
        )
        picker = await picker_for(fake_bot_api, USER, sent)
        request = await bot.services.db.get_request(1)
        assert request is not None
        name = request.song_name
        assert name.startswith("script alert(1) b Tom &amp; Jerry's &lt;i&gt;mix&lt;i&gt; evil Ω🎸")
        assert name.endswith(ELLIPSIS) and len(name) <= MAX_SONG_NAME_CHARS
        assert not any(ch in name for ch in "/<>\u202e\u202c\x00\r\n")
        # The user sees the name as stored, entities and all: it reached Telegram escaped.
        assert picker.content.splitlines()[0] == f"🎵 {name}"
        assert request.artist == "<i>" + "Ж" * (MAX_TAG_CHARS - 4) + ELLIPSIS

        await press(fake_bot_api, USER, picker, cd.toggle(1, "vocals"))

        def redrawn_picker() -> ChatMessage | None:
            found = fake_bot_api.message(USER, picker.message_id)
            return found if found is not None and found.history else None

        redrawn = await async_wait_until(redrawn_picker, what="the picker redrawn")
        assert redrawn is not None
        assert redrawn.content.splitlines()[0] == f"🎵 {name}"
        refused = [
            call
            for method in ("sendMessage", "editMessageText")
            for call in fake_bot_api.calls(method)
            if not call.ok
        ]
        assert refused == []


async def test_bot_keeps_serving_after_bad_input(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings()):
        await refusal_for(fake_bot_api, fake_bot_api.send_document(USER, PDF, "a.pdf"))
        text = fake_bot_api.send_text(USER, "hello?")
        assert (await answer_to(fake_bot_api, USER, text)).content == texts.SEND_A_SONG
        await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))


async def test_in_a_group_non_audio_is_left_alone_but_limits_are_still_explained(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    group = -100777
    async with running_bot(service_settings(max_file_mb=5)):
        fake_bot_api.send_photo(USER, PNG, chat_id=group, chat_type="supergroup")
        fake_bot_api.send_document(USER, PDF, "minutes.pdf", chat_id=group, chat_type="supergroup")
        big = fake_bot_api.send_audio(
            USER, song, declared_size=6 * MB, chat_id=group, chat_type="supergroup"
        )
        assert await refusal_for(fake_bot_api, big) == shared_texts.too_big(5)
        # The refusal is the bot's only message: the photo and the PDF got none.
        assert len(fake_bot_api.chat_messages(group)) == 1
