"""The one settings object of the service, read from the environment and a `.env` file.

Each entry point builds it once (``Settings()``) and passes it down; nothing builds it at
import time. Tests construct it directly with keyword arguments (field names).

Every variable is ``DEMIX_<FIELD>``, except the ones DESIGN.md pins under other names
(``TELEGRAM_*``, ``REDIS_URL``), which are aliases.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from common.experiments import Experiment, parse_experiment
from common.logs import LogFormat
from separation.config import (
    DEFAULT_BLEND_WEIGHTS,
    DEFAULT_MODELS,
    DEFAULT_STRATEGY,
    Ensemble,
    Precision,
    SeparatorConfig,
    Strategy,
    check_precision,
)

ENV_PREFIX = "DEMIX_"


class Settings(BaseSettings):
    """Every setting of bot, worker and CLI; docs/operations.md has the table."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        populate_by_name=True,
        frozen=True,
    )

    # Telegram
    telegram_bot_token: SecretStr | None = Field(None, validation_alias="TELEGRAM_BOT_TOKEN")
    telegram_api_base_url: str = Field(
        "https://api.telegram.org/bot", validation_alias="TELEGRAM_API_BASE_URL"
    )
    telegram_file_base_url: str = Field(
        "https://api.telegram.org/file/bot", validation_alias="TELEGRAM_FILE_BASE_URL"
    )
    telegram_local_mode: bool = Field(False, validation_alias="TELEGRAM_LOCAL_MODE")

    # Queue and storage
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias="REDIS_URL")
    db_path: Path = Path("data/demix.sqlite3")
    data_dir: Path = Path("data")

    # Separation
    model_repo: Path | None = None
    models: Annotated[tuple[str, str], NoDecode] = DEFAULT_MODELS
    device: str = "auto"
    ensemble: Strategy = DEFAULT_STRATEGY
    blend_weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_BLEND_WEIGHTS))
    blend_always: bool = False
    # An A/B experiment over ensembles, ``NAME: VARIANT=SHARE,...`` (common/experiments.py).
    experiment: str | None = None
    shifts: int = Field(0, ge=0, le=10)
    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    batch_size: int = Field(0, ge=0, le=64)  # 0: picked for the device
    precision: Precision = "auto"
    cache_dir: Path = Path("data/cache")
    cache_max_mb: int = Field(20_000, ge=0)

    # Limits and access
    max_file_mb: int = Field(20, gt=0)
    max_duration_s: int = Field(900, gt=0)
    admin_ids: Annotated[frozenset[int], NoDecode] = frozenset()
    max_active_jobs_per_user: int = Field(1, ge=1)
    uploads_per_hour: int = Field(30, ge=1)
    presses_per_minute: int = Field(60, ge=1)

    # Worker (arq): concurrency, retries, duration-scaled deadline, progress edits
    worker_max_jobs: int = Field(3, ge=1)
    job_max_tries: int = Field(5, ge=1)
    job_keep_result_s: int = Field(86_400, ge=1)
    job_timeout_base_s: float = Field(120.0, gt=0)
    job_timeout_per_audio_s: float = Field(4.0, ge=0)
    retry_backoff_s: float = Field(5.0, ge=0)
    retry_backoff_max_s: float = Field(300.0, ge=0)
    progress_edit_interval_s: float = Field(3.0, ge=0)
    # The worker's Bot API client: a read timeout leaves an upload unconfirmed, not resent.
    telegram_read_timeout_s: float = Field(60.0, gt=0)
    telegram_upload_timeout_s: float = Field(300.0, gt=0)
    # A running job's claim: renewed every third of it while the worker lives; a worker
    # that dies without a word loses it, and another worker takes the job up when it lapses.
    job_lease_s: float = Field(30.0, ge=1.0, le=600.0)
    # SIGTERM (a spot instance's notice): a job still sending its tracks gets this long to
    # finish; every other job is given back at once for another worker to resume.
    worker_stop_grace_s: float = Field(25.0, ge=0.0, le=600.0)

    # Metrics: a Prometheus endpoint in the bot and in each worker; port 0 turns it off
    # At most 65534: `demix up` gives its worker the next port.
    metrics_port: int = Field(0, ge=0, le=65534)
    metrics_host: str = "127.0.0.1"

    # The mixer (a Telegram Mini App served by `demix web`): unset URL, no Mix button
    webapp_url: str | None = None
    web_host: str = "127.0.0.1"
    web_port: int = Field(8080, ge=1, le=65535)
    webapp_auth_max_age_s: int = Field(86_400, gt=0)
    # The Bot API files the mixer fetched (DEMIX_CACHE_DIR/mixer), least recently used out
    webapp_cache_mb: int = Field(2_000, gt=0)
    # Mixes rendered at once by one `demix web` process (each one user's; more wait)
    webapp_renders: int = Field(2, ge=1, le=64)

    # Logging: console lines on a terminal, JSON lines otherwise (auto), or either always
    log_level: str = "INFO"
    log_format: LogFormat = "auto"

    @classmethod
    def env_names(cls) -> dict[str, str]:
        """Field name -> the environment variable that sets it."""
        return {
            name: info.validation_alias
            if isinstance(info.validation_alias, str)
            else ENV_PREFIX + name.upper()
            for name, info in cls.model_fields.items()
        }

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

    @field_validator("webapp_url")
    @classmethod
    def _check_webapp_url(cls, value: str | None) -> str | None:
        """HTTPS, or plain HTTP on this machine only (tests, local runs); no trailing slash,
        query or fragment. Empty: unset."""
        if value is None or not value.strip():
            return None
        url = urlsplit(value.strip())
        local = url.hostname in {"127.0.0.1", "localhost", "::1"}
        if url.scheme != "https" and not (url.scheme == "http" and local):
            raise ValueError(
                "DEMIX_WEBAPP_URL must be https:// (http:// only for 127.0.0.1 or localhost)"
            )
        if not url.hostname or url.query or url.fragment or url.username or url.password:
            raise ValueError("DEMIX_WEBAPP_URL is a plain base URL: https://host[:port][/path]")
        return value.strip().rstrip("/")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value not in {"auto", "cuda", "mps", "cpu"} and not value.startswith("cuda:"):
            raise ValueError("DEMIX_DEVICE is one of auto, cuda, cuda:N, mps, cpu")
        return value

    @field_validator("precision")
    @classmethod
    def _check_precision(cls, value: str, info: ValidationInfo) -> str:
        check_precision(value, str(info.data.get("device", "auto")))
        return value

    @field_validator("experiment")
    @classmethod
    def _check_experiment(cls, value: str | None, info: ValidationInfo) -> str | None:
        """A malformed ``DEMIX_EXPERIMENT`` stops start-up with the parser's message; an
        empty one is unset."""
        if value is None or not value.strip():
            return None
        try:
            default = Ensemble(
                info.data.get("ensemble", DEFAULT_STRATEGY),
                dict(info.data.get("blend_weights", {})),
                bool(info.data.get("blend_always", False)),
            )
        except ValueError:
            default = Ensemble()  # the ensemble settings' own error is reported for them
        parse_experiment(value, default)
        return value

    def experiment_spec(self) -> Experiment | None:
        """The A/B experiment ``DEMIX_EXPERIMENT`` runs, or None when it is unset."""
        if self.experiment is None:
            return None
        return parse_experiment(self.experiment, self.default_ensemble())

    def require_token(self) -> str:
        """The bot token, or a clear error for entry points that need one."""
        if self.telegram_bot_token is None or not self.telegram_bot_token.get_secret_value():
            raise SystemExit("TELEGRAM_BOT_TOKEN is not set (environment or .env file)")
        return self.telegram_bot_token.get_secret_value()

    def default_ensemble(self) -> Ensemble:
        """How the models combine where no experiment assigns a variant."""
        return Ensemble(self.ensemble, dict(self.blend_weights), self.blend_always)

    def separator_config(self) -> SeparatorConfig:
        """The separation engine's configuration (a cache cap of 0 disables the cache)."""
        return SeparatorConfig(
            models=self.models,
            model_repo=self.model_repo,
            device=self.device,
            ensemble=self.default_ensemble(),
            shifts=self.shifts,
            overlap=self.overlap,
            batch_size=self.batch_size,
            precision=self.precision,
            cache_dir=self.cache_dir if self.cache_max_mb > 0 else None,
            cache_max_bytes=self.cache_max_mb * 10**6,
        )
