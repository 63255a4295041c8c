"""The mixer's server side: how long a 6-track song takes to open (tracks fetched from the
Bot API and their peaks) and to render, with and without tempo and pitch.

Real parts: `demix web`'s server (tests.support.web.running_web_app) against the fake Bot
API over loopback and a real redis-server; the tracks are 6 generated mp3s (320 kbps) of
``--seconds`` (default 240). Each render is timed from POST to the mix arriving at the fake
Bot API (ffmpeg mix, rubberband where asked, peak, encode, upload).

    .venv/bin/python -m bench.mixer [--seconds 240] [--format mp3|flac]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from common.settings import Settings
from tests.support.fake_bot_api import TEST_TOKEN, FakeBotApi
from tests.support.redis_server import RedisServer
from tests.support.telegram_webapp import sign_init_data, webapp_user
from tests.support.web import deliver_mix, running_web_app

NAMES = ("drums", "bass", "vocals", "guitar", "piano", "other")
USER = 501


def make_track(path: Path, seconds: float, index: int, fmt: str) -> Path:
    """A generated stereo track: a tone and some noise, different per index."""
    codec = ["-c:a", "libmp3lame", "-b:a", "320k"] if fmt == "mp3" else ["-c:a", "flac"]
    source = (
        f"sine=frequency={110 * (index + 1)}:sample_rate=44100:duration={seconds},"
        "volume=0.2[s];"
        f"anoisesrc=color=pink:amplitude=0.05:sample_rate=44100:duration={seconds}:seed={index}[n];"
        "[s][n]amix=inputs=2:normalize=0,aformat=channel_layouts=stereo"
    )
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-filter_complex", source, *codec, str(path)],
        check=True,
    )
    return path


async def run(seconds: float, fmt: str, root: Path) -> dict[str, Any]:
    tracks = {
        name: make_track(root / f"{name}.{fmt}", seconds, i, fmt) for i, name in enumerate(NAMES)
    }
    redis = RedisServer(root / "redis").start()
    figures: dict[str, Any] = {"seconds": seconds, "format": fmt}
    try:
        with FakeBotApi(TEST_TOKEN) as api:
            settings = Settings(
                _env_file=None,  # type: ignore[call-arg]
                **api.settings_overrides(),
                redis_url=redis.url,
                db_path=root / "demix.sqlite3",
                cache_dir=root / "cache",
                data_dir=root / "data",
            )
            record = await deliver_mix(api, settings, tracks, user_id=USER, output_format=fmt)
            auth = {"Authorization": "tma " + sign_init_data(TEST_TOKEN, webapp_user(USER))}
            async with running_web_app(settings) as base, aiohttp.ClientSession() as http:
                for attempt in ("first", "cached"):
                    start = time.perf_counter()
                    async with http.get(f"{base}/api/mixes/{record.mix_id}", headers=auth) as r:
                        body = await r.json()
                    for track in body["tracks"]:
                        async with http.get(base + track["url"]) as r:
                            await r.read()
                    figures[f"open_{attempt}_s"] = round(time.perf_counter() - start, 2)
                for label, params in (
                    ("render_plain_s", {"levels_db": {"vocals": 3.0}, "muted": ["drums"]}),
                    ("render_tempo_s", {"tempo": 0.8}),
                    ("render_pitch_s", {"pitch_semitones": -2}),
                    ("render_tempo_pitch_s", {"tempo": 0.8, "pitch_semitones": -2}),
                ):
                    before = len(api.audio_messages(USER))
                    start = time.perf_counter()
                    async with http.post(
                        f"{base}/api/mixes/{record.mix_id}/render", headers=auth, json=params
                    ) as r:
                        assert r.status == 202, await r.text()
                    while len(api.audio_messages(USER)) == before:
                        await asyncio.sleep(0.05)
                    figures[label] = round(time.perf_counter() - start, 2)
    finally:
        redis.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=240.0)
    parser.add_argument("--format", choices=("mp3", "flac"), default="mp3")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-mixer-") as tmp:
        figures = asyncio.run(run(args.seconds, args.format, Path(tmp)))
    for key, value in figures.items():
        print(f"{key:22} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
