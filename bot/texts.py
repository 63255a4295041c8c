"""What the bot process says in chat: help, picker, refusals, alerts, queue and feedback."""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping
from typing import Any

from bot.intake import Refusal
from bot.separations import NotStarted
from common.texts import duration_text, too_big, too_long
from separation.errors import ACCEPTED_FORMATS
from separation.formats import OutputFormat
from separation.tracks import plan_tracks

# How /settings, the picker and /help name each output format (the button texts contain
# MP3 and FLAC).
FORMAT_LABELS: dict[OutputFormat, str] = {"mp3": "MP3 320 kbps", "flac": "FLAC 24-bit"}


def help_text(max_file_mb: int, max_duration_s: int) -> str:
    return (
        "🎛 <b>Neural Music Demixing</b>\n\n"
        "Send me a song as an audio file or a document: "
        f"{ACCEPTED_FORMATS} (mp3 works best).\n"
        f"Limits: up to {max_file_mb} MB and {duration_text(max_duration_s)} per song.\n\n"
        "I reply with buttons: pick the stems you want (drums, bass, vocals, guitar, piano, "
        "other, or All) and press <b>Separate</b>.\n\n"
        "What comes back, as files named after your song:\n"
        "• one stem picked: that stem and the rest of the song without it "
        "(e.g. vocals + no_vocals, a karaoke track);\n"
        "• several stems: each of them and <i>rest</i>, everything else;\n"
        "• All: the six stems.\n"
        "The tracks add up to your original mix. Then rate the result with 👍 or 👎.\n\n"
        f"Formats: {FORMAT_LABELS['mp3']} (the default) or {FORMAT_LABELS['flac']} "
        "(lossless, for a DAW). Choose with /settings."
    )


def picker_text(song_name: str, picked: Collection[str], output_format: OutputFormat) -> str:
    tracks = plan_tracks(picked) if picked else ()
    lines = [f"🎵 <b>{html.escape(song_name)}</b>", "Pick the stems you want, then press Separate."]
    if tracks:
        lines.append(f"You will get: {', '.join(tracks)}.")
    lines.append(format_line(output_format))
    return "\n".join(lines)


def format_line(output_format: OutputFormat) -> str:
    """The picker's line on the format the tracks come in."""
    return f"Format: {FORMAT_LABELS[output_format]} · /settings to change"


def settings_text(output_format: OutputFormat, upload_limit_mb: float) -> str:
    """The /settings message above its buttons."""
    return (
        "⚙️ <b>Settings</b>\n\n"
        f"Output format: <b>{FORMAT_LABELS[output_format]}</b>\n"
        f"• {FORMAT_LABELS['mp3']}: small files, for listening and sharing.\n"
        f"• {FORMAT_LABELS['flac']}: lossless, for editing in a DAW. A FLAC track over "
        f"the {upload_limit_mb:g} MB upload limit comes as MP3.\n\n"
        "Your choice applies to the separations you start from now on."
    )


def setting_saved(output_format: OutputFormat) -> str:
    """The answer to a format button."""
    return f"Tracks will come as {FORMAT_LABELS[output_format]}."


NOT_AUDIO = (
    "That doesn't look like audio I can read. "
    f"Please send a song as {ACCEPTED_FORMATS} (mp3 works best)."
)
EMPTY_FILE = f"That file is empty. Please send a song as {ACCEPTED_FORMATS} (mp3 works best)."
VIDEO_REFUSED = (
    "I separate audio, not video. Please send the song itself as an audio file: "
    f"{ACCEPTED_FORMATS} (mp3 works best)."
)
SEND_A_SONG = f"Send me a song ({ACCEPTED_FORMATS}) and I'll split it into stems. /help"


def refusal(reason: Refusal, *, limit_mb: int, max_duration_s: int) -> str:
    """The reply to a file refused before any download."""
    if reason is Refusal.TOO_BIG:
        return too_big(limit_mb)
    if reason is Refusal.TOO_LONG:
        return too_long(max_duration_s)
    return {Refusal.NOT_AUDIO: NOT_AUDIO, Refusal.VIDEO: VIDEO_REFUSED, Refusal.EMPTY: EMPTY_FILE}[
        reason
    ]


