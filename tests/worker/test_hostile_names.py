"""A song whose file name and tags are hostile, served by the real worker end to end: the
tracks' file names, titles and tags are clean and bounded, and Telegram took every message."""

from __future__ import annotations

import json
import subprocess
import unicodedata
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from common.settings import Settings
from separation import EnsembleSeparator
from separation.naming import (
    ELLIPSIS,
    MAX_SONG_NAME_BYTES,
    MAX_SONG_NAME_CHARS,
    MAX_TAG_CHARS,
    safe_song_name,
)
from tests.support.audio import make_song
from tests.support.fake_bot_api import FakeBotApi
from tests.support.workers import run_worker_burst
from tests.worker.conftest import rating_messages, status_texts, submit

# Directories, markup, controls, bidi overrides and isolates, zero-width characters, three
# scripts and emoji, hundreds of characters. (No NUL: a command line cannot carry one.)
# From the job's output folder (data/work/job-*/out), "../../../.." is the test's tmp_path.
HOSTILE_FILE_NAME = (
    "../../../../<b>Tom & Jerry&lt;b&gt; \u202eevil\u202c\x1b[31m\r\n\u200b"
    + "Ё東ع🎸" * 90
    + ".mp3"
)
HOSTILE_TITLE = "<i>\u2066Title\u2069</i>\n" + "Ж" * 5000
HOSTILE_ARTIST = "DJ <b>&amp;</b> \u202eX\u202c\x1b[0m\r\n" + "🎛" * 5000


def file_tags(path: Path) -> dict[str, str]:
    """The tags stored in ``path``, as ffprobe reads them (no cleaning of ours)."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format_tags", "-of", "json", str(path)],
        capture_output=True,
        check=True,
    )
    tags = json.loads(result.stdout)["format"]["tags"]
    return {str(key).lower(): str(value) for key, value in tags.items()}


def assert_clean(text: str) -> None:
    assert all(unicodedata.category(ch) not in {"Cc", "Cf", "Cs"} for ch in text), repr(text)


@pytest.mark.parametrize(
    "song_name",
    # The second is an old or forged payload: the worker's own file names stay safe.
    [safe_song_name(HOSTILE_FILE_NAME), HOSTILE_FILE_NAME],
    ids=["named-by-the-bot", "raw-in-the-payload"],
)
async def test_hostile_names_and_tags_give_clean_bounded_tracks(
    song_name: str,
    fake_bot_api: FakeBotApi,
    settings: Settings,
    pool: ArqRedis,
    separator: EnsembleSeparator,
    tmp_path: Path,
) -> None:
    song = make_song(tmp_path / "in.mp3", title=HOSTILE_TITLE, artist=HOSTILE_ARTIST)
    # A document brings no performer: the worker falls back on the file's own artist tag.
    submitted = await submit(
        fake_bot_api,
        pool,
        song,
        ("vocals",),
        send_as="document",
        file_name=HOSTILE_FILE_NAME,
        song_name=song_name,
        artist=None,
    )
    worker = await run_worker_burst(settings, separator)
    assert (worker.jobs_complete, worker.jobs_failed) == (1, 0)

    audios = fake_bot_api.audio_messages(submitted.job.chat_id)
    assert len(audios) == 2
    for message, track in zip(audios, ("vocals", "no_vocals"), strict=True):
        assert message.file is not None and message.data is not None
        file_name = message.file_name or ""
        assert file_name.startswith("b Tom & Jerry&lt;b&gt; evil[31m Ё東ع🎸")
        assert file_name.endswith(f"{ELLIPSIS} - {track}.mp3")
        name = file_name.removesuffix(f" - {track}.mp3")
        assert len(name) <= MAX_SONG_NAME_CHARS and len(name.encode()) <= MAX_SONG_NAME_BYTES
        assert "/" not in file_name and "\\" not in file_name
        assert_clean(file_name)
        title = message.file.title or ""
        assert title.endswith(f"{ELLIPSIS} ({track})") and "Tom & Jerry&lt;b&gt; evil" in title
        assert len(title) <= MAX_SONG_NAME_CHARS + len(f" ({track})")
        assert_clean(title)

        # What a player (and Telegram, given no performer) reads from the file's own tags.
        delivered = tmp_path / f"{track}.mp3"
        delivered.write_bytes(message.data)
        tags = file_tags(delivered)
        assert tags["title"] == title
        kept = "DJ <b>&amp;</b> X[0m "  # the ESC, the override and the line break are gone
        assert tags["artist"] == kept + "🎛" * (MAX_TAG_CHARS - 1 - len(kept)) + ELLIPSIS

    # Every message about the job was accepted: status edits up to done, the rating.
    final = status_texts(fake_bot_api, submitted)[-1]
    assert final is not None and final.startswith("✅ Done")
    assert len(rating_messages(fake_bot_api, submitted.job.chat_id)) == 1
    refused = [call for call in fake_bot_api.calls() if not call.ok]
    assert refused == []
    # Nothing was written outside the job's folder, and that is gone after the job.
    assert not [p for p in tmp_path.rglob("*Jerry*")]
    assert not [p for p in (settings.data_dir / "work").rglob("*") if p.is_file()]
