"""Typed errors of the separation engine, each with a sentence fit to show a user."""

from __future__ import annotations

ACCEPTED_FORMATS = "mp3, wav, flac, ogg/opus or m4a/aac"


class SeparationError(Exception):
    """Base of every error the engine raises on purpose.

    Attributes:
        user_message: one sentence that can be shown to the person who sent the song.
    """

    default_user_message = "The song could not be separated."

    def __init__(self, detail: str, user_message: str | None = None) -> None:
        super().__init__(detail)
        self.user_message = user_message or self.default_user_message


class InvalidAudioError(SeparationError):
    """The content is not decodable audio: not audio, empty, truncated or corrupt."""

    default_user_message = (
        f"This file could not be read as audio. Please send a song as {ACCEPTED_FORMATS}."
    )


class NoSoundError(InvalidAudioError):
    """The content decodes, but to no samples: an empty file, or one too short to resample.

    Told apart from an undecodable file, which would send the user looking for a codec
    problem that is not there.
    """

    default_user_message = (
        "This file holds no sound to separate: it is empty or far too short. "
        f"Please send a song as {ACCEPTED_FORMATS}."
    )


class SongTooLongError(SeparationError):
    """The decoded song is longer than the duration limit; decoding stopped at the limit.

    Attributes:
        limit_s: the limit in seconds.
    """

    def __init__(self, detail: str, limit_s: float) -> None:
        super().__init__(detail, f"The song is longer than the limit of {limit_s:g} s.")
        self.limit_s = limit_s


class UnknownStemError(SeparationError, ValueError):
    """No stem names, or a name that is not one of the six sources."""

    default_user_message = "Pick at least one of: drums, bass, vocals, guitar, piano, other."


class SeparationCancelled(SeparationError):
    """``should_cancel()`` returned True between two chunks; nothing was produced."""

    default_user_message = "The separation was cancelled."


class ModelUnavailableError(SeparationError):
    """A model could not be loaded (missing from the model folder, download failed, bad file)."""

    default_user_message = "The separation models are not available right now; try again later."
