"""The operator's files stay in step with the settings: .env.example and the guide."""

from __future__ import annotations

import fnmatch
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
    # The mixer: the bot's image running `demix web` on the bot's database volume.
    web = services["web"]
    assert (web["build"]["target"], web["command"]) == ("bot", ["demix", "web"])
    assert web["healthcheck"]["test"] == ["CMD", "python", "-m", "demix.health", "web"]
    assert (
        "db:/data" in web["volumes"]
        and web["environment"]["DEMIX_DB_PATH"] == (services["bot"]["environment"]["DEMIX_DB_PATH"])
    )


def test_dockerfile_targets_run_as_non_root_with_healthchecks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for stage in ("bot", "worker"):
        body = dockerfile.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "USER demix" in body
        assert f'"demix.health", "{stage}"' in body
        assert f'CMD ["demix", "{stage}"]' in body


def _dockerfile_stages(dockerfile: str) -> list[tuple[str, str]]:
    """(base, stage name) of every FROM line, in order."""
    return re.findall(r"^FROM\s+(\S+)\s+AS\s+(\S+)\s*$", dockerfile, flags=re.MULTILINE)


def test_dockerfile_builds_from_the_python_base_alone() -> None:
    """No `# syntax=` line (BuildKit would pull a frontend image) and no base image but the
    Python one: every FROM names PYTHON_IMAGE or an earlier stage of the file."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", dockerfile, flags=re.MULTILINE | re.IGNORECASE)
    assert "nvidia/cuda" not in dockerfile
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, flags=re.MULTILINE)
    assert default is not None and default.group(1).startswith("python:3.11")
    stages = _dockerfile_stages(dockerfile)
    assert len(stages) == len(re.findall(r"^FROM ", dockerfile, flags=re.MULTILINE))
    seen: set[str] = set()
    for base, name in stages:
        assert base == "${PYTHON_IMAGE}" or base in seen, f"stage {name} is FROM {base}"
        seen.add(name)
    assert {"bot", "worker"} <= seen


def test_images_get_the_whole_project_so_no_package_is_left_out() -> None:
    """Both build stages COPY the whole context; .dockerignore drops none of what pip
    installs (the packages pyproject.toml lists, pyproject.toml, README.md) nor wheels/."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    for stage in ("bot-build", "worker-build"):
        body = dockerfile.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        assert "\nCOPY . .\n" in body, stage
    pyproject = (ROOT / "pyproject.toml").read_text()
    listed = re.search(r"^include = \[(.*)\]$", pyproject, flags=re.MULTILINE)
    assert listed is not None
    packages = [name.strip('" *') for name in listed.group(1).split(",")]
    assert all((ROOT / package / "__init__.py").is_file() for package in packages)
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "!"))
    ]
    needed = [*packages, "pyproject.toml", "README.md", "wheels"]
    for name in needed:
        hits = [pattern for pattern in ignored if fnmatch.fnmatch(name, pattern.rstrip("/"))]
        assert not hits, f".dockerignore drops {name} ({hits})"


class _ComposeLoader(yaml.SafeLoader):
    """YAML with Compose's `!reset` / `!override` tags."""


_ComposeLoader.add_constructor("!reset", lambda loader, node: None)
_ComposeLoader.add_constructor(
    "!override", lambda loader, node: loader.construct_object(node, deep=True)
)


def test_compose_test_override_keeps_production_tags_and_reaches_the_host() -> None:
    """docker-compose.e2e.yml (scripts/compose-e2e.sh): the CPU-torch worker image never
    takes the production tag, the GPU reservation is dropped, and bot and worker reach the
    fake Bot API on the host."""
    override = yaml.load((ROOT / "docker-compose.e2e.yml").read_text(), Loader=_ComposeLoader)
    services = override["services"]
    assert services["worker"]["image"] != "demix-worker"
    assert services["models"]["image"] == services["worker"]["image"]
    assert services["worker"]["deploy"] is None
    for name in ("bot", "worker"):
        assert "host.docker.internal:host-gateway" in services[name]["extra_hosts"]
        assert "host.docker.internal" in services[name]["environment"]["TELEGRAM_API_BASE_URL"]
