"""Song and track names: user file names and tags made safe, once, for every process."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest

from separation.naming import (
    ELLIPSIS,
    MAX_SONG_NAME_BYTES,
    MAX_SONG_NAME_CHARS,
    MAX_TAG_CHARS,
    clean_text,
    safe_song_name,
    safe_tag,
    song_name_from_tags,
    track_file_name,
    track_title,
)

# What must never survive into a name, a title or a tag: controls (NUL, CR, LF, ESC, DEL,
# C1), bidi embeddings, overrides and isolates, zero-width characters, BOM, tag characters.
INVISIBLE = (
    "\x00\x07\t\n\r\x1b\x7f\x85\x9b"
    "\u061c\u200b\u200c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2066\u2067\u2068\u2069\ufeff\U000e0041"
)


def assert_visible_one_line(text: str) -> None:
    for ch in text:
        assert ch == "\u200d" or unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Cn"}, (
            f"{ch!r} survived in {text!r}"
        )
    assert text == text.strip() and "  " not in text


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("My Song.mp3", "My Song"),
        ("live.at.wembley.flac", "live.at.wembley"),
        ("../../etc/passwd", "passwd"),
        ("/etc/passwd", "passwd"),
        ("C:\\Users\\me\\track.wav", "track"),
        ("dir/..", "song"),
        ('a<b>c:d"e|f?g*h.mp3', "a b c d e f g h"),
        ("<b>bold & <i>more.mp3", "b bold & i more"),
        ("<b>bold</b>.mp3", "b"),  # the "/" of an end tag starts a new path part
        ("Tom &amp; Jerry &lt;live&gt;.mp3", "Tom &amp; Jerry &lt;live&gt;"),
        ("..hidden.mp3", "hidden"),
        ("tab\there\nnewline\r.mp3", "tab here newline"),
        ("bell\x07 and \u202eoverride.ogg", "bell and override"),
        ("\u2066isolated\u2069 \u200bzero\u200cwidth\ufeff.mp3", "isolated zerowidth"),
        ("\x1b[31mred\x1b[0m.mp3", "[31mred[0m"),
        ("nul\x00byte.mp3", "nulbyte"),
        ("lone \ud800surrogate.mp3", "lone surrogate"),
        ("Ёлка — ромашка.mp3", "Ёлка — ромашка"),
        ("東京事変 - 群青日和.flac", "東京事変 - 群青日和"),
        ("فيروز - نسم علينا الهوى.mp3", "فيروز - نسم علينا الهوى"),
        ("🎸 riff 🔥.mp3", "🎸 riff 🔥"),
        ("👨\u200d👩\u200d👧 family.mp3", "👨\u200d👩\u200d👧 family"),
        ("e\u0301clair.mp3", "éclair"),  # NFC: one character, as file systems store it
        ("  spaced   out  .mp3", "spaced out"),
        ("", "song"),
        (None, "song"),
        ("....mp3", "song"),
        ("...", "song"),
        ("..", "song"),
        (". . .", "song"),
        ("/", "song"),
        ("\u202e\u200b\x00..", "song"),
        ("CON.mp3", "CON"),  # reserved on Windows only; the worker writes on Linux
    ],
)
def test_safe_song_name(given: str | None, expected: str) -> None:
    name = safe_song_name(given)
    assert name == expected
    assert_visible_one_line(name)


@pytest.mark.parametrize(
    "given",
    [
        "x" * 500 + ".mp3",
        "<script>" * 60 + ".mp3",
        "🎸" * 300 + ".mp3",
        "Ж" * 150 + ".mp3",
        "a " * 200,
        ("\u202e" + "y" * 5) * 100,
    ],
    ids=["ascii", "markup", "emoji", "cyrillic", "spaces", "overrides"],
)
def test_long_names_are_cut_visibly_within_both_caps(given: str) -> None:
    name = safe_song_name(given)
    assert len(name) <= MAX_SONG_NAME_CHARS and len(name.encode()) <= MAX_SONG_NAME_BYTES
    assert name.endswith(ELLIPSIS) and not name.endswith(" " + ELLIPSIS)
    assert_visible_one_line(name)
    # The longest track file name still fits a file system's 255-byte limit.
    assert len(track_file_name(name, "no_vocals", "flac").encode()) <= 255


def test_a_cut_keeps_whole_characters_up_to_the_byte_cap() -> None:
    name = safe_song_name("🎸" * 300 + ".mp3")
    guitars = (MAX_SONG_NAME_BYTES - len(ELLIPSIS.encode())) // len("🎸".encode())
    assert name == "🎸" * guitars + ELLIPSIS
    assert safe_song_name("x" * 500) == "x" * (MAX_SONG_NAME_CHARS - 1) + ELLIPSIS


def test_a_name_at_the_cap_is_left_whole() -> None:
    assert safe_song_name("x" * MAX_SONG_NAME_CHARS + ".mp3") == "x" * MAX_SONG_NAME_CHARS


@pytest.mark.parametrize(
    "song_name",
    [
        "../../../../etc/cron.d/evil",
        "/absolute/path",
        "..",
        ".",
        "",
        "   ",
        "\u202e\x00",
        "a\\..\\..\\b",
        "x" * 400,
        "🎸" * 300,
    ],
)
def test_track_files_stay_in_their_folder(song_name: str, tmp_path: Path) -> None:
    job_dir = tmp_path / "job" / "out"
    job_dir.mkdir(parents=True)
    for track in ("vocals", "no_vocals"):
        path = job_dir / track_file_name(song_name, track, "flac")
        path.write_bytes(b"x")  # the file system takes the name as it is
        assert path.resolve().parent == job_dir.resolve()
        assert path.name.endswith(f" - {track}.flac") and not path.name.startswith(".")
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == sorted(
        p.name for p in job_dir.iterdir()
    )


def test_track_file_name_leaves_a_safe_name_as_it_is() -> None:
    for given in ("live.at.wembley.flac", "Tom &amp; Jerry", "🎸" * 300, "x" * 500):
        name = safe_song_name(given)
        assert track_file_name(name, "rest") == f"{name} - rest.mp3"


@pytest.mark.parametrize(("track", "ext"), [("../vocals", "mp3"), ("vocals", "mp3/x"), ("", "")])
def test_track_file_name_refuses_what_is_not_ours(track: str, ext: str) -> None:
    with pytest.raises(ValueError):
        track_file_name("Song", track, ext)


def test_track_names() -> None:
    assert track_file_name("Song", "no_vocals") == "Song - no_vocals.mp3"
    assert track_title("Song", "rest") == "Song (rest)"
    assert track_title("\u202eSong\x1b\n", "rest") == "Song (rest)"
    long_title = track_title("x" * 5000, "vocals")
    assert long_title == "x" * (MAX_SONG_NAME_CHARS - 1) + ELLIPSIS + " (vocals)"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        ("", None),
        ("\u202e\u200b\x00 \n", None),
        ("  The\tArtist\r\n", "The Artist"),
        ("AC/DC", "AC/DC"),  # a tag is text, not a path: shown as written
        ("<b>Bold</b> & Co", "<b>Bold</b> & Co"),  # escaped where it meets markup
        ("Земфира", "Земфира"),
        ("坂本龍一", "坂本龍一"),
        ("أم كلثوم", "أم كلثوم"),
        ("🎹 Keys\u202e 🎹", "🎹 Keys 🎹"),
        ("a" * 5000, "a" * (MAX_TAG_CHARS - 1) + ELLIPSIS),
    ],
)
def test_safe_tag(given: str | None, expected: str | None) -> None:
    assert safe_tag(given) == expected


def test_clean_text_bounds_any_length_and_script() -> None:
    for text in ("ü" * 10_000, "🎸" * 10_000, (INVISIBLE + "z") * 1000):
        cleaned = clean_text(text)
        assert 0 < len(cleaned) <= MAX_TAG_CHARS
        assert_visible_one_line(cleaned)
    assert clean_text(INVISIBLE) == ""
    assert clean_text("abc", max_chars=2) == "a" + ELLIPSIS


@pytest.mark.parametrize(
    ("title", "artist", "expected"),
    [
        ("Back in Black", "AC/DC", "AC DC - Back in Black"),
        ("Greatest Hits Vol.2", None, "Greatest Hits Vol.2"),  # no extension to drop
        ("../../..", None, "song"),
        (None, "Artist only", "song"),
        ("<Live>\u202e", "\x1bX", "X - Live"),
    ],
)
def test_song_name_from_tags(title: str | None, artist: str | None, expected: str) -> None:
    assert song_name_from_tags(title, artist) == expected