# Button answers (alerts are short: Telegram shows at most 200 characters).
STALE_BUTTON = "This button no longer works. Send the song again to start over."
NOT_YOUR_SONG = "Only the person who sent this song can use its buttons."
NOT_YOUR_SETTINGS = "These are someone else's settings. Send /settings to see yours."
NOTHING_PICKED = "Pick at least one stem first, then press Separate."
ALREADY_QUEUED = "Already on it: this selection is queued or being separated."
ALREADY_DELIVERED = "This selection was already separated: the tracks are above."
RECENTLY_FAILED = (
    "This song can't be separated (the status message says why): trying again would fail "
    "the same way."
)
VOTE_THANKS = {"up": "Thanks! Glad it worked 👍", "down": "Thanks for telling me 👎"}
VOTE_CHANGED = "Vote changed, thanks!"


def too_many_jobs(limit: int) -> str:
    jobs = "one separation" if limit == 1 else f"{limit} separations"
    return (
        f"You already have {jobs} in progress. Please wait until it finishes, "
        "then press Separate again."
    )


def too_many_uploads(per_hour: int) -> str:
    return (
        f"That's more than {per_hour} songs in an hour. Please wait a while before sending "
        "more: songs sent until then are not kept."
    )


def too_many_presses(per_minute: int) -> str:
    return f"Too many presses ({per_minute} a minute). Please wait a moment."


QUEUE_DOWN = (
    "⚠️ The separation queue is unreachable right now. Please try again in a minute: "
    "your song and your picks are kept, just press Separate again."
)


def not_started(reason: NotStarted, max_active_jobs: int) -> tuple[str, bool]:
    """The answer to a Separate press that started nothing, and whether it is an alert."""
    if reason is NotStarted.TOO_MANY_JOBS:
        return too_many_jobs(max_active_jobs), True
    if reason is NotStarted.ALREADY_QUEUED:
        return ALREADY_QUEUED, False
    return {
        NotStarted.NOTHING_PICKED: NOTHING_PICKED,
        NotStarted.ALREADY_DELIVERED: ALREADY_DELIVERED,
        NotStarted.SONG_FAILED: RECENTLY_FAILED,
        NotStarted.QUEUE_DOWN: QUEUE_DOWN,
    }[reason], True


def queued(position: int | None) -> str:
    if position is None or position <= 1:
        return "⏳ Queued: position 1, you're next."
    return f"⏳ Queued: position {position}."


JOB_LOST = "❌ Separation failed: the job was lost. Please press Separate again."
WHAT_WENT_WRONG = (
    "Sorry it wasn't good. What was wrong? Reply to this message in a few words "
    "(optional), it helps us improve."
)
COMMENT_THANKS = "Thanks, noted!"
ADMINS_ONLY = "Sorry, that command is for the bot's admins."


def stats_text(figures: Mapping[str, Any]) -> str:
    """The figures of `Stats.to_dict()` as plain text (chat and shell)."""
    jobs = figures["jobs"]
    feedback = figures["feedback"]

    def seconds(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.1f} s"

    stems = ", ".join(f"{name} {count}" for name, count in figures["stems"].items()) or "none"
    return "\n".join(
        [
            f"Requests: {figures['requests']} from {figures['users']} users",
            "Jobs: " + ", ".join(f"{status} {count}" for status, count in jobs.items()),
            f"Audio separated: {figures['audio_seconds'] / 60:.1f} min",
            f"Mean wait: {seconds(figures['mean_wait_s'])}, "
            f"mean run: {seconds(figures['mean_run_s'])}",
            f"Stems picked: {stems}",
            f"Feedback: 👍 {feedback['up']}, 👎 {feedback['down']}, "
            f"comments {feedback['comments']}",
        ]
    )
