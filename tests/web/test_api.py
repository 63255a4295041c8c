"""`demix web`'s API and files: the mix with playable track URLs (Range) and peaks, a track
the Bot API will not hand over, parameter and size checks, JSON errors, security headers."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from common.mixes import MixRecord, MixTrack, redis_key
from common.settings import Settings
from tests.support.fake_bot_api import MB, FakeBotApi
from tests.support.waiting import async_wait_until
from tests.support.web import running_web_app, store_mix
from tests.web.conftest import OWNER, TRACK_NAMES, tma
from web import app as web_app

CSP = web_app.SECURITY_HEADERS["Content-Security-Policy"]


def assert_secure(response: aiohttp.ClientResponse) -> None:
    for name, value in web_app.SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "frame-ancestors https://web.telegram.org" in CSP and "script-src 'self'" in CSP


async def test_a_mix_gives_its_tracks_in_order_with_urls_and_peaks(
    base_url: str, mix: MixRecord, http: aiohttp.ClientSession, fake_bot_api: FakeBotApi
) -> None:
    async with http.get(f"{base_url}/api/mixes/{mix.mix_id}", headers=tma()) as response:
        assert response.status == 200
        assert_secure(response)
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
    assert (body["song"], body["format"], body["language"]) == ("Test Song", "mp3", "en")
    assert body["duration_s"] == pytest.approx(3.0, abs=0.1)
    assert [track["name"] for track in body["tracks"]] == list(TRACK_NAMES)
    text = json.dumps(body)
    # Nothing of Telegram's reaches the page: no token, file id or Bot API URL.
    assert "FAKE-" not in text and "bot123456" not in text and "file/bot" not in text
    for track, delivered in zip(body["tracks"], mix.tracks, strict=True):
        assert track["error"] is None
        assert track["url"].startswith(f"/api/mixes/{mix.mix_id}/tracks/{track['name']}?k=")
        peaks = track["peaks"]
        assert 500 <= len(peaks) <= 600 and all(0.0 <= p <= 1.0 for p in peaks)
        # The tracks are ~0.3 full scale: so are their peaks.
        assert 0.15 < max(peaks) < 0.5
        stored = fake_bot_api.file(delivered.file_id)
        assert stored is not None
        # The whole track, as delivered, and any byte range of it.
        async with http.get(base_url + track["url"]) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "audio/mpeg"
            assert response.headers["Accept-Ranges"] == "bytes"
            assert_secure(response)
            assert await response.read() == stored.data
        async with http.get(base_url + track["url"], headers={"Range": "bytes=100-1099"}) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 100-1099/{len(stored.data)}"
            assert await r.read() == stored.data[100:1100]
    # Each track was fetched from the Bot API once, then served from the disk cache.
    again = await http.get(f"{base_url}/api/mixes/{mix.mix_id}", headers=tma())
    assert again.status == 200
    assert sorted(fake_bot_api.downloads()) == sorted(t.file_id for t in mix.tracks)


async def test_a_track_url_is_good_for_its_own_track_only(
    base_url: str, mix: MixRecord, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{base_url}/api/mixes/{mix.mix_id}", headers=tma()) as response:
        body = await response.json()
    drums = body["tracks"][0]["url"]
    for url in (
        drums.replace("/tracks/drums", "/tracks/bass"),
        drums.split("?")[0],
        drums + "x",
        drums.replace(mix.mix_id, "A" * 22),
    ):
        async with http.get(base_url + url) as response:
            assert response.status == 401, url
            assert "error" in await response.json()


async def test_a_track_over_20_mb_is_named_with_its_reason_and_nothing_hangs(
    base_url: str,
    mix: MixRecord,
    http: aiohttp.ClientSession,
    fake_bot_api: FakeBotApi,
    settings: Settings,
    track_files: dict[str, Path],
) -> None:
    # A file Telegram reports at 25 MB: getFile refuses it ("file is too big").
    big = fake_bot_api.send_audio(OWNER, track_files["other"], declared_size=25 * MB)
    assert big.file is not None
    record = dataclasses.replace(
        mix,
        mix_id="B" * 22,
        tracks=(*mix.tracks[:3], MixTrack("other", big.file.file_id, 25 * MB)),
    )
    await store_mix(settings, record, ["sqlite"])
    async with asyncio.timeout(30):
        async with http.get(f"{base_url}/api/mixes/{record.mix_id}", headers=tma()) as response:
            assert response.status == 200
            body = await response.json()
    other = body["tracks"][3]
    assert (other["name"], other["url"], other["peaks"]) == ("other", None, None)
    assert "20 MB" in other["error"]
    assert all(track["url"] for track in body["tracks"][:3])

    # A render that needs it fails in the chat with the reason; one that mutes it works.
    async with http.post(
        f"{base_url}/api/mixes/{record.mix_id}/render", headers=tma(), json={}
    ) as response:
        assert response.status == 202

    def told() -> bool:
        return any(
            m.text and "20 MB" in m.text for m in fake_bot_api.chat_messages(OWNER) if m.from_bot
        )

    await async_wait_until(told, timeout=30, what="the failed render told in the chat")
    async with http.post(
        f"{base_url}/api/mixes/{record.mix_id}/render", headers=tma(), json={"muted": ["other"]}
    ) as response:
        assert response.status == 202
    await async_wait_until(
        lambda: any(
            m.file_name == "Test Song - mix.mp3" for m in fake_bot_api.audio_messages(OWNER)
        ),
        timeout=30,
        what="the mix without the big track",
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"levels_db": {"vocals": 12.5}}, 400),
        ({"levels_db": {"vocals": -60.5}}, 400),
        ({"levels_db": {"vocals": "loud"}}, 400),
        ({"levels_db": {"vocals": True}}, 400),
        ({"levels_db": {"kazoo": 1.0}}, 400),
        ({"levels_db": ["vocals"]}, 400),
        ({"tempo": 0.49}, 400),
        ({"tempo": 1.51}, 400),
        ({"tempo": "fast"}, 400),
        ({"pitch_semitones": 13}, 400),
        ({"pitch_semitones": -13}, 400),
        ({"pitch_semitones": 1.5}, 400),
        ({"muted": ["kazoo"]}, 400),
        ({"muted": "drums"}, 400),
        ({"solo": ["vocals", 3]}, 400),
        ({"volume": 3}, 400),
        ([1, 2], 400),
        ({"muted": list(TRACK_NAMES)}, 400),  # nothing left to mix
        ({"solo": ["vocals"], "muted": ["vocals"]}, 400),
    ],
)
async def test_bad_render_parameters_get_400_with_a_json_error(
    base_url: str, mix: MixRecord, http: aiohttp.ClientSession, body: object, status: int
) -> None:
    url = f"{base_url}/api/mixes/{mix.mix_id}/render"
    async with http.post(url, headers=tma(), json=body) as response:
        assert response.status == status
        error = (await response.json())["error"]
        assert isinstance(error, str) and error and "Traceback" not in error


async def test_bodies_that_are_not_json_or_too_large_get_json_errors(
    base_url: str, mix: MixRecord, http: aiohttp.ClientSession, fake_bot_api: FakeBotApi
) -> None:
    url = f"{base_url}/api/mixes/{mix.mix_id}/render"
    for data, status in (
        (b"{not json", 400),
        (b'{"tempo": NaN}', 400),
        (b'{"tempo": Infinity}', 400),
        (b"\xff\xfe", 400),
        (b"{" + b" " * (64 * 1024) + b"}", 413),
    ):
        headers = {**tma(), "Content-Type": "application/json"}
        async with http.post(url, headers=headers, data=data) as response:
            assert response.status == status, data[:20]
            assert_secure(response)
            assert "error" in await response.json()

    # Chunked (no Content-Length) and too large: 413 too.
    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(40):
            yield b" " * 1024

    async with http.post(url, headers=tma(), data=chunks()) as response:
        assert response.status == 413
        assert "error" in await response.json()
    assert fake_bot_api.calls("sendAudio")[len(mix.tracks) :] == []


async def test_a_body_in_several_packets_is_read_whole(
    base_url: str, mix: MixRecord, http: aiohttp.ClientSession
) -> None:
    body = b'{"levels_db": {"vocals": 3.0}, "muted": ["drums"], "tempo": 1.75}'

    async def slowly():  # type: ignore[no-untyped-def]
        for start in range(0, len(body), 16):
            yield body[start : start + 16]
            await asyncio.sleep(0.02)  # paced like a slow network: each piece on its own

    url = f"{base_url}/api/mixes/{mix.mix_id}/render"
    async with http.post(url, headers=tma(), data=slowly()) as response:
        assert response.status == 400
        # The whole object was read: the tempo (last) is what is refused, not the JSON.
        assert "tempo" in (await response.json())["error"]


async def test_ids_and_paths_are_checked_and_errors_are_json(
    base_url: str, mix: MixRecord, http: aiohttp.ClientSession, settings: Settings
) -> None:
    for path in (
        "/api/mixes/short",
        "/api/mixes/" + "A" * 22,  # the shape of an id, but no mix
        "/api/mixes/../../etc/passwd",
        "/mix/not-an-id",
        "/static/../app.py",
        "/static/.hidden",
        "/nothing/here",
    ):
        async with http.get(base_url + path, headers=tma()) as response:
            assert response.status == 404, path
            assert_secure(response)
            assert "error" in await response.json()
    # A record that cannot be read is a 500 with a JSON error, not a traceback.
    redis = Redis.from_url(settings.redis_url)
    await redis.set(redis_key("C" * 22), b"{broken")
    await redis.aclose()
    async with http.get(f"{base_url}/api/mixes/{'C' * 22}", headers=tma()) as response:
        assert response.status == 500
        body = await response.json()
        assert set(body) == {"error"} and "Traceback" not in body["error"]
    async with http.get(f"{base_url}/healthz") as response:
        assert response.status == 200 and await response.json() == {"ok": True}
        assert_secure(response)


async def test_the_page_is_the_same_file_for_every_mix_id(
    settings: Settings,
    mix: MixRecord,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The page engineer's files are not needed: a stand-in folder is served.
    static = tmp_path / "static"
    static.mkdir()
    (static / "mixer.html").write_text("<!doctype html><title>mixer</title>")
    (static / "mixer.js").write_text("console.log(1)")
    monkeypatch.setattr(web_app, "STATIC_DIR", static)
    async with running_web_app(settings) as base:
        for mix_id in (mix.mix_id, "Z" * 22):
            async with http.get(f"{base}/mix/{mix_id}") as response:
                assert response.status == 200
                assert response.headers["Content-Type"].startswith("text/html")
                assert_secure(response)
                assert "<title>mixer</title>" in await response.text()
        async with http.get(f"{base}/static/mixer.js") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/javascript")
            assert_secure(response)
