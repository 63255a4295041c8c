"""The song streams through the engine: tracks written to raw files as they are final,
sub-models in lockstep, the cache read and written a span at a time, decode in blocks."""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from separation import SOURCES, EnsembleSeparator, RawTrack, SeparationCancelled, decode_audio
from separation import audio as audio_module
from separation.audio import SpooledSamples
from separation.cache import SourceCache, audio_digest
from tests.separation.conftest import audio_of, demucs_estimate
from tests.separation.test_ensemble import assert_tracks_sum_to_mix
from tests.support.audio import music_like, write_audio
from tests.support.separators import make_separator


@pytest.mark.parametrize("pick", [["vocals"], ["drums", "guitar"], list(SOURCES)])
def test_files_hold_the_same_tracks_as_memory(
    separator: EnsembleSeparator, tmp_path: Path, pick: list[str]
) -> None:
    audio = audio_of(music_like(13.0, seed=11))  # three chunks per pass
    in_memory = separator.separate(audio, pick)
    on_disk = separator.separate_to_files(audio, pick, tmp_path / "raw")
    assert list(on_disk) == list(in_memory)
    for name, track in on_disk.items():
        assert isinstance(track, RawTrack)
        assert track.frames == audio.samples.shape[1]
        assert track.path.stat().st_size == 8 * track.frames
        np.testing.assert_array_equal(track.read(), in_memory[name], err_msg=name)
    assert_tracks_sum_to_mix({name: track.read() for name, track in on_disk.items()}, audio)


def test_tracks_are_written_while_the_models_still_run(model_repo: Path, tmp_path: Path) -> None:
    separator = make_separator(model_repo)
    audio = audio_of(music_like(30.0, seed=12))  # six chunks per pass, four passes
    out = tmp_path / "raw"
    sizes: list[tuple[float, int]] = []

    def progress(fraction: float) -> None:
        vocals = out / "vocals.f32"
        sizes.append((fraction, vocals.stat().st_size if vocals.exists() else 0))

    separator.separate_to_files(audio, SOURCES, out, progress=progress)
    full = 8 * audio.samples.shape[1]
    # Half way through the chunks, some of every track is final and on its way out; none
    # of it waited for the last chunk. (Files are buffered, so sizes trail a little.)
    halfway = [size for fraction, size in sizes if 0.5 <= fraction < 0.75]
    assert halfway and 0 < max(halfway) < full
    assert (out / "vocals.f32").stat().st_size == full


def test_a_cancelled_separation_leaves_no_track_file(model_repo: Path, tmp_path: Path) -> None:
    separator = make_separator(model_repo, cache_dir=tmp_path / "cache")
    audio = audio_of(music_like(20.0, seed=13))
    calls = 0

    def cancel() -> bool:
        nonlocal calls
        calls += 1
        return calls > 5

    with pytest.raises(SeparationCancelled):
        separator.separate_to_files(audio, SOURCES, tmp_path / "raw", should_cancel=cancel)
    assert list((tmp_path / "raw").iterdir()) == []
    # Nor a cache entry, whole or in part.
    assert not [path for path in (tmp_path / "cache").rglob("*") if path.is_file()]


def test_a_cached_song_streams_from_the_cache(model_repo: Path, tmp_path: Path) -> None:
    audio = audio_of(music_like(25.0, seed=14))  # more than one span read from the cache
    first = make_separator(model_repo, cache_dir=tmp_path / "cache")
    computed = first.separate(audio, SOURCES)
    fresh = make_separator(model_repo, cache_dir=tmp_path / "cache")
    cached = fresh.separate_to_files(audio, SOURCES, tmp_path / "raw")
    assert fresh.model_passes == 0
    for name, track in cached.items():
        np.testing.assert_array_equal(track.read(), computed[name], err_msg=name)


