"""What the mixer says: the mix's caption, a track's unavailability, API errors, in the
user's language (gettext, :mod:`common.i18n`; msgids here are extracted with the others)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from common.i18n import N_, translate, translator

TRACK_TOO_BIG = N_(
    "This track is over 20 MB: Telegram does not hand files that big to bots, so it cannot "
    "be played or mixed here."
)
TRACK_UNAVAILABLE = N_("This track could not be fetched from Telegram. Try again later.")
RENDER_FAILED = N_("❌ The mix could not be made. Please try again from the mixer.")
RENDER_BUSY = N_("A mix is already being made for you: it arrives in the chat shortly.")
NOTHING_TO_MIX = N_("Every track is muted: there is nothing to mix.")
AUTH_FAILED = N_("This mixer link is no longer valid: open the mixer again from the chat.")
NOT_YOURS = N_("Only the person who sent the song can open its mixer.")
MIX_NOT_FOUND = N_("There is no such mix.")
BODY_TOO_LARGE = N_("The request is too large.")
INTERNAL_ERROR = N_("Something went wrong on our side. Please try again.")


def _db(value: float) -> str:
    text = f"{value:+.1f}".rstrip("0").rstrip(".")
    return text.replace("-", "−")


def caption(
    tracks: Sequence[str],
    levels_db: Mapping[str, float],
    muted: Sequence[str],
    solo: Sequence[str],
    tempo: float,
    pitch_semitones: int,
    lowered_db: float,
    lang: str = "en",
) -> str:
    """What the mix is, e.g. ``"no drums, vocals +3 dB, 80 %"``; the caption of the mix."""
    _ = translator(lang).gettext
    parts: list[str] = []
    silent = set(muted)
    if solo:
        silent |= {track for track in tracks if track not in solo}
    playing = [track for track in tracks if track not in silent]
    if solo and len(playing) <= len(tracks) // 2:
        parts.append(_("only %(tracks)s") % {"tracks": ", ".join(playing)})
    else:
        parts.extend(_("no %(track)s") % {"track": track} for track in tracks if track in silent)
    for track in playing:
        level = levels_db.get(track, 0.0)
        if abs(level) >= 0.05:
            parts.append(_("%(track)s %(db)s dB") % {"track": track, "db": _db(level)})
    if abs(tempo - 1.0) > 1e-9:
        parts.append(_("%(percent)s %% tempo") % {"percent": f"{tempo * 100:.0f}"})
    if pitch_semitones:
        parts.append(
            translator(lang).ngettext(
                "%(semitones)s semitone", "%(semitones)s semitones", abs(pitch_semitones)
            )
            % {"semitones": f"{pitch_semitones:+d}".replace("-", "−")}
        )
    if not parts:
        parts.append(_("all tracks as delivered"))
    text = ", ".join(parts)
    if lowered_db > 0:
        text += "; " + _("turned down %(db)s dB so it does not clip") % {"db": f"{lowered_db:.1f}"}
    return f"🎚 {text}"


def track_error(reason: str, lang: str = "en") -> str:
    """Why a track cannot be played, for the page."""
    return translate(TRACK_TOO_BIG if reason == "too_big" else TRACK_UNAVAILABLE, lang)
