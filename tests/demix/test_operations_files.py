"""The operator's files stay in step with the settings: .env.example and the guide."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
VARIABLES = sorted(Settings.env_names().values())


@pytest.mark.usefixtures("bare_environment")
def test_env_example_lists_every_setting_with_its_default() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", text, flags=re.MULTILINE))
    assert listed == set(VARIABLES)

    from_file = Settings(_env_file=ROOT / ".env.example")
    defaults = Settings(_env_file=None)
    assert from_file.model_dump(exclude={"telegram_bot_token"}) == defaults.model_dump(
        exclude={"telegram_bot_token"}
    )
    assert from_file.telegram_bot_token is not None
    assert from_file.telegram_bot_token.get_secret_value() == ""


def test_operations_guide_documents_every_setting() -> None:
    guide = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in VARIABLES if f"`{name}`" not in guide]
    assert not missing, f"docs/operations.md does not document {missing}"


def test_compose_file_wires_redis_volumes_and_gpu() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert {"redis-data", "db", "cache", "models"} <= set(compose["volumes"])
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    for name in ("bot", "worker"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["build"]["target"] == name


def test_dockerfile_targets_run_as_non_root_with_healthchecks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for stage in ("bot", "worker"):
        body = dockerfile.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "USER demix" in body
        assert f'"demix.health", "{stage}"' in body
        assert f'CMD ["demix", "{stage}"]' in body
