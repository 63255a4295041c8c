"""What the separation worker shows in the status message while it serves a job."""

from __future__ import annotations

from collections.abc import Sequence

from common.telegram import TELEGRAM_DOWNLOAD_LIMIT_MB, TELEGRAM_UPLOAD_LIMIT_MB
from common.texts import duration_text

DOWNLOADING = "⬇️ Downloading your song…"
UPLOADING = "⬆️ Sending the tracks…"
# The song is ready; another job of this worker is separating (one at a time per device).
WAITING_FOR_SEPARATOR = "⏳ Waiting for the separator…"
TIMED_OUT = (
    "it took too long and was stopped. Please try again later (press Separate again) "
    "or send a shorter song."
)
UNAVAILABLE = (
    "Telegram could not be reached just now. Please try again in a few minutes: "
    "press Separate again."
)
FILE_UNAVAILABLE = "the file could not be fetched from Telegram. Please send it again."
UNDELIVERABLE = "the tracks could not be sent to this chat."
STORAGE = (
    "the server could not store your song just now. Please try again in a few minutes: "
    "press Separate again."
)
UNCONFIRMED = (
    "⚠️ Telegram did not confirm that every track arrived. If one is missing, send the song again."
)
TRACKS_TOO_BIG = (
    f"the tracks are over Telegram's {TELEGRAM_UPLOAD_LIMIT_MB} MB upload limit for bots. "
    "Please send a shorter song."
)


def job_failed(reason: str) -> str:
    """The final status of a job that failed for a reason the user should read."""
    return f"❌ Separation failed: {reason}"


def separating(fraction: float) -> str:
    """The status while the models run."""
    return f"🎛 Separating… {int(max(0.0, min(1.0, fraction)) * 100)}%"


def done(
    seconds: float,
    tracks: int,
    *,
    unconfirmed: bool = False,
    as_mp3: Sequence[str] = (),
    upload_limit_mb: float = TELEGRAM_UPLOAD_LIMIT_MB,
) -> str:
    """The final status: done, with the time it took (and a note if an upload went
    unanswered, or if tracks came as MP3 because their FLAC was over the upload limit)."""
    lines = [f"✅ Done in {duration_text(seconds)}: {tracks} tracks sent."]
    if as_mp3:
        lines.append(sent_as_mp3(as_mp3, upload_limit_mb))
    if unconfirmed:
        lines.append(UNCONFIRMED)
    return "\n".join(lines)


def sent_as_mp3(tracks: Sequence[str], upload_limit_mb: float) -> str:
    """Which tracks came as MP3 because as FLAC they were over the upload limit."""
    they = "it" if len(tracks) == 1 else "they"
    return (
        f"ℹ️ Sent as MP3: {', '.join(tracks)}. As FLAC {they} would be over Telegram's "
        f"{upload_limit_mb:g} MB upload limit for bots."
    )


def telegram_too_big(limit_mb: int = TELEGRAM_DOWNLOAD_LIMIT_MB) -> str:
    """Telegram's getFile refused the file: over its download limit for bots."""
    return (
        f"the file is over Telegram's {limit_mb} MB download limit for bots. "
        f"Please send a smaller file (an mp3 under {limit_mb} MB)."
    )
