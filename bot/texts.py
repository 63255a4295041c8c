"""What the bot process says in chat: help, picker, refusals, alerts, queue and feedback.

Every text is an English gettext msgid translated into the user's language (``lang``,
English by default; see :mod:`common.i18n`). Functions take ``lang``; the constants are
msgids marked with ``N_`` and are sent through ``common.i18n.translate(CONSTANT, lang)``.
"""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping
from typing import Any

from bot.intake import Refusal
from bot.separations import NotStarted
from common.i18n import LANGUAGE_NAMES, N_, language, translate, translator
from common.texts import accepted_formats, duration_text, too_big, too_long
from separation.formats import OutputFormat
from separation.tracks import plan_tracks

# How /settings, the picker and /help name each output format (the button texts contain
# MP3 and FLAC in every language).
FORMAT_LABELS: dict[OutputFormat, str] = {
    "mp3": N_("MP3 320 kbps"),
    "flac": N_("FLAC 24-bit"),
}


def format_label(output_format: OutputFormat, lang: str = "en") -> str:
    return translate(FORMAT_LABELS[output_format], lang)


# The picker's All and Separate buttons (their texts contain `All` and `Separate` in every
# language; the source buttons are the sources' names, as the tracks are named).
ALL_BUTTON = N_("All")
SEPARATE_BUTTON = N_("▶️ Separate")


def help_text(max_file_mb: int, max_duration_s: int, lang: str = "en") -> str:
    _ = translator(lang).gettext
    return _(
        "🎛 <b>Neural Music Demixing</b>\n\n"
        "Send me a song as an audio file or a document: "
        "%(formats)s (mp3 works best).\n"
        "Limits: up to %(max_file_mb)s MB and %(duration)s per song.\n\n"
        "I reply with buttons: pick the stems you want (drums, bass, vocals, guitar, piano, "
        "other, or All) and press <b>Separate</b>.\n\n"
        "What comes back, as files named after your song:\n"
        "• one stem picked: that stem and the rest of the song without it "
        "(e.g. vocals + no_vocals, a karaoke track);\n"
        "• several stems: each of them and <i>rest</i>, everything else;\n"
        "• All: the six stems.\n"
        "The tracks add up to your original mix. Then rate the result with 👍 or 👎.\n\n"
        "Formats: %(mp3)s (the default) or %(flac)s (lossless, for a DAW). "
        "Choose the format and the language with /settings."
    ) % {
        "formats": accepted_formats(lang),
        "max_file_mb": max_file_mb,
        "duration": duration_text(max_duration_s, lang),
        "mp3": format_label("mp3", lang),
        "flac": format_label("flac", lang),
    }


def picker_text(
    song_name: str, picked: Collection[str], output_format: OutputFormat, lang: str = "en"
) -> str:
    _ = translator(lang).gettext
    tracks = plan_tracks(picked) if picked else ()
    lines = [
        f"🎵 <b>{html.escape(song_name)}</b>",
        _("Pick the stems you want, then press Separate."),
    ]
    if tracks:
        lines.append(_("You will get: %(tracks)s.") % {"tracks": ", ".join(tracks)})
    lines.append(format_line(output_format, lang))
    return "\n".join(lines)


def format_line(output_format: OutputFormat, lang: str = "en") -> str:
    """The picker's line on the format the tracks come in."""
    _ = translator(lang).gettext
    return _("Format: %(format)s · /settings to change") % {
        "format": format_label(output_format, lang)
    }


def settings_text(output_format: OutputFormat, upload_limit_mb: float, lang: str = "en") -> str:
    """The /settings message above its buttons."""
    _ = translator(lang).gettext
    return _(
        "⚙️ <b>Settings</b>\n\n"
        "Output format: <b>%(format)s</b>\n"
        "• %(mp3)s: small files, for listening and sharing.\n"
        "• %(flac)s: lossless, for editing in a DAW. A FLAC track over "
        "the %(limit_mb)s MB upload limit comes as MP3.\n\n"
        "Language: <b>%(language)s</b>\n\n"
        "Your choice applies to the separations you start from now on."
    ) % {
        "format": format_label(output_format, lang),
        "mp3": format_label("mp3", lang),
        "flac": format_label("flac", lang),
        "limit_mb": f"{upload_limit_mb:g}",
        "language": LANGUAGE_NAMES[language(lang)],
    }