def test_cache_entries_are_stored_frame_by_frame(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path, max_bytes=10**6)
    array = np.arange(2000, dtype=np.float32).reshape(2, 1000)
    writer = cache.writer("k" * 64, 1000)
    writer.write(array[:, :300])
    writer.write(array[:, 300:])
    writer.commit()
    stored = np.load(tmp_path / "kk" / f"{'k' * 64}.npy")
    assert stored.flags.f_contiguous and stored.shape == (2, 1000)
    np.testing.assert_array_equal(stored, array)
    reader = cache.open("k" * 64, (2, 1000))
    assert reader is not None
    with reader:
        np.testing.assert_array_equal(reader.read(250, 700), array[:, 250:700])


def test_a_short_cache_entry_is_not_committed(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path, max_bytes=10**6)
    writer = cache.writer("k" * 64, 1000)
    writer.write(np.zeros((2, 999), np.float32))
    with pytest.raises(ValueError, match="999 frames written of 1000"):
        writer.commit()
    writer.abort()
    assert cache.entries() == [] and not list(tmp_path.rglob(".tmp-*"))


def test_the_cache_keeps_clear_of_a_nearly_full_disk(tmp_path: Path) -> None:
    free = shutil.disk_usage(tmp_path).free
    cache = SourceCache(tmp_path, max_bytes=10**6, min_free_bytes=free + 1)
    cache.put("k" * 64, np.zeros((2, 10), np.float32))
    assert cache.entries() == [] and not list(tmp_path.rglob(".tmp-*"))
    roomy = SourceCache(tmp_path, max_bytes=10**6, min_free_bytes=0)
    roomy.put("k" * 64, np.zeros((2, 10), np.float32))
    assert len(roomy.entries()) == 1


def test_temporaries_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    cache = SourceCache(tmp_path, max_bytes=10**6)
    (tmp_path / "ab").mkdir()
    stale, live = tmp_path / "ab" / ".tmp-stale.npy", tmp_path / "ab" / ".tmp-live.npy"
    stale.write_bytes(b"half an entry")
    live.write_bytes(b"being written")
    os.utime(stale, (1, 1))
    cache.put("k" * 64, np.zeros((2, 10), np.float32))
    assert not stale.exists() and live.exists()


@pytest.mark.parametrize("batch_size", [1, 3])
def test_a_random_shift_matches_demucs_apply_model(model_repo: Path, batch_size: int) -> None:
    """With a shift, the pass runs over the song shifted as apply_model shifts it (the same
    random draw), batched like any pass."""
    audio = audio_of(music_like(15.0, seed=15))  # three chunks per pass
    separator = make_separator(model_repo, shifts=1, batch_size=batch_size)
    separator.warm_up()  # the draw below must be the first after seeding
    random.seed(7)
    ours = separator.separate(audio, ["vocals"])["vocals"]

    random.seed(7)
    expected, _ = demucs_estimate(model_repo, audio, shifts=1)
    np.testing.assert_allclose(ours, expected, atol=2e-5)
    unshifted = make_separator(model_repo).separate(audio, ["vocals"])["vocals"]
    assert np.abs(unshifted - ours).max() > 1e-3  # the shift did change the estimate


