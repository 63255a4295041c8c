"""The one settings object of the service, read from the environment and a `.env` file.

Each entry point builds it once (``Settings()``) and passes it down; nothing builds it at
import time. Tests construct it directly with keyword arguments (field names).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODELS = ("htdemucs_ft", "htdemucs_6s")

# Fraction of each source taken from model A (the 4-source bag); model B gets the rest.
# A has no guitar or piano, and A's `other` still contains them, so those come from B.
DEFAULT_BLEND_WEIGHTS = {
    "drums": 1.0,
    "bass": 1.0,
    "vocals": 1.0,
    "guitar": 0.0,
    "piano": 0.0,
    "other": 0.0,
}


def _env(name: str) -> AliasChoices:
    return AliasChoices(name, name.lower())


class Settings(BaseSettings):
    """Every setting of bot, worker and CLI; see the README's settings table."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # Telegram
    telegram_bot_token: SecretStr | None = Field(None, validation_alias=_env("TELEGRAM_BOT_TOKEN"))
    telegram_api_base_url: str = Field(
        "https://api.telegram.org/bot", validation_alias=_env("TELEGRAM_API_BASE_URL")
    )
    telegram_file_base_url: str = Field(
        "https://api.telegram.org/file/bot", validation_alias=_env("TELEGRAM_FILE_BASE_URL")
    )
    telegram_local_mode: bool = Field(False, validation_alias=_env("TELEGRAM_LOCAL_MODE"))

    # Queue and storage
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL"))
    db_path: Path = Field(Path("data/demix.sqlite3"), validation_alias=_env("DEMIX_DB_PATH"))
    data_dir: Path = Field(Path("data"), validation_alias=_env("DEMIX_DATA_DIR"))

    # Separation
    model_repo: Path | None = Field(None, validation_alias=_env("DEMIX_MODEL_REPO"))
    models: Annotated[tuple[str, str], NoDecode] = Field(
        DEFAULT_MODELS, validation_alias=_env("DEMIX_MODELS")
    )
    device: str = Field("auto", validation_alias=_env("DEMIX_DEVICE"))
    blend_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_BLEND_WEIGHTS),
        validation_alias=_env("DEMIX_BLEND_WEIGHTS"),
    )
    shifts: int = Field(0, ge=0, le=10, validation_alias=_env("DEMIX_SHIFTS"))
    overlap: float = Field(0.25, ge=0.0, lt=1.0, validation_alias=_env("DEMIX_OVERLAP"))
    cache_dir: Path = Field(Path("data/cache"), validation_alias=_env("DEMIX_CACHE_DIR"))
    cache_max_mb: int = Field(20_000, ge=0, validation_alias=_env("DEMIX_CACHE_MAX_MB"))

    # Limits and access
    max_file_mb: int = Field(20, gt=0, validation_alias=_env("DEMIX_MAX_FILE_MB"))
    max_duration_s: int = Field(900, gt=0, validation_alias=_env("DEMIX_MAX_DURATION_S"))
    admin_ids: Annotated[frozenset[int], NoDecode] = Field(
        frozenset(), validation_alias=_env("DEMIX_ADMIN_IDS")
    )
    max_active_jobs_per_user: int = Field(
        1, ge=1, validation_alias=_env("DEMIX_MAX_ACTIVE_JOBS_PER_USER")
    )

    # Worker (arq): concurrency, retries, duration-scaled deadline, progress edits
    worker_max_jobs: int = Field(1, ge=1, validation_alias=_env("DEMIX_WORKER_MAX_JOBS"))
    job_max_tries: int = Field(5, ge=1, validation_alias=_env("DEMIX_JOB_MAX_TRIES"))
    job_keep_result_s: int = Field(86_400, ge=1, validation_alias=_env("DEMIX_JOB_KEEP_RESULT_S"))
    job_timeout_base_s: float = Field(
        120.0, gt=0, validation_alias=_env("DEMIX_JOB_TIMEOUT_BASE_S")
    )
    job_timeout_per_audio_s: float = Field(
        4.0, ge=0, validation_alias=_env("DEMIX_JOB_TIMEOUT_PER_AUDIO_S")
    )
    retry_backoff_s: float = Field(5.0, ge=0, validation_alias=_env("DEMIX_RETRY_BACKOFF_S"))
    retry_backoff_max_s: float = Field(
        300.0, ge=0, validation_alias=_env("DEMIX_RETRY_BACKOFF_MAX_S")
    )
    progress_edit_interval_s: float = Field(
        3.0, ge=0, validation_alias=_env("DEMIX_PROGRESS_EDIT_INTERVAL_S")
    )

    # Logging
    log_level: str = Field("INFO", validation_alias=_env("DEMIX_LOG_LEVEL"))

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            names = tuple(part.strip() for part in value.split(",") if part.strip())
            if len(names) != 2:
                raise ValueError("DEMIX_MODELS names two models: 4-source A, 6-source B")
            return names
        return value

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(
                int(part) for part in value.replace(";", ",").split(",") if part.strip()
            )
        if isinstance(value, int):
            return frozenset({value})
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in {"auto", "cuda", "mps", "cpu"} and not value.startswith("cuda:"):
            raise ValueError("DEMIX_DEVICE is one of auto, cuda, cuda:N, mps, cpu")
        return value

    def require_token(self) -> str:
        """The bot token, or a clear error for entry points that need one."""
        if self.telegram_bot_token is None or not self.telegram_bot_token.get_secret_value():
            raise SystemExit("TELEGRAM_BOT_TOKEN is not set (environment or .env file)")
        return self.telegram_bot_token.get_secret_value()
