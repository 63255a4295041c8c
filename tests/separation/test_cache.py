"""The source cache: another pick of a cached song runs no model; corrupt entries, keys
and the size cap."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from separation import SOURCES, STRATEGIES, Audio, Ensemble, EnsembleSeparator
from separation.cache import SourceCache, audio_digest
from separation.random_models import write_model_repo
from tests.separation.conftest import audio_of
from tests.support.audio import music_like
from tests.support.separators import make_separator


def test_other_picks_of_a_cached_song_run_no_model(
    model_repo: Path, tmp_path: Path, clip: Audio, separator: EnsembleSeparator
) -> None:
    first = make_separator(model_repo, cache_dir=tmp_path / "cache")
    first.separate(clip, SOURCES)
    assert first.model_passes == 4
    # Stored: A's drums, bass and vocals and all six of B's (the blend uses B's drums, bass
    # and vocals too): every estimate some pick can use.
    assert first.cache is not None and len(first.cache.entries()) == 9

    # A fresh instance (another process, say) on the same folder loads no model at all, and
    # gives every track of every pick as a cache-less separation does: `other` (model B's
    # own for a pick of it alone, the residual beside all five) and the `no_`/`rest` tracks.
    fresh = make_separator(model_repo, cache_dir=tmp_path / "cache")
    for pick in (["vocals"], ["guitar", "bass"], ["other"], ["piano"], SOURCES):
        tracks = fresh.separate(clip, pick)
        expected = separator.separate(clip, pick)
        assert tuple(tracks) == tuple(expected), pick
        for name, track in tracks.items():
            np.testing.assert_array_equal(track, expected[name], err_msg=name)
    assert fresh.model_passes == 0
    assert fresh.loaded_models == ()
    assert fresh.cache is not None and fresh.cache.hits > 0


@pytest.fixture(scope="module")
def refined_cache(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache that holds the ``clip`` song separated once, all six, under refine (each
    test below works on a copy of it)."""
    cache_dir = tmp_path_factory.mktemp("refined") / "cache"
    make_separator(model_repo, cache_dir=cache_dir).separate(
        audio_of(music_like(2.0)), SOURCES, ensemble=Ensemble("refine")
    )
    return cache_dir


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_cached_estimates_serve_every_strategy_apart(
    model_repo: Path,
    tmp_path: Path,
    clip: Audio,
    strategy: str,
    refined_cache: Path,
    separator: EnsembleSeparator,
) -> None:
    # The cache holds each model's estimates, never a strategy's result: a song separated
    # under one strategy gives another strategy's own tracks with no model pass. (No pass
    # at all below also proves the copied cache holds this clip.)
    shutil.copytree(refined_cache, tmp_path / "cache")
    ensemble = Ensemble(strategy)
    for pick in (SOURCES, ["vocals", "piano"], ["drums", "bass", "vocals", "guitar"]):
        warm = make_separator(model_repo, cache_dir=tmp_path / "cache")
        tracks = warm.separate(clip, pick, ensemble=ensemble)
        assert warm.model_passes == 0, pick
        # The session's cache-less separator: every estimate computed afresh.
        expected = separator.separate(clip, pick, ensemble=ensemble)
        for name, track in tracks.items():
            np.testing.assert_array_equal(track, expected[name], err_msg=f"{pick} {name}")


def test_only_missing_sources_are_computed(model_repo: Path, tmp_path: Path, clip: Audio) -> None:
    first = make_separator(model_repo, cache_dir=tmp_path / "cache")
    first.separate(clip, ["vocals"])
    second = make_separator(model_repo, cache_dir=tmp_path / "cache")
    second.separate(clip, ["vocals", "drums"])
    assert second.model_passes == 1  # the drums sub-model only


def test_same_result_with_and_without_cache(
    model_repo: Path, tmp_path: Path, clip: Audio, separator: EnsembleSeparator
) -> None:
    plain = separator.separate(clip, ["drums", "piano"])
    cold = make_separator(model_repo, cache_dir=tmp_path / "cache").separate(
        clip, ["drums", "piano"]
    )
    warm = make_separator(model_repo, cache_dir=tmp_path / "cache").separate(
        clip, ["drums", "piano"]
    )
    for name in plain:
        np.testing.assert_array_equal(plain[name], cold[name])
        np.testing.assert_array_equal(plain[name], warm[name])


def test_key_covers_audio_settings_and_models(
    model_repo: Path, tmp_path: Path, clip: Audio
) -> None:
    cache_dir = tmp_path / "cache"
    make_separator(model_repo, cache_dir=cache_dir).separate(clip, ["bass"])

    other_overlap = make_separator(model_repo, cache_dir=cache_dir, overlap=0.5)
    other_overlap.separate(clip, ["bass"])
    assert other_overlap.model_passes == 1

    other_models = make_separator(write_model_repo(tmp_path / "m2", seed=7), cache_dir=cache_dir)
    other_models.separate(clip, ["bass"])
    assert other_models.model_passes == 1

    louder = Audio(samples=clip.samples * np.float32(0.5), info=clip.info)
    other_audio = make_separator(model_repo, cache_dir=cache_dir)
    other_audio.separate(louder, ["bass"])
    assert other_audio.model_passes == 1


