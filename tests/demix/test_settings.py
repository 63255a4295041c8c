from pathlib import Path

import pytest
from pydantic import ValidationError

from demix.settings import DEFAULT_MODELS, Settings


def test_defaults_match_design(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TELEGRAM_BOT_TOKEN", "REDIS_URL", "DEMIX_MODELS", "DEMIX_ADMIN_IDS"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.telegram_api_base_url == "https://api.telegram.org/bot"
    assert settings.telegram_file_base_url == "https://api.telegram.org/file/bot"
    assert settings.telegram_local_mode is False
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.db_path == Path("data/demix.sqlite3")
    assert settings.models == DEFAULT_MODELS == ("htdemucs_ft", "htdemucs_6s")
    assert settings.device == "auto"
    assert settings.max_file_mb == 20
    assert settings.max_duration_s == 900
    assert settings.admin_ids == frozenset()
    assert settings.cache_dir == Path("data/cache")
    assert settings.model_repo is None


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "42:abc")
    monkeypatch.setenv("DEMIX_ADMIN_IDS", "7, 9")
    monkeypatch.setenv("DEMIX_MODELS", "a4,b6")
    monkeypatch.setenv("DEMIX_MODEL_REPO", str(tmp_path))
    monkeypatch.setenv("DEMIX_MAX_FILE_MB", "5")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.require_token() == "42:abc"
    assert settings.admin_ids == frozenset({7, 9})
    assert settings.models == ("a4", "b6")
    assert settings.model_repo == tmp_path
    assert settings.max_file_mb == 5


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DEMIX_MAX_DURATION_S", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("DEMIX_MAX_DURATION_S=61\n")
    assert Settings(_env_file=env_file).max_duration_s == 61  # type: ignore[call-arg]


def test_token_is_not_shown_in_repr() -> None:
    settings = Settings(_env_file=None, telegram_bot_token="42:very-secret")  # type: ignore[call-arg]
    assert "very-secret" not in repr(settings)
    assert "very-secret" not in str(settings.model_dump())


def test_bad_values_are_refused() -> None:
    with pytest.raises(ValidationError):
        Settings(_env_file=None, models="only-one")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Settings(_env_file=None, device="tpu")  # type: ignore[call-arg]
    with pytest.raises(SystemExit):
        Settings(_env_file=None, telegram_bot_token=None).require_token()  # type: ignore[call-arg]