def setting_saved(output_format: OutputFormat, lang: str = "en") -> str:
    """The answer to a format button."""
    _ = translator(lang).gettext
    return _("Tracks will come as %(format)s.") % {"format": format_label(output_format, lang)}


def language_saved(lang: str = "en") -> str:
    """The answer to a language button, in the language just chosen."""
    _ = translator(lang).gettext
    return _("I will speak English with you.")


def not_audio(lang: str = "en") -> str:
    _ = translator(lang).gettext
    return _(
        "That doesn't look like audio I can read. "
        "Please send a song as %(formats)s (mp3 works best)."
    ) % {"formats": accepted_formats(lang)}


def empty_file(lang: str = "en") -> str:
    _ = translator(lang).gettext
    return _("That file is empty. Please send a song as %(formats)s (mp3 works best).") % {
        "formats": accepted_formats(lang)
    }


def video_refused(lang: str = "en") -> str:
    _ = translator(lang).gettext
    return _(
        "I separate audio, not video. Please send the song itself as an audio file: "
        "%(formats)s (mp3 works best)."
    ) % {"formats": accepted_formats(lang)}


def send_a_song(lang: str = "en") -> str:
    _ = translator(lang).gettext
    return _("Send me a song (%(formats)s) and I'll split it into stems. /help") % {
        "formats": accepted_formats(lang)
    }


# English, as the tests and the docs quote them.
NOT_AUDIO = not_audio()
EMPTY_FILE = empty_file()
VIDEO_REFUSED = video_refused()
SEND_A_SONG = send_a_song()


def refusal(reason: Refusal, *, limit_mb: int, max_duration_s: int, lang: str = "en") -> str:
    """The reply to a file refused before any download."""
    if reason is Refusal.TOO_BIG:
        return too_big(limit_mb, lang)
    if reason is Refusal.TOO_LONG:
        return too_long(max_duration_s, lang)
    return {Refusal.NOT_AUDIO: not_audio, Refusal.VIDEO: video_refused, Refusal.EMPTY: empty_file}[
        reason
    ](lang)


# Button answers (alerts are short: Telegram shows at most 200 characters).
STALE_BUTTON = N_("This button no longer works. Send the song again to start over.")
NOT_YOUR_SONG = N_("Only the person who sent this song can use its buttons.")
NOT_YOUR_SETTINGS = N_("These are someone else's settings. Send /settings to see yours.")
NOTHING_PICKED = N_("Pick at least one stem first, then press Separate.")
ALREADY_QUEUED = N_("Already on it: this selection is queued or being separated.")
ALREADY_DELIVERED = N_("This selection was already separated: the tracks are above.")
RECENTLY_FAILED = N_(
    "This song can't be separated (the status message says why): trying again would fail "
    "the same way."
)
VOTE_THANKS = {"up": N_("Thanks! Glad it worked 👍"), "down": N_("Thanks for telling me 👎")}
VOTE_CHANGED = N_("Vote changed, thanks!")


def too_many_jobs(limit: int, lang: str = "en") -> str:
    t = translator(lang)
    return t.ngettext(
        "You already have %(count)d separation in progress. Please wait until it finishes, "
        "then press Separate again.",
        "You already have %(count)d separations in progress. Please wait until they finish, "
        "then press Separate again.",
        limit,
    ) % {"count": limit}