def test_shifts_average_one_pass_per_shift(
    model_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not compared with apply_model's shifts=2: demucs's transformer draws from the same
    # random module in every forward pass, so its second shift depends on how many passes
    # ran before it (batches run fewer). The shifts themselves are drawn the same way.
    audio = audio_of(music_like(9.0, seed=17))
    delays = iter([10611, 4943])
    monkeypatch.setattr(random, "randint", lambda low, high: next(delays))
    separator = make_separator(model_repo, shifts=2)
    averaged = separator.separate(audio, ["vocals"])["vocals"]
    assert separator.model_passes == 2  # one sub-model, a pass per shift
    singles = []
    for shift in (10611, 4943):
        monkeypatch.setattr(random, "randint", lambda low, high, shift=shift: shift)
        singles.append(make_separator(model_repo, shifts=1).separate(audio, ["vocals"])["vocals"])
    np.testing.assert_allclose(averaged, (singles[0] + singles[1]) / 2, atol=1e-6)
    assert np.abs(singles[0] - singles[1]).max() > 1e-3


@pytest.mark.parametrize("on_disk", [False, True], ids=["memory", "disk"])
@pytest.mark.parametrize("channels", [1, 2])
def test_decoding_in_blocks_keeps_every_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int, on_disk: bool
) -> None:
    # Blocks of a few hundred frames, so a 3 s song spans hundreds of them.
    monkeypatch.setattr(audio_module, "_DECODE_BLOCK_BYTES", 4096)
    samples = music_like(3.0, channels=channels, seed=16)
    path = write_audio(tmp_path / "song.wav", samples, 44100, codec="pcm_f32le")
    spool = tmp_path / "spool"
    spool.mkdir()
    decoded = decode_audio(path, spool_dir=spool if on_disk else None).samples
    expected = np.repeat(samples, 2, axis=0) if channels == 1 else samples
    assert decoded.shape == expected.shape
    np.testing.assert_array_equal(np.asarray(decoded), expected)
    files = sorted(spool.iterdir())
    if not on_disk:
        assert isinstance(decoded, np.ndarray) and files == []
        return
    # The samples are in the files, not in the object: each channel's raw float32.
    assert isinstance(decoded, SpooledSamples)
    assert sorted(set(decoded.channels)) == files and len(files) == channels
    for row, channel in zip(expected, decoded.channels, strict=True):
        np.testing.assert_array_equal(np.fromfile(channel, dtype=np.float32), row)
    np.testing.assert_array_equal(decoded[:, 1000:5000], expected[:, 1000:5000])
    np.testing.assert_array_equal(decoded[:, 132_000:], expected[:, 132_000:])
    with pytest.raises(IndexError):
        decoded[0, 10:20]  # type: ignore[index]


def test_a_refused_song_leaves_nothing_in_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    with_a_nan = music_like(2.0, seed=18)
    with_a_nan[1, 40_000] = np.nan
    path = write_audio(tmp_path / "nan.wav", with_a_nan, 44100, codec="pcm_f32le")
    with pytest.raises(audio_module.InvalidAudioError, match="not finite"):
        decode_audio(path, spool_dir=spool)
    long = write_audio(tmp_path / "long.wav", music_like(3.0, seed=19), 44100)
    with pytest.raises(audio_module.SongTooLongError):
        decode_audio(long, max_duration_s=1.0, spool_dir=spool)
    assert list(spool.iterdir()) == []


@pytest.mark.parametrize("pick", [["vocals"], list(SOURCES)])
def test_a_song_on_disk_separates_as_in_memory(
    model_repo: Path, tmp_path: Path, pick: list[str]
) -> None:
    samples = music_like(13.0, seed=20)  # three chunks per pass
    path = write_audio(tmp_path / "song.wav", samples, 44100, codec="pcm_f32le")
    spool = tmp_path / "spool"
    spool.mkdir()
    on_disk = decode_audio(path, spool_dir=spool)
    in_memory = decode_audio(path)
    assert isinstance(on_disk.samples, SpooledSamples)
    assert audio_digest(on_disk.samples) == audio_digest(in_memory.samples)
    separator = make_separator(model_repo, cache_dir=tmp_path / "cache")
    from_disk = separator.separate_to_files(on_disk, pick, tmp_path / "raw")
    passes = separator.model_passes
    # The same song in memory is the same cache entry: read back, not separated again.
    expected = separator.separate(in_memory, pick)
    assert passes > 0 and separator.model_passes == passes
    for name, track in from_disk.items():
        np.testing.assert_array_equal(track.read(), expected[name], err_msg=name)
    fresh = make_separator(model_repo).separate(in_memory, pick)
    for name, track in fresh.items():
        np.testing.assert_array_equal(track, expected[name], err_msg=name)
