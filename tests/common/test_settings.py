from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import ValidationError

from common.settings import Settings
from separation.config import DEFAULT_MODELS, Ensemble


@pytest.mark.usefixtures("bare_environment")
def test_defaults_match_design() -> None:
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


@pytest.mark.usefixtures("bare_environment")
def test_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "42:abc")
    monkeypatch.setenv("DEMIX_ADMIN_IDS", "7, 9")
    monkeypatch.setenv("DEMIX_MODELS", "a4,b6")
    monkeypatch.setenv("DEMIX_MODEL_REPO", str(tmp_path))
    monkeypatch.setenv("DEMIX_MAX_FILE_MB", "5")
    monkeypatch.setenv("DEMIX_ENSEMBLE", "route")
    monkeypatch.setenv("DEMIX_BLEND_WEIGHTS", '{"vocals": 0.7}')
    monkeypatch.setenv("DEMIX_BLEND_ALWAYS", "true")
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.default_ensemble() == Ensemble("route", {"vocals": 0.7}, always=True)
    assert settings.require_token() == "42:abc"
    assert settings.admin_ids == frozenset({7, 9})
    assert settings.models == ("a4", "b6")
    assert settings.model_repo == tmp_path
    assert settings.max_file_mb == 5


@pytest.mark.usefixtures("bare_environment")
def test_dotenv_file_is_read(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("DEMIX_MAX_DURATION_S=61\n")
    assert Settings(_env_file=env_file).max_duration_s == 61  # type: ignore[call-arg]


def test_variable_names_are_prefixed_except_those_design_pins() -> None:
    names = Settings.env_names()
    pinned = {
        "telegram_bot_token": "TELEGRAM_BOT_TOKEN",
        "telegram_api_base_url": "TELEGRAM_API_BASE_URL",
        "telegram_file_base_url": "TELEGRAM_FILE_BASE_URL",
        "telegram_local_mode": "TELEGRAM_LOCAL_MODE",
        "redis_url": "REDIS_URL",
    }
    assert {field: names[field] for field in pinned} == pinned
    for field, name in names.items():
        if field not in pinned:
            assert name == f"DEMIX_{field.upper()}"


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


def test_settings_map_onto_the_separator_config(
    make_settings: Callable[..., Settings], tmp_path: Path, model_repo: Path
) -> None:
    settings = make_settings(
        models="a4,b6",
        device="cuda:1",
        ensemble="refine",
        blend_weights={"vocals": 0.7},
        blend_always=True,
        shifts=2,
        overlap=0.5,
        cache_max_mb=3,
    )
    config = settings.separator_config()
    assert config.models == ("a4", "b6")
    assert config.model_repo == model_repo
    assert config.device == "cuda:1"
    assert config.ensemble.strategy == "refine"
    assert config.ensemble.blend_weights["vocals"] == 0.7
    assert config.ensemble.blend_weights["guitar"] == 0.0
    assert config.ensemble.always
    assert (config.shifts, config.overlap) == (2, 0.5)
    assert config.cache_dir == tmp_path / "cache"
    assert config.cache_max_bytes == 3 * 10**6


def test_cache_cap_zero_disables_the_cache(make_settings: Callable[..., Settings]) -> None:
    assert make_settings(cache_max_mb=0).separator_config().cache_dir is None


def test_defaults_follow_the_design(make_settings: Callable[..., Settings]) -> None:
    config = make_settings(device="auto").separator_config()
    assert config.models == ("htdemucs_ft", "htdemucs_6s")
    assert config.device == "auto"
    assert config.shifts == 0


@pytest.mark.usefixtures("bare_environment")
def test_an_experiment_is_parsed_with_the_configured_ensemble(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings(_env_file=None).experiment_spec() is None  # type: ignore[call-arg]
    monkeypatch.setenv("DEMIX_EXPERIMENT", "")
    assert Settings(_env_file=None).experiment_spec() is None  # type: ignore[call-arg]
    monkeypatch.setenv("DEMIX_EXPERIMENT", "ab: route=1,blend(vocals=0.9)=3")
    monkeypatch.setenv("DEMIX_BLEND_WEIGHTS", '{"drums": 0.5}')
    experiment = Settings(_env_file=None).experiment_spec()  # type: ignore[call-arg]
    assert experiment is not None and experiment.name == "ab"
    blend = experiment.variant("blend(vocals=0.9)")
    assert blend is not None and blend.share == 3
    assert dict(blend.ensemble.blend_weights)["vocals"] == 0.9
    assert dict(blend.ensemble.blend_weights)["drums"] == 0.5, "the configured weights"


@pytest.mark.usefixtures("bare_environment")
@pytest.mark.parametrize(
    ("spec", "reason"),
    [("ab route=1,blend=1", "no ':'"), ("ab: route=1", "variant"), ("ab: route=1,fuse=1", "fuse")],
)
def test_a_malformed_experiment_stops_start_up_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, spec: str, reason: str
) -> None:
    monkeypatch.setenv("DEMIX_EXPERIMENT", spec)
    with pytest.raises(ValidationError, match=reason):
        Settings(_env_file=None)  # type: ignore[call-arg]
