"""What both the bot and the worker say: limits, durations, a failure on our side.

Every text takes the user's language (``lang``, English by default) and comes from the
gettext catalogs (:mod:`common.i18n`); constants are English msgids marked with ``N_``,
translated where they are sent (``common.i18n.translate``).
"""

from __future__ import annotations

from common.i18n import N_, translator


def accepted_formats(lang: str = "en") -> str:
    """The audio formats a song may come in, as a phrase."""
    _ = translator(lang).gettext
    return _("mp3, wav, flac, ogg/opus or m4a/aac")


def duration_text(seconds: float, lang: str = "en") -> str:
    """``"45 s"``, ``"3 min"``, ``"15 min 30 s"``."""
    _ = translator(lang).gettext
    seconds = round(seconds)
    if seconds < 60:
        return _("%(seconds)d s") % {"seconds": seconds}
    minutes, rest = divmod(seconds, 60)
    if rest:
        return _("%(minutes)d min %(seconds)d s") % {"minutes": minutes, "seconds": rest}
    return _("%(minutes)d min") % {"minutes": minutes}


def too_big(limit_mb: int, lang: str = "en") -> str:
    """A file over the size limit, named in MB."""
    _ = translator(lang).gettext
    return _("That file is too big: the limit is %(limit_mb)s MB. Please send a smaller file.") % {
        "limit_mb": limit_mb
    }


def too_long(limit_s: int, lang: str = "en") -> str:
    """A song over the duration limit, named in minutes and seconds."""
    _ = translator(lang).gettext
    return _(
        "That song is too long: the limit is %(duration)s (%(limit_s)s s). "
        "Please send a shorter one."
    ) % {"duration": duration_text(limit_s, lang), "limit_s": limit_s}


JOB_CRASHED = N_(
    "❌ Separation failed because of an error on our side. Please try again later: "
    "press Separate again."
)