def test_corrupt_entries_are_ignored_and_replaced(
    model_repo: Path, tmp_path: Path, clip: Audio
) -> None:
    cache_dir = tmp_path / "cache"
    good = make_separator(model_repo, cache_dir=cache_dir).separate(clip, ["vocals", "guitar"])
    entries = sorted(cache_dir.glob("*/*.npy"))
    assert entries
    entries[0].write_bytes(b"not an array")
    for entry in entries[1:]:
        entry.write_bytes(entry.read_bytes()[:200])  # truncated

    again = make_separator(model_repo, cache_dir=cache_dir)
    tracks = again.separate(clip, ["vocals", "guitar"])
    assert again.model_passes == 2
    for name in good:
        np.testing.assert_array_equal(tracks[name], good[name])
    # The recomputed entries replaced the broken ones.
    third = make_separator(model_repo, cache_dir=cache_dir)
    third.separate(clip, ["vocals", "guitar"])
    assert third.model_passes == 0


def test_disabled_cache_writes_nothing(model_repo: Path, tmp_path: Path, clip: Audio) -> None:
    separator = make_separator(model_repo, cache_dir=tmp_path / "cache", cache_max_bytes=0)
    separator.separate(clip, ["bass"])
    assert separator.cache is None
    assert not (tmp_path / "cache").exists()


# -- SourceCache on its own -------------------------------------------------------------


def _array(seed: int, n: int = 1000) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, n)).astype(np.float32)


def test_put_get_round_trip_leaves_no_temporaries(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path, max_bytes=10**6)
    array = _array(0)
    cache.put("k" * 64, array)
    np.testing.assert_array_equal(cache.get("k" * 64, (2, 1000)), array)
    assert cache.get("k" * 64, (2, 999)) is None  # wrong shape counts as corrupt
    assert cache.get("k" * 64, (2, 1000)) is None  # and was dropped
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")]


def test_size_cap_evicts_least_recently_used(tmp_path: Path) -> None:
    entry_bytes = _array(0).nbytes + 128  # .npy header
    cache = SourceCache(tmp_path, max_bytes=2 * entry_bytes + 10)
    keys = [SourceCache.key(str(i)) for i in range(3)]
    cache.put(keys[0], _array(0))
    cache.put(keys[1], _array(1))
    # keys[0] is older, but reading it makes it the most recently used.
    for age, key in ((100, keys[0]), (50, keys[1])):
        path = tmp_path / key[:2] / f"{key}.npy"
        os.utime(path, (path.stat().st_atime - age, path.stat().st_mtime - age))
    assert cache.get(keys[0], (2, 1000)) is not None
    cache.put(keys[2], _array(2))
    assert cache.size_bytes() <= cache.max_bytes
    assert cache.get(keys[1], (2, 1000)) is None
    assert cache.get(keys[0], (2, 1000)) is not None
    assert cache.get(keys[2], (2, 1000)) is not None


def test_entry_over_the_cap_is_not_stored(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path, max_bytes=100)
    cache.put(SourceCache.key("big"), _array(0))
    assert cache.entries() == []


def test_audio_digest_is_the_samples_not_their_memory_layout() -> None:
    samples = np.array([[0.0, 0.5, -1.0], [0.25, 1.0, -0.5]], np.float32)
    # Pinned: a changed digest would orphan every cache entry already on disk.
    pinned = "fcb81d7d62451b60bf6ef4b61412c40d1b0689a15a59d97e3745301a92a1a970"
    assert audio_digest(samples) == pinned
    # The same values, column-major, as float64, or a strided view: the same song.
    assert audio_digest(np.asfortranarray(samples)) == pinned
    assert audio_digest(samples.astype(np.float64)) == pinned
    wider = np.zeros((2, 6), np.float32)
    wider[:, ::2] = samples
    assert audio_digest(wider[:, ::2]) == pinned


@pytest.mark.parametrize("changed", ["value", "length", "channels"])
def test_audio_digest_tells_songs_apart(changed: str) -> None:
    samples = _array(3)
    other = samples.copy()
    if changed == "value":
        other[1, 500] += 1e-6
    elif changed == "length":
        other = np.concatenate([samples, np.zeros((2, 1), np.float32)], axis=1)
    else:  # the same samples as one channel of twice the length
        other = samples.reshape(1, -1)
    assert audio_digest(samples) != audio_digest(other)
