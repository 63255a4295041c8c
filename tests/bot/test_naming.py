"""The bot's torch-free name helpers agree with the separation library's rules."""

from __future__ import annotations

import itertools

import pytest

from bot.callback_data import SOURCES
from bot.naming import MAX_SONG_NAME_CHARS, planned_tracks, safe_song_name


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("My Song.mp3", "My Song"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Music\\Track 01.flac", "Track 01"),
        ('a<b>c:d"e|f?g*h.wav', "a b c d e f g h"),
        ("line\nbreak\ttab.mp3", "line break tab"),
        ("bell\x07 and \u202eoverride.ogg", "bell and override"),
        ("Песня — ★.m4a", "Песня — ★"),
        ("...", "song"),
        ("", "song"),
        (None, "song"),
        ("  spaced   out  .mp3", "spaced out"),
    ],
)
def test_safe_song_name(given: str | None, expected: str) -> None:
    assert safe_song_name(given) == expected


def test_safe_song_name_caps_the_length() -> None:
    name = safe_song_name("x" * 500 + ".mp3")
    assert name == "x" * MAX_SONG_NAME_CHARS


def test_planned_tracks_match_the_separation_library() -> None:
    from separation import plan_tracks

    assert planned_tracks([]) == ()
    for size in range(1, len(SOURCES) + 1):
        for pick in itertools.combinations(SOURCES, size):
            assert planned_tracks(pick) == plan_tracks(pick), pick
