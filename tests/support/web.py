"""The mixer's web server for tests, and mixes to open in it (issue 18).

For the page's browser tests and the API tests alike::

    settings = service_settings()               # tests/conftest.py: fake Bot API, Redis, tmp DB
    tracks = make_tracks(tmp_path, ["drums", "bass", "vocals", "other"], seconds=4.0)
    record = await deliver_mix(fake_bot_api, settings, tracks, user_id=501)
    async with running_web_app(settings) as base_url:   # http://127.0.0.1:<free port>
        page_url = f"{base_url}/mix/{record.mix_id}" + launch_fragment(
            sign_init_data(TEST_TOKEN, webapp_user(501)))   # tests/support/telegram_webapp.py

- :func:`running_web_app`: ``demix web``'s real server (web.app.running) on a free port of
  127.0.0.1 in the test's event loop, talking to the fake Bot API and Redis of ``settings``.
- :func:`deliver_mix`: what a worker does for a job, without separating: uploads each track
  to the fake Bot API with sendAudio (as the bot), and stores the mix record (SQLite, the
  bot's copy, and Redis, the worker's; ``store=`` picks). Returns the record
  (``record.mix_id``; ``record.tracks[i].file_id``). The fake Bot API then serves the tracks
  to the web server through getFile, as Telegram does.
- :func:`make_tracks`: small distinct mp3 (or flac) tracks on disk (numpy), whose decoded
  sum is their "song"; :func:`decoded_tracks` gives them back as arrays.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from redis.asyncio import Redis

from common.mixes import REDIS_TTL_S, MixRecord, MixTrack, mix_id, redis_key
from common.settings import Settings
from storage import Database
from tests.support.audio import decode, music_like, write_audio
from tests.support.fake_bot_api import FakeBotApi
from web.app import running

SAMPLERATE = 44_100


@contextlib.asynccontextmanager
async def running_web_app(settings: Settings) -> AsyncIterator[str]:
    """``demix web`` on a free port of 127.0.0.1; yields its base URL (no trailing slash)."""
    async with running(settings.model_copy(update={"web_host": "127.0.0.1"}), port=0) as url:
        yield url


def make_tracks(
    folder: Path,
    names: Sequence[str] = ("drums", "bass", "vocals", "other"),
    *,
    seconds: float = 3.0,
    ext: str = "mp3",
    amplitude: float = 0.3,
) -> dict[str, Path]:
    """One distinct music-like track per name, ``<folder>/Test Song - <name>.<ext>``."""
    folder.mkdir(parents=True, exist_ok=True)
    tracks = {}
    for seed, name in enumerate(names):
        samples = music_like(seconds, SAMPLERATE, 2, seed=seed + 11) * (amplitude / 0.9)
        tracks[name] = write_audio(folder / f"Test Song - {name}.{ext}", samples, SAMPLERATE)
    return tracks


def decoded_tracks(tracks: Mapping[str, Path]) -> dict[str, np.ndarray]:
    """Each track decoded as ffmpeg plays it: float32 ``(2, n)`` at 44.1 kHz."""
    return {name: decode(path) for name, path in tracks.items()}


_deliveries = iter(range(10**6))


async def deliver_mix(
    api: FakeBotApi,
    settings: Settings,
    tracks: Mapping[str, Path | bytes],
    *,
    user_id: int = 501,
    chat_id: int | None = None,
    song_name: str = "Test Song",
    artist: str | None = "Test Artist",
    output_format: str = "mp3",
    language: str = "en",
    duration_s: float | None = None,
    store: Iterable[str] = ("sqlite", "redis"),
) -> MixRecord:
    """Upload ``tracks`` (name -> file or bytes) to ``user_id``'s chat as the bot, and store
    their mix record where ``store`` says; return it."""
    chat = user_id if chat_id is None else chat_id
    token = settings.require_token()
    delivered: list[MixTrack] = []
    # The chat exists once its user has written in it (the song, in real life).
    api.send_text(
        user_id,
        "my song",
        chat_id=None if chat == user_id else chat,
        chat_type="private" if chat == user_id else "group",
    )
    async with api.bot() as bot:
        for name, content in tracks.items():
            data = content.read_bytes() if isinstance(content, Path) else content
            message = await bot.send_audio(
                chat, data, filename=f"{song_name} - {name}.{output_format}", title=name
            )
            audio = message.audio or message.document
            assert audio is not None, "the fake Bot API answered sendAudio without a file"
            delivered.append(MixTrack(name, audio.file_id, audio.file_size))
    number = next(_deliveries)
    record = MixRecord.from_dict(
        {
            "mix_id": mix_id(token, f"test-delivery:{number}:{time.time_ns()}"),
            "job_id": f"sep:{900000 + number}:{'+'.join(tracks)}",
            "request_id": 900000 + number,
            "user_id": user_id,
            "chat_id": chat,
            "song_name": song_name,
            "artist": artist,
            "output_format": output_format,
            "language": language,
            "tracks": [track.__dict__ for track in delivered],
            "duration_s": duration_s,
            "created_at": time.time(),
        }
    )
    await store_mix(settings, record, store)
    return record


async def store_mix(settings: Settings, record: MixRecord, store: Iterable[str]) -> None:
    """Write ``record`` where the worker (``redis``) and the bot (``sqlite``) would."""
    where = set(store)
    if "sqlite" in where:
        async with await Database.open(settings.db_path) as db:
            await db.add_mix(
                record.mix_id,
                job_id=record.job_id,
                user_id=record.user_id,
                chat_id=record.chat_id,
                record=record.to_json(),
                created_at=record.created_at,
            )
    if "redis" in where:
        redis: Any = Redis.from_url(settings.redis_url)
        try:
            await redis.set(redis_key(record.mix_id), record.to_json(), ex=REDIS_TTL_S)
        finally:
            await redis.aclose()
