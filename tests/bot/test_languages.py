"""English and Russian through the fake Bot API: the language follows the user's Telegram
``language_code`` unless /settings overrides it, in the bot's texts and in the worker's
statuses, done text and rating prompt (the real bot and worker, Redis and SQLite)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from common import callback_data as cd
from common.i18n import translate
from common.jobs import separation_job_id
from common.rating import RATING_PROMPT
from common.settings import Settings
from separation import EnsembleSeparator
from tests.bot.conftest import answer_to, current, picker_for, press, running_bot
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.waiting import async_wait_until
from tests.support.workers import running_worker

RU_USER, EN_USER = 501, 502
JOB_TIMEOUT_S = 120.0
# DESIGN.md: in every language, the six sources in this order, then All, then Separate.
PINNED = ["drums", "bass", "vocals", "guitar", "piano", "other", "All", "Separate"]


def assert_pinned_picker(picker: ChatMessage) -> None:
    texts = [button.text for button in picker.buttons]
    assert len(texts) == len(PINNED), texts
    for text, word in zip(texts, PINNED, strict=True):
        assert word in text, (text, word)


async def say(api: FakeBotApi, user_id: int, text: str) -> ChatMessage:
    return await answer_to(api, user_id, api.send_text(user_id, text))


async def test_a_russian_user_gets_russian_from_start_to_rating(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
) -> None:
    fake_bot_api.add_user(RU_USER, language_code="ru")
    settings = service_settings()
    async with running_bot(settings) as bot, running_worker(settings, separator):
        start = await say(fake_bot_api, RU_USER, "/start")
        assert "Пришлите мне песню" in start.content
        assert "FLAC" in start.content and "/settings" in start.content

        sent = fake_bot_api.send_audio(RU_USER, song, title="Песня")
        picker = await picker_for(fake_bot_api, RU_USER, sent)
        assert "Выберите нужные дорожки" in picker.content
        assert "Формат: MP3 320 кбит/с" in picker.content
        assert_pinned_picker(picker)
        assert picker.buttons[-1].text == "▶️ Разделить (Separate)"

        # An alert in Russian: Separate with nothing picked.
        separate = picker.button("Separate").callback_data or ""
        answer = await press(fake_bot_api, RU_USER, picker, separate)
        assert answer.show_alert and "Сначала выберите" in answer.text
        await press(fake_bot_api, RU_USER, picker, picker.button("vocals").callback_data or "")
        redrawn = await current(fake_bot_api, picker)
        assert "Вы получите: vocals, no_vocals." in redrawn.content
        assert_pinned_picker(redrawn)
        answer = await press(fake_bot_api, RU_USER, picker, separate)
        assert not answer.show_alert, answer.text

        status = await async_wait_until(
            lambda: fake_bot_api.last_message(RU_USER, containing="Готово"),
            timeout=JOB_TIMEOUT_S,
            what="the done status",
        )
        history = [text or "" for text in status.texts]
        assert any("В очереди" in text for text in history), history
        assert any("Скачиваю" in text for text in history), history
        assert status.content.startswith("✅ Готово за ")
        assert "отправлены 2 дорожки" in status.content
        assert not any("Done" in text or "Queued" in text for text in history), history

        rating = await async_wait_until(
            lambda: fake_bot_api.last_message(RU_USER, containing=translate(RATING_PROMPT, "ru")),
            timeout=JOB_TIMEOUT_S,
            what="the rating prompt",
        )
        assert rating.content == "Как получилось разделение? Оцените:"
        answer = await press(fake_bot_api, RU_USER, rating, rating.button("👍").callback_data or "")
        assert answer.text == "Спасибо! Рад, что получилось 👍"

        job = await bot.services.db.get_job(separation_job_id(1, ["vocals"]))
        assert job is not None and job.language == "ru"
        # The command menu in Russian for Russian users.
        ru_menu = fake_bot_api.commands_for(language_code="ru")
        assert [c["command"] for c in ru_menu] == ["start", "help", "settings"]
        assert "язык" in ru_menu[2]["description"]


async def test_an_english_user_gets_english(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    separator: EnsembleSeparator,
) -> None:
    fake_bot_api.add_user(EN_USER, language_code="en-GB")
    settings = service_settings()
    async with running_bot(settings), running_worker(settings, separator):
        start = await say(fake_bot_api, EN_USER, "/start")
        assert "Send me a song" in start.content and "/settings" in start.content
        sent = fake_bot_api.send_audio(EN_USER, song)
        picker = await picker_for(fake_bot_api, EN_USER, sent)
        assert "Pick the stems you want" in picker.content
        assert [b.text for b in picker.buttons] == [*PINNED[:6], "All", "▶️ Separate"]
        await press(fake_bot_api, EN_USER, picker, picker.button("drums").callback_data or "")
        answer = await press(
            fake_bot_api, EN_USER, picker, picker.button("Separate").callback_data or ""
        )
        assert not answer.show_alert, answer.text
        status = await async_wait_until(
            lambda: fake_bot_api.last_message(EN_USER, containing="Done"),
            timeout=JOB_TIMEOUT_S,
            what="the done status",
        )
        assert status.content.startswith("✅ Done in ")
        assert await async_wait_until(
            lambda: fake_bot_api.last_message(EN_USER, containing=RATING_PROMPT),
            timeout=JOB_TIMEOUT_S,
        )


async def test_settings_override_the_telegram_language(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    fake_bot_api.add_user(RU_USER, language_code="ru")
    fake_bot_api.add_user(EN_USER, language_code="en")
    async with running_bot(service_settings()) as bot:
        shown = await say(fake_bot_api, RU_USER, "/settings")
        assert "Настройки" in shown.content and "Язык: Русский" in shown.content
        assert [b.text for b in shown.buttons] == [
            "✅ MP3 320 кбит/с",
            "FLAC 24 бит",
            "English",
            "✅ Русский",
        ]
        assert shown.buttons[2].callback_data == cd.setting(RU_USER, "language", "en")
        assert (await bot.services.db.user_settings(RU_USER)).language is None

        # The Russian-speaking Telegram user chooses English: everything is English now.
        answer = await press(fake_bot_api, RU_USER, shown, shown.button("English").callback_data)
        assert not answer.show_alert and answer.text == "I will speak English with you."
        redrawn = await current(fake_bot_api, shown)
        assert "Language: English" in redrawn.content
        assert [b.text for b in redrawn.buttons][2:] == ["✅ English", "Русский"]
        assert (await bot.services.db.user_settings(RU_USER)).language == "en"
        assert "Send me a song" in (await say(fake_bot_api, RU_USER, "/help")).content
        picker = await picker_for(fake_bot_api, RU_USER, fake_bot_api.send_audio(RU_USER, song))
        assert "Pick the stems you want" in picker.content

        # The English user chooses Russian; the format row stays, in Russian.
        shown = await say(fake_bot_api, EN_USER, "/settings")
        assert [b.text for b in shown.buttons] == [
            "✅ MP3 320 kbps",
            "FLAC 24-bit",
            "✅ English",
            "Русский",
        ]
        answer = await press(fake_bot_api, EN_USER, shown, shown.button("Русский").callback_data)
        assert answer.text == "Буду говорить с вами по-русски."
        redrawn = await current(fake_bot_api, shown)
        assert [b.text for b in redrawn.buttons] == [
            "✅ MP3 320 кбит/с",
            "FLAC 24 бит",
            "English",
            "✅ Русский",
        ]
        answer = await press(fake_bot_api, EN_USER, redrawn, redrawn.button("FLAC").callback_data)
        assert answer.text == "Дорожки будут приходить в формате FLAC 24 бит."
        settings = await bot.services.db.user_settings(EN_USER)
        assert (settings.language, settings.output_format) == ("ru", "flac")
        help_text = (await say(fake_bot_api, EN_USER, "/help")).content
        assert "Пришлите мне песню" in help_text and "/settings" in help_text
        # A forged press on another user's settings: an alert in the presser's language.
        answer = await press(fake_bot_api, EN_USER, redrawn, cd.setting(RU_USER, "language", "ru"))
        assert answer.show_alert and answer.text.startswith("Это чужие настройки")