def too_many_uploads(per_hour: int, lang: str = "en") -> str:
    t = translator(lang)
    return t.ngettext(
        "That's more than %(count)d song in an hour. Please wait a while before sending "
        "more: songs sent until then are not kept.",
        "That's more than %(count)d songs in an hour. Please wait a while before sending "
        "more: songs sent until then are not kept.",
        per_hour,
    ) % {"count": per_hour}


def too_many_presses(per_minute: int, lang: str = "en") -> str:
    t = translator(lang)
    return t.ngettext(
        "Too many presses (%(count)d a minute). Please wait a moment.",
        "Too many presses (%(count)d a minute). Please wait a moment.",
        per_minute,
    ) % {"count": per_minute}


QUEUE_DOWN = N_(
    "⚠️ The separation queue is unreachable right now. Please try again in a minute: "
    "your song and your picks are kept, just press Separate again."
)


def not_started(reason: NotStarted, max_active_jobs: int, lang: str = "en") -> tuple[str, bool]:
    """The answer to a Separate press that started nothing, and whether it is an alert."""
    if reason is NotStarted.TOO_MANY_JOBS:
        return too_many_jobs(max_active_jobs, lang), True
    if reason is NotStarted.ALREADY_QUEUED:
        return translate(ALREADY_QUEUED, lang), False
    message = {
        NotStarted.NOTHING_PICKED: NOTHING_PICKED,
        NotStarted.ALREADY_DELIVERED: ALREADY_DELIVERED,
        NotStarted.SONG_FAILED: RECENTLY_FAILED,
        NotStarted.QUEUE_DOWN: QUEUE_DOWN,
    }[reason]
    return translate(message, lang), True


def queued(position: int | None, lang: str = "en") -> str:
    _ = translator(lang).gettext
    if position is None or position <= 1:
        return _("⏳ Queued: position 1, you're next.")
    return _("⏳ Queued: position %(position)d.") % {"position": position}


JOB_LOST = N_("❌ Separation failed: the job was lost. Please press Separate again.")
WHAT_WENT_WRONG = N_(
    "Sorry it wasn't good. What was wrong? Reply to this message in a few words "
    "(optional), it helps us improve."
)
WHAT_WENT_WRONG_PLACEHOLDER = N_("What was wrong?")
COMMENT_THANKS = N_("Thanks, noted!")
ADMINS_ONLY = N_("Sorry, that command is for the bot's admins.")

# The command menu (setMyCommands), one list per language.
COMMANDS: tuple[tuple[str, str], ...] = (
    ("start", N_("what this bot does")),
    ("help", N_("what to send, what comes back, the limits")),
    ("settings", N_("output format (MP3 320 kbps or FLAC 24-bit) and language")),
)


def stats_text(figures: Mapping[str, Any], lang: str = "en") -> str:
    """The figures of `Stats.to_dict()` as plain text (chat and shell)."""
    _ = translator(lang).gettext
    jobs = figures["jobs"]
    feedback = figures["feedback"]

    def seconds(value: float | None) -> str:
        return _("n/a") if value is None else _("%(seconds).1f s") % {"seconds": value}

    stems = ", ".join(f"{name} {count}" for name, count in figures["stems"].items()) or _("none")
    return "\n".join(
        [
            _("Requests: %(requests)d from %(users)d users")
            % {"requests": figures["requests"], "users": figures["users"]},
            _("Jobs: %(jobs)s")
            % {"jobs": ", ".join(f"{status} {count}" for status, count in jobs.items())},
            _("Audio separated: %(minutes).1f min") % {"minutes": figures["audio_seconds"] / 60},
            _("Mean wait: %(wait)s, mean run: %(run)s")
            % {"wait": seconds(figures["mean_wait_s"]), "run": seconds(figures["mean_run_s"])},
            _("Stems picked: %(stems)s") % {"stems": stems},
            _("Feedback: 👍 %(up)d, 👎 %(down)d, comments %(comments)d")
            % {"up": feedback["up"], "down": feedback["down"], "comments": feedback["comments"]},
        ]
    )
