"""Fixtures shared by every test package: tiny models, a real Redis, settings, test audio."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.settings import Settings
from tests.support.audio import make_song
from tests.support.fake_bot_api import TEST_TOKEN, FakeBotApi
from tests.support.redis_server import RedisServer

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"


@pytest.fixture(scope="session")
def testdata() -> Path:
    """The shared real-audio test data (``../shared/testdata``)."""
    if not TESTDATA.is_dir():
        pytest.skip(f"shared test data not found at {TESTDATA}")
    return TESTDATA


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with tiny random `htdemucs_ft` (4-source bag) and `htdemucs_6s` models."""
    from separation.random_models import write_model_repo

    return write_model_repo(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def redis_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the session (or ``TEST_REDIS_URL`` when given)."""
    given = os.environ.get("TEST_REDIS_URL")
    if given:
        yield given
        return
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_session: str) -> Iterator[str]:
    """The session's Redis, emptied after each test so tests do not see each other's jobs."""
    yield redis_session
    import redis

    client = redis.Redis.from_url(redis_session)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture
def make_settings(tmp_path: Path, model_repo: Path) -> Callable[..., Settings]:
    """Build a Settings for a test: tmp database and cache, tiny models, CPU; overrides win."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "telegram_bot_token": "123456:TEST-token-not-real",
            "db_path": tmp_path / "demix.sqlite3",
            "data_dir": tmp_path / "data",
            "cache_dir": tmp_path / "cache",
            "model_repo": model_repo,
            "device": "cpu",
        }
        values.update(overrides)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]

    return build


@pytest.fixture
def fake_bot_api() -> Iterator[FakeBotApi]:
    """A started fake Telegram Bot API on 127.0.0.1 for the test token (make_settings's)."""
    with FakeBotApi(TEST_TOKEN) as server:
        yield server


@pytest.fixture
def song(tmp_path: Path) -> Path:
    """A 3-second stereo 44.1 kHz mp3 with title and artist tags."""
    return make_song(
        tmp_path / "Test Song.mp3", seconds=3.0, title="Test Song", artist="Test Artist"
    )
