"""Builds the library configurations of the application from its one Settings object."""

from __future__ import annotations

from demix.settings import Settings
from separation.ensemble import SeparatorConfig


def separator_config(settings: Settings) -> SeparatorConfig:
    """The separation engine's configuration for these settings (cap 0 disables the cache)."""
    return SeparatorConfig(
        models=settings.models,
        model_repo=settings.model_repo,
        device=settings.device,
        blend_weights=dict(settings.blend_weights),
        shifts=settings.shifts,
        overlap=settings.overlap,
        cache_dir=settings.cache_dir if settings.cache_max_mb > 0 else None,
        cache_max_bytes=settings.cache_max_mb * 10**6,
    )
