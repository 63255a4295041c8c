"""What the bot can tell about a sent file without downloading it: accept it, or why not.

Content validity is decided later by decoding (in the worker); here only the facts Telegram
declares are checked: size, duration, and a mime type that is plainly not audio.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum

from telegram import Audio, Document, Message, Voice
from telegram.warnings import PTBDeprecationWarning

from common.telegram import MB, size_limit_mb
from separation.naming import safe_song_name, safe_tag, song_name_from_tags

# Documents whose declared type is plainly not audio; anything else is left to the decoder.
_NOT_AUDIO_MIME_PREFIXES = ("image/", "text/", "font/", "model/", "message/")
_NOT_AUDIO_MIME_TYPES = frozenset(
    {
        "application/pdf",
        "application/zip",
        "application/x-zip-compressed",
        "application/x-rar-compressed",
        "application/vnd.rar",
        "application/x-7z-compressed",
        "application/gzip",
        "application/x-tar",
        "application/json",
        "application/xml",
        "application/msword",
        "application/rtf",
        "application/x-msdownload",
        "application/vnd.android.package-archive",
        "application/x-tgsticker",
    }
)
_NOT_AUDIO_MIME_VENDOR_PREFIXES = (
    "application/vnd.openxmlformats",
    "application/vnd.ms-",
    "application/vnd.oasis.opendocument",
)


class Refusal(Enum):
    """Why a sent file is refused before any download."""

    NOT_AUDIO = "not_audio"
    VIDEO = "video"
    EMPTY = "empty"
    TOO_BIG = "too_big"
    TOO_LONG = "too_long"


@dataclass(frozen=True)
class Upload:
    """A song candidate as Telegram declares it."""

    kind: str  # audio, voice or document
    file_id: str
    file_unique_id: str | None
    file_size: int | None
    mime_type: str | None
    duration_s: float | None
    song_name: str
    artist: str | None


def upload_of(message: Message) -> Upload | Refusal | None:
    """The song candidate in ``message``; a refusal for video or images; ``None`` if no file."""
    with warnings.catch_warnings():
        # PTB warns on reading int durations while it migrates to timedelta; both are read.
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        return _upload_of(message)


def _upload_of(message: Message) -> Upload | Refusal | None:
    if message.audio is not None:
        audio = message.audio
        # Telegram's title tag is the better name when a client sends no file name.
        song_name = (
            safe_song_name(audio.file_name)
            if audio.file_name
            else song_name_from_tags(audio.title, audio.performer)
        )
        return _upload(
            "audio",
            audio,
            duration_s=_seconds(audio.duration),
            song_name=song_name,
            artist=safe_tag(audio.performer),
        )
    if message.voice is not None:
        voice = message.voice
        return _upload("voice", voice, _seconds(voice.duration), "voice message")
    if message.document is not None:
        document = message.document
        return _upload("document", document, None, safe_song_name(document.file_name))
    if message.video is not None or message.video_note is not None or message.animation:
        return Refusal.VIDEO
    if message.photo or message.sticker is not None:
        return Refusal.NOT_AUDIO
    return None


def _upload(
    kind: str,
    media: Audio | Voice | Document,
    duration_s: float | None,
    song_name: str,
    artist: str | None = None,
) -> Upload:
    return Upload(
        kind=kind,
        file_id=media.file_id,
        file_unique_id=media.file_unique_id,
        file_size=media.file_size,
        mime_type=media.mime_type,
        duration_s=duration_s,
        song_name=song_name,
        artist=artist,
    )


def _seconds(duration: object) -> float | None:
    # PTB is migrating durations from int to timedelta; accept both.
    if duration is None:
        return None
    total_seconds = getattr(duration, "total_seconds", None)
    return float(total_seconds()) if callable(total_seconds) else float(duration)  # type: ignore[arg-type]


def refusal(
    upload: Upload, *, max_file_mb: int, local_mode: bool, max_duration_s: int
) -> Refusal | None:
    """Why ``upload`` is refused before any download, or ``None`` to accept it."""
    mime = (upload.mime_type or "").lower()
    if upload.kind == "document" and (
        mime.startswith(_NOT_AUDIO_MIME_PREFIXES)
        or mime in _NOT_AUDIO_MIME_TYPES
        or mime.startswith(_NOT_AUDIO_MIME_VENDOR_PREFIXES)
    ):
        return Refusal.NOT_AUDIO
    if upload.file_size == 0:
        return Refusal.EMPTY
    limit_mb = size_limit_mb(max_file_mb, local_mode)
    if upload.file_size is not None and upload.file_size > limit_mb * MB:
        return Refusal.TOO_BIG
    if upload.duration_s is not None and upload.duration_s > max_duration_s:
        return Refusal.TOO_LONG
    return None


def inspect_upload(
    message: Message, *, max_file_mb: int, local_mode: bool, max_duration_s: int
) -> Upload | Refusal | None:
    """The acceptable song in ``message``, the reason to refuse it, or ``None`` if no file."""
    upload = upload_of(message)
    if upload is None or isinstance(upload, Refusal):
        return upload
    reason = refusal(
        upload, max_file_mb=max_file_mb, local_mode=local_mode, max_duration_s=max_duration_s
    )
    return upload if reason is None else reason
