"""What both the bot and the worker say: limits, durations, a failure on our side."""

from __future__ import annotations


def duration_text(seconds: float) -> str:
    """``"45 s"``, ``"3 min"``, ``"15 min 30 s"``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"{minutes} min {rest} s" if rest else f"{minutes} min"


def too_big(limit_mb: int) -> str:
    """A file over the size limit, named in MB."""
    return f"That file is too big: the limit is {limit_mb} MB. Please send a smaller file."


def too_long(limit_s: int) -> str:
    """A song over the duration limit, named in minutes and seconds."""
    return (
        f"That song is too long: the limit is {duration_text(limit_s)} ({limit_s} s). "
        "Please send a shorter one."
    )


JOB_CRASHED = (
    "❌ Separation failed because of an error on our side. Please try again later: "
    "press Separate again."
)
