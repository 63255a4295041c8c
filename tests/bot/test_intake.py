"""What the bot decides from Telegram's declared facts alone (no download)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from telegram import Audio, Chat, Message

from bot.intake import Refusal, Upload, refusal, upload_of
from common.telegram import MB, size_limit_mb


def upload(
    kind: str = "document",
    mime_type: str | None = "audio/mpeg",
    file_size: int | None = 1000,
    duration_s: float | None = None,
) -> Upload:
    return Upload(
        kind=kind, file_id="F", file_unique_id="U", file_size=file_size, mime_type=mime_type,
        duration_s=duration_s, song_name="song", artist=None,
    )  # fmt: skip


def decide(item: Upload, max_file_mb: int = 20, local_mode: bool = False) -> Refusal | None:
    return refusal(item, max_file_mb=max_file_mb, local_mode=local_mode, max_duration_s=900)


@pytest.mark.parametrize(
    "mime",
    [
        "audio/mpeg",
        "audio/x-wav",
        "audio/flac",
        "audio/ogg",
        "audio/mp4",
        "audio/x-m4a",
        "video/mp4",  # an m4a may be declared as this; the decoder decides
        "application/octet-stream",
        "application/ogg",
        None,
    ],
)
def test_audio_or_unknown_documents_are_left_to_the_decoder(mime: str | None) -> None:
    assert decide(upload(mime_type=mime)) is None


@pytest.mark.parametrize(
    "mime",
    [
        "image/png",
        "IMAGE/JPEG",
        "text/plain",
        "application/pdf",
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.ms-excel",
    ],
)
def test_plainly_not_audio_documents_are_refused(mime: str) -> None:
    assert decide(upload(mime_type=mime)) is Refusal.NOT_AUDIO


def test_mime_type_of_an_audio_message_is_not_second_guessed() -> None:
    assert decide(upload(kind="audio", mime_type="text/plain")) is None


def test_size_limit_boundaries() -> None:
    assert decide(upload(file_size=20 * MB)) is None
    assert decide(upload(file_size=20 * MB + 1)) is Refusal.TOO_BIG
    assert decide(upload(file_size=0)) is Refusal.EMPTY
    assert decide(upload(file_size=None)) is None  # the worker checks the real size


def test_telegram_download_limit_applies_without_a_local_server() -> None:
    assert size_limit_mb(50, local_mode=False) == 20
    assert size_limit_mb(50, local_mode=True) == 50
    assert size_limit_mb(10, local_mode=False) == 10
    assert decide(upload(file_size=30 * MB), max_file_mb=50) is Refusal.TOO_BIG
    assert decide(upload(file_size=30 * MB), max_file_mb=50, local_mode=True) is None


def test_duration_limit_boundaries() -> None:
    assert decide(upload(kind="audio", duration_s=900)) is None
    assert decide(upload(kind="audio", duration_s=901)) is Refusal.TOO_LONG


@pytest.mark.parametrize(
    ("file_name", "title", "performer", "song_name", "artist"),
    [
        # No file name: the tags name the song, and a tag's "/" is no directory.
        (None, "Back in Black\u202e", "AC/DC\x1b[0m", "AC DC[0m - Back in Black", "AC/DC[0m"),
        (None, "<b>Hits Vol.2</b>", None, "b Hits Vol.2 b", None),
        (None, "x" * 5000, "y" * 5000, "y" * 99 + "…", "y" * 99 + "…"),
        ("../<i>a</i>.mp3", "\u2066T", "\u2066P\n", "i", "P"),
    ],
)
def test_names_and_performers_from_telegram_are_made_safe(
    file_name: str | None, title: str, performer: str | None, song_name: str, artist: str | None
) -> None:
    audio = Audio("F", "U", 180, performer=performer, title=title, file_name=file_name)
    message = Message(1, datetime.now(UTC), Chat(1, "private"), audio=audio)
    found = upload_of(message)
    assert isinstance(found, Upload)
    assert (found.song_name, found.artist) == (song_name, artist)
