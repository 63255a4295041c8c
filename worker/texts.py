"""What the separation worker shows in the status message while it serves a job.

Every text is an English gettext msgid rendered in the job's language (``lang``: the
payload's ``language``, English by default; see :mod:`common.i18n`). Functions take
``lang``; constants are msgids marked with ``N_``, sent through ``translate(CONST, lang)``.
"""

from __future__ import annotations

from collections.abc import Sequence

from common.i18n import N_, translate, translator
from common.telegram import TELEGRAM_DOWNLOAD_LIMIT_MB, TELEGRAM_UPLOAD_LIMIT_MB
from common.texts import accepted_formats, duration_text

DOWNLOADING = N_("⬇️ Downloading your song…")
UPLOADING = N_("⬆️ Sending the tracks…")
# Under every status of a job that a worker took up after another run of it stopped.
RESUMED = N_("🔄 Resumed after an interruption: what was already sent is not sent again.")
# A separation that could not be stopped: this worker is being replaced.
HANDED_ON = N_("🔄 The separator stopped responding; another worker takes your song up shortly.")
# The song is ready; another job of this worker is separating (one at a time per device).
WAITING_FOR_SEPARATOR = N_("⏳ Waiting for the separator…")
TIMED_OUT = N_(
    "it took too long and was stopped. Please try again later (press Separate again) "
    "or send a shorter song."
)
UNAVAILABLE = N_(
    "Telegram could not be reached just now. Please try again in a few minutes: "
    "press Separate again."
)
FILE_UNAVAILABLE = N_("the file could not be fetched from Telegram. Please send it again.")
UNDELIVERABLE = N_("the tracks could not be sent to this chat.")
STORAGE = N_(
    "the server could not store your song just now. Please try again in a few minutes: "
    "press Separate again."
)
UNCONFIRMED = N_(
    "⚠️ Telegram did not confirm that every track arrived. If one is missing, send the song again."
)
UNKNOWN_STEMS = N_("Pick at least one of: drums, bass, vocals, guitar, piano, other.")


def tracks_too_big(lang: str = "en") -> str:
    _ = translator(lang).gettext
    return _(
        "the tracks are over Telegram's %(limit_mb)s MB upload limit for bots. "
        "Please send a shorter song."
    ) % {"limit_mb": TELEGRAM_UPLOAD_LIMIT_MB}


TRACKS_TOO_BIG = tracks_too_big()


def job_failed(reason: str, lang: str = "en") -> str:
    """The final status of a job that failed for a reason the user should read (``reason``
    already in ``lang``)."""
    _ = translator(lang).gettext
    return _("❌ Separation failed: %(reason)s") % {"reason": reason}


def separating(fraction: float, lang: str = "en") -> str:
    """The status while the models run."""
    _ = translator(lang).gettext
    percent = int(max(0.0, min(1.0, fraction)) * 100)
    return _("🎛 Separating… %(percent)d%%") % {"percent": percent}


def done(
    seconds: float,
    tracks: int,
    *,
    unconfirmed: bool = False,
    as_mp3: Sequence[str] = (),
    upload_limit_mb: float = TELEGRAM_UPLOAD_LIMIT_MB,
    lang: str = "en",
) -> str:
    """The final status: done, with the time it took (and a note if an upload went
    unanswered, or if tracks came as MP3 because their FLAC was over the upload limit)."""
    t = translator(lang)
    lines = [
        t.ngettext(
            "✅ Done in %(duration)s: %(count)d track sent.",
            "✅ Done in %(duration)s: %(count)d tracks sent.",
            tracks,
        )
        % {"duration": duration_text(seconds, lang), "count": tracks}
    ]
    if as_mp3:
        lines.append(sent_as_mp3(as_mp3, upload_limit_mb, lang))
    if unconfirmed:
        lines.append(translate(UNCONFIRMED, lang))
    return "\n".join(lines)


def sent_as_mp3(tracks: Sequence[str], upload_limit_mb: float, lang: str = "en") -> str:
    """Which tracks came as MP3 because as FLAC they were over the upload limit."""
    t = translator(lang)
    return t.ngettext(
        "ℹ️ Sent as MP3: %(tracks)s. As FLAC it would be over Telegram's "
        "%(limit_mb)s MB upload limit for bots.",
        "ℹ️ Sent as MP3: %(tracks)s. As FLAC they would be over Telegram's "
        "%(limit_mb)s MB upload limit for bots.",
        len(tracks),
    ) % {"tracks": ", ".join(tracks), "limit_mb": f"{upload_limit_mb:g}"}


def telegram_too_big(limit_mb: int = TELEGRAM_DOWNLOAD_LIMIT_MB, lang: str = "en") -> str:
    """Telegram's getFile refused the file: over its download limit for bots."""
    _ = translator(lang).gettext
    return _(
        "the file is over Telegram's %(limit_mb)s MB download limit for bots. "
        "Please send a smaller file (an mp3 under %(limit_mb)s MB)."
    ) % {"limit_mb": limit_mb}


def invalid_audio(lang: str = "en") -> str:
    """The song did not decode."""
    _ = translator(lang).gettext
    return _("This file could not be read as audio. Please send a song as %(formats)s.") % {
        "formats": accepted_formats(lang)
    }


def no_sound(lang: str = "en") -> str:
    """The song decoded to nothing (empty or far too short): not a codec problem."""
    _ = translator(lang).gettext
    return _(
        "This file holds no sound to separate: it is empty or far too short. "
        "Please send a song as %(formats)s."
    ) % {"formats": accepted_formats(lang)}
