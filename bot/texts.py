"""Everything the bot says in chat, in one place."""

from __future__ import annotations

import html
from collections.abc import Collection, Mapping
from typing import Any

from bot.naming import planned_tracks

ACCEPTED_FORMATS = "mp3, wav, flac, ogg/opus or m4a/aac"


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def help_text(max_file_mb: int, max_duration_s: int) -> str:
    return (
        "🎛 <b>Neural Music Demixing</b>\n\n"
        "Send me a song as an audio file or a document: "
        f"{ACCEPTED_FORMATS} (mp3 works best).\n"
        f"Limits: up to {max_file_mb} MB and {_duration(max_duration_s)} per song.\n\n"
        "I reply with buttons: pick the stems you want (drums, bass, vocals, guitar, piano, "
        "other, or All) and press <b>Separate</b>.\n\n"
        "What comes back, as mp3 files named after your song:\n"
        "• one stem picked: that stem and the rest of the song without it "
        "(e.g. vocals + no_vocals, a karaoke track);\n"
        "• several stems: each of them and <i>rest</i>, everything else;\n"
        "• All: the six stems.\n"
        "The tracks add up to your original mix. Then rate the result with 👍 or 👎."
    )


def picker_text(song_name: str, picked: Collection[str]) -> str:
    tracks = planned_tracks(picked)
    lines = [f"🎵 <b>{html.escape(song_name)}</b>", "Pick the stems you want, then press Separate."]
    if tracks:
        lines.append(f"You will get: {', '.join(tracks)}.")
    return "\n".join(lines)


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


def too_big(limit_mb: int) -> str:
    return f"That file is too big: the limit is {limit_mb} MB. Please send a smaller file."


def too_long(limit_s: int) -> str:
    return (
        f"That song is too long: the limit is {_duration(limit_s)} ({limit_s} s). "
        "Please send a shorter one."
    )


# Button answers (alerts are short: Telegram shows at most 200 characters).
STALE_BUTTON = "This button no longer works. Send the song again to start over."
NOT_YOUR_SONG = "Only the person who sent this song can use its buttons."
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


QUEUE_DOWN = (
    "⚠️ The separation queue is unreachable right now. Please try again in a minute: "
    "your song and your picks are kept, just press Separate again."
)


def queued(position: int | None) -> str:
    if position is None or position <= 1:
        return "⏳ Queued: position 1, you're next."
    return f"⏳ Queued: position {position}."


JOB_LOST = "❌ Separation failed: the job was lost. Please press Separate again."
JOB_CRASHED = (
    "❌ Separation failed because of an error on our side. Please try again later: "
    "press Separate again."
)


def job_failed(reason: str) -> str:
    return f"❌ Separation failed: {reason}"


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


# --- worker ----------------------------------------------------------------------------
# What the separation worker (bot/worker.py, bot/delivery.py) shows; owned by the worker.

TELEGRAM_DOWNLOAD_LIMIT_MB = 20

WORKER_DOWNLOADING = "⬇️ Downloading your song…"
WORKER_UPLOADING = "⬆️ Sending the tracks…"
RATING_PROMPT = "How did the separation turn out? Rate it:"
WORKER_TIMED_OUT = (
    "it took too long and was stopped. Please try again later (press Separate again) "
    "or send a shorter song."
)
WORKER_UNAVAILABLE = (
    "Telegram could not be reached just now. Please try again in a few minutes: "
    "press Separate again."
)
WORKER_FILE_UNAVAILABLE = "the file could not be fetched from Telegram. Please send it again."
WORKER_UNDELIVERABLE = "the tracks could not be sent to this chat."
WORKER_TRACKS_TOO_BIG = (
    "the tracks are over Telegram's 50 MB upload limit for bots. Please send a shorter song."
)


def worker_separating(fraction: float) -> str:
    """The status while the models run."""
    return f"🎛 Separating… {int(max(0.0, min(1.0, fraction)) * 100)}%"


def worker_done(seconds: float, tracks: int) -> str:
    """The final status: done, with the time it took."""
    return f"✅ Done in {_duration(seconds)}: {tracks} tracks sent."


def worker_telegram_too_big(limit_mb: int = TELEGRAM_DOWNLOAD_LIMIT_MB) -> str:
    """Telegram's getFile refused the file: over its download limit for bots."""
    return (
        f"the file is over Telegram's {limit_mb} MB download limit for bots. "
        f"Please send a smaller file (an mp3 under {limit_mb} MB)."
    )
