"""Rendering a mix (web/render.py through POST /api/mixes/<id>/render): the audio the fake Bot
API receives is Σ gᵢ·trackᵢ of the delivered tracks, the song itself at 0 dB, turned down as a
whole (and said so) instead of clipping, duration / tempo long; one render per user at a time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from common.mixes import MixRecord
from common.settings import Settings
from tests.support.audio import decode
from tests.support.fake_bot_api import ChatMessage, FakeBotApi
from tests.support.waiting import async_wait_until
from tests.support.web import decoded_tracks, deliver_mix, make_tracks
from tests.web.conftest import OWNER, TRACK_NAMES, tma
from web.render import CEILING, MixParams, filter_graph


@pytest.fixture(scope="module")
def flac_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tracks(tmp_path_factory.mktemp("flac"), TRACK_NAMES, seconds=3.0, ext="flac")


@pytest.fixture(scope="module")
def flac_decoded(flac_files: dict[str, Path]) -> dict[str, np.ndarray]:
    return decoded_tracks(flac_files)


@pytest.fixture
async def flac_mix(
    fake_bot_api: FakeBotApi, settings: Settings, flac_files: dict[str, Path]
) -> MixRecord:
    return await deliver_mix(
        fake_bot_api, settings, flac_files, user_id=OWNER, output_format="flac"
    )


async def render(
    http: aiohttp.ClientSession,
    base_url: str,
    api: FakeBotApi,
    mix: MixRecord,
    body: Mapping[str, Any],
    tmp_path: Path,
) -> tuple[ChatMessage, np.ndarray]:
    """POST the render, wait for the mix in the chat; the message and its decoded audio."""
    before = len(api.audio_messages(mix.chat_id))
    async with http.post(
        f"{base_url}/api/mixes/{mix.mix_id}/render", headers=tma(), json=body
    ) as response:
        assert response.status == 202, await response.text()
        assert await response.json() == {"status": "accepted"}
    messages = await async_wait_until(
        lambda: api.audio_messages(mix.chat_id)[before:], timeout=60, what="the mix in the chat"
    )
    [message] = messages
    assert message.data is not None and message.file_name is not None
    path = tmp_path / message.file_name
    path.write_bytes(message.data)
    return message, decode(path)


def expected(tracks: Mapping[str, np.ndarray], gains: Mapping[str, float]) -> np.ndarray:
    return np.sum([gains[name] * samples for name, samples in tracks.items()], axis=0)


def test_the_gains_follow_levels_mute_and_solo() -> None:
    names = ("drums", "bass", "vocals")
    params = MixParams({"vocals": 6.0, "bass": -6.0}, muted=("drums",))
    gains = params.gains(names)
    assert gains["drums"] == 0.0
    assert gains["vocals"] == pytest.approx(10 ** (6 / 20))
    assert gains["bass"] == pytest.approx(10 ** (-6 / 20))
    solo = MixParams({}, solo=("bass",)).gains(names)
    assert solo == {"drums": 0.0, "bass": 1.0, "vocals": 0.0}
    graph = filter_graph([1.0, 0.5], 1.0, 0)
    assert "amix=inputs=2:normalize=0" in graph and "rubberband" not in graph
    assert "rubberband=tempo=0.800000:pitch=0.9438743127" in filter_graph([1.0], 0.8, -1)


async def test_a_flac_mix_is_the_weighted_sum_of_the_delivered_tracks(
    base_url: str,
    flac_mix: MixRecord,
    flac_decoded: dict[str, np.ndarray],
    http: aiohttp.ClientSession,
    fake_bot_api: FakeBotApi,
    tmp_path: Path,
) -> None:
    body = {"levels_db": {"vocals": 3.0, "bass": -6.0}, "muted": ["drums"]}
    message, mixed = await render(http, base_url, fake_bot_api, flac_mix, body, tmp_path)
    assert message.file_name == "Test Song - mix.flac"
    assert message.caption == "🎚 no drums, bass −6 dB, vocals +3 dB"
    gains = {"drums": 0.0, "bass": 10 ** (-6 / 20), "vocals": 10 ** (3 / 20), "other": 1.0}
    want = expected(flac_decoded, gains)
    assert mixed.shape == want.shape
    # 24-bit FLAC in and out: equal to quantisation noise.
    assert np.max(np.abs(mixed - want)) < 1e-4

    # Every level at 0 dB and nothing muted: the sum of the tracks (the song itself).
    _, plain = await render(http, base_url, fake_bot_api, flac_mix, {}, tmp_path)
    assert np.max(np.abs(plain - expected(flac_decoded, dict.fromkeys(TRACK_NAMES, 1.0)))) < 1e-4
    # Solo: only the soloed tracks.
    message, solo = await render(
        http, base_url, fake_bot_api, flac_mix, {"solo": ["vocals", "bass"]}, tmp_path
    )
    assert np.max(np.abs(solo - flac_decoded["vocals"] - flac_decoded["bass"])) < 1e-4
    assert message.caption == "🎚 only bass, vocals"


async def test_an_mp3_mix_matches_the_sum_within_mp3_coding_noise(
    base_url: str,
    mix: MixRecord,
    track_files: dict[str, Path],
    http: aiohttp.ClientSession,
    fake_bot_api: FakeBotApi,
    tmp_path: Path,
) -> None:
    tracks = decoded_tracks(track_files)
    message, mixed = await render(
        http, base_url, fake_bot_api, mix, {"levels_db": {"drums": -3.0}}, tmp_path
    )
    assert message.file_name == "Test Song - mix.mp3"
    assert message.file is not None and message.file.title == "Test Song (mix)"
    want = expected(tracks, {**dict.fromkeys(TRACK_NAMES, 1.0), "drums": 10 ** (-3 / 20)})
    assert mixed.shape[1] == pytest.approx(want.shape[1], abs=1152)
    n = min(mixed.shape[1], want.shape[1])
    error = mixed[:, :n] - want[:, :n]
    snr_db = 10 * math.log10(float(np.sum(want[:, :n] ** 2) / np.sum(error**2)))
    assert snr_db > 25, f"the mix is the sum at only {snr_db:.1f} dB SNR (sample-aligned?)"


async def test_a_mix_too_loud_is_turned_down_as_a_whole_and_the_caption_says_by_how_much(
    base_url: str,
    flac_mix: MixRecord,
    flac_decoded: dict[str, np.ndarray],
    http: aiohttp.ClientSession,
    fake_bot_api: FakeBotApi,
    tmp_path: Path,
) -> None:
    levels = dict.fromkeys(TRACK_NAMES, 12.0)
    message, mixed = await render(
        http, base_url, fake_bot_api, flac_mix, {"levels_db": levels}, tmp_path
    )
    loud = expected(flac_decoded, dict.fromkeys(TRACK_NAMES, 10 ** (12 / 20)))
    peak = float(np.max(np.abs(loud)))
    assert peak > 1.5, "the test's mix would clip"
    lowered_db = 20 * math.log10(peak / CEILING)
    assert f"turned down {lowered_db:.1f} dB" in (message.caption or "")
    assert np.max(np.abs(mixed)) <= 1.0
    # Scaled as a whole: the same mix, only quieter (nothing clipped).
    assert np.max(np.abs(mixed - loud * (CEILING / peak))) < 1e-4


async def test_tempo_makes_the_mix_last_duration_over_tempo_and_pitch_keeps_it(
    base_url: str,
    flac_mix: MixRecord,
    http: aiohttp.ClientSession,
    fake_bot_api: FakeBotApi,
    tmp_path: Path,
) -> None:
    message, slow = await render(http, base_url, fake_bot_api, flac_mix, {"tempo": 0.8}, tmp_path)
    assert slow.shape[1] / 44_100 == pytest.approx(3.0 / 0.8, abs=0.05)
    assert message.caption == "🎚 80 % tempo"
    message, lower = await render(
        http, base_url, fake_bot_api, flac_mix, {"pitch_semitones": -2}, tmp_path
    )
    assert lower.shape[1] / 44_100 == pytest.approx(3.0, abs=0.05)
    assert message.caption == "🎚 −2 semitones"


async def test_a_second_render_while_one_is_under_way_gets_409(
    base_url: str,
    flac_mix: MixRecord,
    http: aiohttp.ClientSession,
    fake_bot_api: FakeBotApi,
) -> None:
    # The first render holds the user's turn until Telegram has taken the mix (slow here).
    fake_bot_api.set_latency("sendAudio", 1.5)
    url = f"{base_url}/api/mixes/{flac_mix.mix_id}/render"
    async with http.post(url, headers=tma(), json={}) as first:
        assert first.status == 202
    async with http.post(url, headers=tma(), json={"tempo": 0.9}) as second:
        assert second.status == 409
        assert "already" in (await second.json())["error"]
    before = len(flac_mix.tracks)
    await async_wait_until(
        lambda: len(fake_bot_api.audio_messages(OWNER)) == before + 1, timeout=30
    )
    fake_bot_api.set_latency("sendAudio", 0)
    # Once it is sent, the next one is accepted.
    async with http.post(url, headers=tma(), json={"tempo": 0.9}) as third:
        assert third.status == 202
    await async_wait_until(
        lambda: len(fake_bot_api.audio_messages(OWNER)) == before + 2, timeout=30
    )


async def test_the_caption_speaks_russian_for_a_russian_mix(
    base_url: str,
    fake_bot_api: FakeBotApi,
    settings: Settings,
    flac_files: dict[str, Path],
    http: aiohttp.ClientSession,
    tmp_path: Path,
) -> None:
    record = await deliver_mix(
        fake_bot_api, settings, flac_files, user_id=OWNER, output_format="flac", language="ru"
    )
    message, _ = await render(
        http, base_url, fake_bot_api, record, {"muted": ["drums"], "tempo": 0.8}, tmp_path
    )
    assert message.caption is not None and "drums" in message.caption
    assert "без" in message.caption and "темп" in message.caption
