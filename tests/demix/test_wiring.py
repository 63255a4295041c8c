"""Settings -> the separation engine's configuration."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from demix.settings import Settings
from demix.wiring import separator_config


def test_settings_map_onto_the_separator_config(
    make_settings: Callable[..., Settings], tmp_path: Path, model_repo: Path
) -> None:
    settings = make_settings(
        models="a4,b6",
        device="cuda:1",
        blend_weights={"vocals": 0.7},
        shifts=2,
        overlap=0.5,
        cache_max_mb=3,
    )
    config = separator_config(settings)
    assert config.models == ("a4", "b6")
    assert config.model_repo == model_repo
    assert config.device == "cuda:1"
    assert config.blend_weights["vocals"] == 0.7
    assert config.blend_weights["guitar"] == 0.0
    assert (config.shifts, config.overlap) == (2, 0.5)
    assert config.cache_dir == tmp_path / "cache"
    assert config.cache_max_bytes == 3 * 10**6


def test_cache_cap_zero_disables_the_cache(make_settings: Callable[..., Settings]) -> None:
    assert separator_config(make_settings(cache_max_mb=0)).cache_dir is None


def test_defaults_follow_the_design(make_settings: Callable[..., Settings]) -> None:
    config = separator_config(make_settings(device="auto"))
    assert config.models == ("htdemucs_ft", "htdemucs_6s")
    assert config.device == "auto"
    assert config.shifts == 0
