"""The mixer's web server under test: settings on the fake Bot API and the test Redis, the
server on a free port, tracks delivered to the fake Bot API, signed init data."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from common.mixes import MixRecord
from common.settings import Settings
from tests.support.fake_bot_api import TEST_TOKEN, FakeBotApi
from tests.support.telegram_webapp import sign_init_data, webapp_user
from tests.support.web import deliver_mix, make_tracks, running_web_app

OWNER = 501
STRANGER = 502
TRACK_NAMES = ("drums", "bass", "vocals", "other")


@pytest.fixture(scope="session")
def track_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four 3-second mp3 tracks, made once for the session."""
    return make_tracks(tmp_path_factory.mktemp("tracks"), TRACK_NAMES, seconds=3.0)


@pytest.fixture
def settings(service_settings: Callable[..., Settings]) -> Settings:
    return service_settings(webapp_url="http://127.0.0.1:9")


@pytest.fixture
async def base_url(settings: Settings) -> AsyncIterator[str]:
    async with running_web_app(settings) as url:
        yield url


@pytest.fixture
async def mix(
    fake_bot_api: FakeBotApi, settings: Settings, track_files: dict[str, Path]
) -> MixRecord:
    return await deliver_mix(fake_bot_api, settings, track_files, user_id=OWNER)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def tma(user_id: int = OWNER, **kwargs: object) -> dict[str, str]:
    """The Authorization header of a Mini App opened by ``user_id``."""
    return {"Authorization": "tma " + sign_init_data(TEST_TOKEN, webapp_user(user_id), **kwargs)}  # type: ignore[arg-type]
