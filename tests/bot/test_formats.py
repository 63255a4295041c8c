"""Output formats: /settings (MP3 320 kbps or FLAC 24-bit), stored per user, and what the
worker then delivers; the real bot and worker, the fake Bot API, Redis and SQLite."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from bot import texts
from common import callback_data as cd
from common import telegram
from common.jobs import separation_job_id
from common.settings import Settings
from separation import EnsembleSeparator
from storage import JobRecord
from tests.bot.conftest import (
    RunningBot,
    answer_to,
    current,
    picker_for,
    press,
    running_bot,
)
from tests.support.audio import decode, make_song
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.separators import make_separator
from tests.support.waiting import async_wait_until
from tests.support.workers import running_worker

USER, OTHER = 401, 402
JOB_TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def cached_separator(
    model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> EnsembleSeparator:
    """A separator with a source cache, as a worker process has one."""
    return make_separator(model_repo, cache_dir=tmp_path_factory.mktemp("cache"))


async def open_settings(api: FakeBotApi, user_id: int) -> ChatMessage:
    return await answer_to(api, user_id, api.send_text(user_id, "/settings"))


def format_buttons(message: ChatMessage) -> list[str]:
    """The format row of /settings (the language row follows it)."""
    return [button.text for button in message.buttons][:2]


async def choose(api: FakeBotApi, user_id: int, settings_message: ChatMessage, label: str) -> None:
    answer = await press(
        api, user_id, settings_message, settings_message.button(label).callback_data or ""
    )
    assert not answer.show_alert, answer.text


def snr_db(mix: np.ndarray, tracks: list[np.ndarray]) -> float:
    error = np.sum(tracks, axis=0) - mix
    return float(10 * np.log10(np.sum(mix**2) / max(float(np.sum(error**2)), 1e-30)))


def probe_stream(path: Path) -> dict[str, str]:
    out = subprocess.run(
        [
            *("ffprobe", "-v", "error", "-of", "default=noprint_wrappers=1"),
            *("-show_entries", "stream=codec_name,bits_per_raw_sample", str(path)),
        ],
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


async def tracks_after(api: FakeBotApi, chat_id: int, before: int, count: int) -> list[ChatMessage]:
    """The ``count`` audio messages that follow the first ``before`` ones in the chat."""
    found = await async_wait_until(
        lambda: (
            (audios := api.audio_messages(chat_id)) and len(audios) >= before + count and audios
        ),
        timeout=JOB_TIMEOUT_S,
        what=f"{count} more tracks",
    )
    return found[before : before + count]


async def done_status(api: FakeBotApi, chat_id: int, count: int) -> list[str]:
    """The texts of the first ``count`` status messages that say done."""
    return await async_wait_until(
        lambda: (
            (
                done := [
                    m.content for m in api.chat_messages(chat_id) if m.content.startswith("✅ Done")
                ]
            )
            and len(done) >= count
            and done
        ),
        timeout=JOB_TIMEOUT_S,
        what=f"{count} done statuses",
    )


async def recorded_done(bot: RunningBot, job_id: str) -> JobRecord:
    """The job once the bot has recorded it done."""

    async def done() -> JobRecord | None:
        job = await bot.services.db.get_job(job_id)
        return job if job is not None and job.status == "done" else None

    return await async_wait_until(done, timeout=JOB_TIMEOUT_S, what=f"{job_id} recorded done")


async def test_settings_show_mp3_by_default_and_a_press_stores_flac(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi, song: Path
) -> None:
    async with running_bot(service_settings()) as bot:
        shown = await open_settings(fake_bot_api, USER)
        assert format_buttons(shown) == ["✅ MP3 320 kbps", "FLAC 24-bit"]
        assert "MP3 320 kbps" in shown.content and "50 MB" in shown.content
        assert shown.buttons[1].callback_data == cd.setting(USER, "format", "flac")

        answer = await press(fake_bot_api, USER, shown, shown.button("FLAC").callback_data or "")
        assert not answer.show_alert and answer.text == texts.setting_saved("flac")
        redrawn = await current(fake_bot_api, shown)
        assert format_buttons(redrawn) == ["MP3 320 kbps", "✅ FLAC 24-bit"]
        assert "Output format: FLAC 24-bit" in redrawn.content
        assert (await bot.services.db.user_settings(USER)).output_format == "flac"
        assert (await bot.services.db.user_settings(OTHER)).output_format == "mp3"

        # A fresh /settings shows the stored choice; the picker says what is coming.
        assert format_buttons(await open_settings(fake_bot_api, USER))[1] == "✅ FLAC 24-bit"
        picker = await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))
        assert "Format: FLAC 24-bit · /settings to change" in picker.content
        other = await picker_for(fake_bot_api, OTHER, fake_bot_api.send_audio(OTHER, song))
        assert "Format: MP3 320 kbps" in other.content

        # /help names the formats and /settings; the command menu lists it.
        help_answer = await answer_to(fake_bot_api, USER, fake_bot_api.send_text(USER, "/help"))
        assert "FLAC" in help_answer.content and "/settings" in help_answer.content
        assert [c["command"] for c in fake_bot_api.commands()] == ["start", "help", "settings"]


async def test_forged_and_foreign_settings_presses_alert_and_change_nothing(
    service_settings: Callable[..., Settings], fake_bot_api: FakeBotApi
) -> None:
    async with running_bot(service_settings()) as bot:
        shown = await open_settings(fake_bot_api, USER)
        flac = shown.button("FLAC").callback_data or ""
        # Another user pressing this user's settings (a /settings message in a group).
        answer = await press(fake_bot_api, OTHER, shown, flac)
        assert answer.show_alert and answer.text == texts.NOT_YOUR_SETTINGS
        # Forged: another user's id, an unknown format, an unknown setting, garbage.
        for data in (
            cd.setting(OTHER, "format", "flac"),
            f"o:{USER}:format.wav",
            f"o:{USER}:volume.11",
            f"o:{USER}:format.flac:x",
        ):
            answer = await press(fake_bot_api, USER, shown, data)
            assert answer.show_alert, data
        for user in (USER, OTHER):
            assert (await bot.services.db.user_settings(user)).output_format == "mp3"
        assert format_buttons(await current(fake_bot_api, shown))[0] == "✅ MP3 320 kbps"


async def test_flac_tracks_then_the_same_pick_in_mp3_without_a_model_pass(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    song: Path,
    cached_separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    settings = service_settings()
    async with running_bot(settings) as bot, running_worker(settings, cached_separator):
        await choose(fake_bot_api, USER, await open_settings(fake_bot_api, USER), "FLAC")
        sent = fake_bot_api.send_audio(USER, song, title="Test Song", performer="Test Artist")
        picker = await picker_for(fake_bot_api, USER, sent)
        for stem in ("vocals", "drums"):
            await press(fake_bot_api, USER, picker, picker.button(stem).callback_data or "")
        separate = picker.button("Separate").callback_data or ""
        answer = await press(fake_bot_api, USER, picker, separate)
        assert not answer.show_alert, answer.text
        passes = cached_separator.model_passes

        flacs = await tracks_after(fake_bot_api, USER, 0, 3)
        assert [t.file_name for t in flacs] == [
            "Test Song - drums.flac",
            "Test Song - vocals.flac",
            "Test Song - rest.flac",
        ]
        mix = decode(song)
        decoded = []
        for track in flacs:
            path = tmp_path / (track.file_name or "track.flac")
            path.write_bytes(track.data or b"")
            assert probe_stream(path) == {"codec_name": "flac", "bits_per_raw_sample": "24"}
            samples = decode(path)
            assert samples.shape == mix.shape, "sample-aligned, the input's length"
            decoded.append(samples)
        assert snr_db(mix, decoded) >= 60
        (done,) = await done_status(fake_bot_api, USER, 1)
        assert "MP3" not in done
        job = await recorded_done(bot, separation_job_id(1, ["drums", "vocals"], "flac"))
        assert job.output_format == "flac" and job.tracks == ("drums", "vocals", "rest")
        passes = cached_separator.model_passes
        assert passes > 0

        # Back to MP3: the same pick is another job, served from the separation cache.
        await choose(fake_bot_api, USER, await open_settings(fake_bot_api, USER), "MP3")
        answer = await press(fake_bot_api, USER, picker, separate)
        assert not answer.show_alert, answer.text
        mp3s = await tracks_after(fake_bot_api, USER, 3, 3)
        assert [t.file_name for t in mp3s] == [
            "Test Song - drums.mp3",
            "Test Song - vocals.mp3",
            "Test Song - rest.mp3",
        ]
        await done_status(fake_bot_api, USER, 2)
        job = await recorded_done(bot, separation_job_id(1, ["drums", "vocals"]))
        assert job.job_id == "sep:1:drums+vocals" and job.output_format == "mp3"
        assert cached_separator.model_passes == passes, "no model pass for another format"
        decoded = []
        for track in mp3s:
            path = tmp_path / (track.file_name or "track.mp3")
            path.write_bytes(track.data or b"")
            decoded.append(decode(path))
        assert all(samples.shape == mix.shape for samples in decoded)

        # The same pick in the same format again: its tracks are above.
        answer = await press(fake_bot_api, USER, picker, separate)
        assert answer.show_alert and answer.text == texts.ALREADY_DELIVERED


async def test_a_flac_track_over_the_upload_limit_comes_as_mp3_with_a_note(
    service_settings: Callable[..., Settings],
    fake_bot_api: FakeBotApi,
    cached_separator: EnsembleSeparator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The limit in use, lowered so that 3 seconds reach it: each track's mp3 is ~120 kB, its
    # FLAC 440-650 kB (the residual `other` is the largest).
    limit = 550_000
    monkeypatch.setattr(telegram, "UPLOAD_LIMIT_BYTES", limit)
    song = make_song(tmp_path / "Loud.mp3", seconds=3.0, seed=4)
    settings = service_settings()
    async with running_bot(settings), running_worker(settings, cached_separator):
        await choose(fake_bot_api, USER, await open_settings(fake_bot_api, USER), "FLAC")
        picker = await picker_for(fake_bot_api, USER, fake_bot_api.send_audio(USER, song))
        await press(fake_bot_api, USER, picker, picker.button("All").callback_data or "")
        answer = await press(
            fake_bot_api, USER, picker, picker.button("Separate").callback_data or ""
        )
        assert not answer.show_alert, answer.text
        tracks = await tracks_after(fake_bot_api, USER, 0, 6)
        (done,) = await done_status(fake_bot_api, USER, 1)

    names = [t.file_name or "" for t in tracks]
    as_mp3 = [name[len("Loud - ") : -len(".mp3")] for name in names if name.endswith(".mp3")]
    as_flac = [name for name in names if name.endswith(".flac")]
    assert as_mp3 and as_flac, f"some tracks over the limit, some not: {names}"
    assert len(as_mp3) + len(as_flac) == 6
    assert all(len(t.data or b"") <= limit for t in tracks), "nothing over the limit is sent"
    assert done.startswith("✅ Done in ")
    assert f"Sent as MP3: {', '.join(as_mp3)}." in done
    assert f"{limit / telegram.MB:g} MB upload limit" in done
    mix = decode(song)
    decoded = []
    for track in tracks:
        path = tmp_path / (track.file_name or "track")
        path.write_bytes(track.data or b"")
        decoded.append(decode(path))
    assert all(samples.shape == mix.shape for samples in decoded)
    assert snr_db(mix, decoded) > 20, "FLAC and mp3 tracks still sum to the mix"
