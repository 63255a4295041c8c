"""Fixtures shared by every test package: tiny models and a separator, a real Redis, settings
(plain and a running service's), the fake Bot API, a bare environment, test audio."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from common.settings import Settings
from tests.support.audio import make_song
from tests.support.fake_bot_api import TEST_TOKEN, FakeBotApi
from tests.support.i18n import compile_catalogs
from tests.support.processes import SETTINGS_PREFIXES
from tests.support.redis_server import RedisServer, redis_client
from tests.support.stems import write_stem_file

if TYPE_CHECKING:
    from separation import EnsembleSeparator


def pytest_sessionstart(session: pytest.Session) -> None:
    """The translations compiled from the current .po files (``make i18n-compile``)."""
    compile_catalogs()


TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata"
# The real excerpts where ../shared is beside the checkout; a synthetic file always.
MUSIC_EXCERPTS = [
    "synthetic",
    *sorted(path.name for path in (TESTDATA / "musdb7").glob("*.stem.mp4")),
]


@pytest.fixture(scope="session", params=MUSIC_EXCERPTS)
def multitrack_song(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A MUSDB-style ``.stem.mp4`` (stream 0 the mix): each real excerpt in
    ``../shared/testdata/musdb7`` when present, and a synthetic one that always runs."""
    if request.param == "synthetic":
        work = tmp_path_factory.mktemp("synthetic-stems")
        return write_stem_file(work / "synthetic.stem.mp4", 6.0, work)
    return TESTDATA / "musdb7" / request.param


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
def restartable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own to kill and start again, persisting as `demix up` runs it
    (append-only file), so a restart keeps the queue."""
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_session: str) -> Iterator[str]:
    """The session's Redis, emptied after each test so tests do not see each other's jobs."""
    yield redis_session
    with redis_client(redis_session) as client:
        client.flushdb()


@pytest.fixture(scope="session")
def separator(model_repo: Path) -> EnsembleSeparator:
    """One cache-less separator over the tiny models for the session (models load once)."""
    from tests.support.separators import make_separator

    return make_separator(model_repo)


@pytest.fixture
def bare_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No settings variable (DEMIX_*, TELEGRAM_*, REDIS_*) of the shell reaches the test."""
    for key in list(os.environ):
        if key.startswith(SETTINGS_PREFIXES):
            monkeypatch.delenv(key)


@pytest.fixture
def make_settings(tmp_path: Path, model_repo: Path) -> Callable[..., Settings]:
    """Build a Settings for a test: tmp database and cache, tiny models, CPU; overrides win."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "telegram_bot_token": TEST_TOKEN,
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
def service_settings(
    make_settings: Callable[..., Settings], redis_url: str, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """Settings of a running service: the bot and the worker talk to a fake Bot API (``api=``,
    else the ``fake_bot_api`` fixture's) and the test Redis, with test-speed retries and status
    edits; overrides win."""

    def build(*, api: FakeBotApi | None = None, **overrides: Any) -> Settings:
        if api is None:
            api = request.getfixturevalue("fake_bot_api")
        values: dict[str, Any] = {
            **api.settings_overrides(),
            "redis_url": redis_url,
            "retry_backoff_s": 0.05,
            "retry_backoff_max_s": 0.2,
            "progress_edit_interval_s": 0.2,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@pytest.fixture
def song(tmp_path: Path) -> Path:
    """A 3-second stereo 44.1 kHz mp3 with title and artist tags."""
    return make_song(
        tmp_path / "Test Song.mp3", seconds=3.0, title="Test Song", artist="Test Artist"
    )
