"""Song and track names: user file names made safe, once, for every process."""

from __future__ import annotations

import pytest

from separation.naming import (
    MAX_SONG_NAME_BYTES,
    MAX_SONG_NAME_CHARS,
    safe_song_name,
    track_file_name,
    track_title,
)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("My Song.mp3", "My Song"),
        ("live.at.wembley.flac", "live.at.wembley"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\track.wav", "track"),
        ('a<b>c:d"e|f?g*h.mp3', "a b c d e f g h"),
        ("..hidden.mp3", "hidden"),
        ("tab\there\nnewline.mp3", "tab here newline"),
        ("bell\x07 and \u202eoverride.ogg", "bell and override"),
        ("Ёлка — ромашка.mp3", "Ёлка — ромашка"),
        ("  spaced   out  .mp3", "spaced out"),
        ("", "song"),
        (None, "song"),
        ("....mp3", "song"),
        ("...", "song"),
        ("/", "song"),
    ],
)
def test_safe_song_name(given: str | None, expected: str) -> None:
    assert safe_song_name(given) == expected


def test_length_is_capped_in_characters() -> None:
    assert safe_song_name("x" * 500 + ".mp3") == "x" * MAX_SONG_NAME_CHARS


def test_length_is_capped_in_bytes_without_splitting_a_character() -> None:
    name = safe_song_name("🎸" * 300 + ".mp3")
    assert name == "🎸" * (MAX_SONG_NAME_BYTES // len("🎸".encode()))
    # The longest track file name still fits a file system's 255-byte limit.
    assert len(track_file_name(name, "no_vocals", "flac").encode()) <= 255


def test_track_names() -> None:
    assert track_file_name("Song", "no_vocals") == "Song - no_vocals.mp3"
    assert track_title("Song", "rest") == "Song (rest)"
