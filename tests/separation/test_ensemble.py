"""The ensemble over tiny random models: track table, sums, sub-model selection, progress,
cancellation, cache, configuration errors."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from separation import (
    SOURCES,
    Audio,
    Ensemble,
    EnsembleSeparator,
    ModelUnavailableError,
    SeparationCancelled,
    SeparatorConfig,
    UnknownStemError,
    decode_audio,
    encode_tracks,
    plan_tracks,
    resolve_device,
)
from separation.ensemble import chunk_offsets
from tests.separation.conftest import audio_of, demucs_estimate
from tests.support.audio import decode, make_song, music_like, write_audio
from tests.support.separators import make_separator

PICKS = [
    ["vocals"],
    ["guitar"],
    ["other"],
    ["vocals", "drums"],
    ["drums", "bass", "vocals", "guitar", "piano"],
    list(SOURCES),
]


def assert_tracks_sum_to_mix(tracks: dict[str, np.ndarray], audio: Audio) -> None:
    for name, track in tracks.items():
        assert track.dtype == np.float32, name
        assert track.shape == audio.samples.shape, name
        assert np.isfinite(track).all(), name
    total = np.sum(np.stack(list(tracks.values())), axis=0, dtype=np.float32)
    assert np.abs(total - audio.samples).max() <= 1e-4


@pytest.mark.parametrize("pick", PICKS, ids=lambda pick: "+".join(pick))
def test_every_row_of_the_track_table(
    separator: EnsembleSeparator, clip: Audio, pick: list[str]
) -> None:
    tracks = separator.separate(clip, pick)
    assert tuple(tracks) == plan_tracks(pick)
    assert_tracks_sum_to_mix(tracks, clip)
    # The separated sources are the model's, not silence or the mix itself.
    first = tracks[plan_tracks(pick)[0]]
    assert np.abs(first).max() > 0
    assert not np.allclose(first, clip.samples)


@pytest.mark.parametrize(
    ("suffix", "samplerate", "channels"),
    [(".mp3", 8000, 1), (".mp3", 22050, 2), (".flac", 48000, 2), (".wav", 96000, 2)],
)
def test_songs_at_any_rate_separate_to_their_length(
    separator: EnsembleSeparator, tmp_path: Path, suffix: str, samplerate: int, channels: int
) -> None:
    audio = decode_audio(make_song(tmp_path / f"s{suffix}", 1.5, samplerate, channels))
    tracks = separator.separate(audio, ["vocals", "bass"])
    assert_tracks_sum_to_mix(tracks, audio)


def test_music_excerpt_separates(separator: EnsembleSeparator, multitrack_song: Path) -> None:
    audio = decode_audio(multitrack_song)
    tracks = separator.separate(audio, ["vocals", "piano"])
    assert tuple(tracks) == ("vocals", "piano", "rest")
    assert_tracks_sum_to_mix(tracks, audio)


@pytest.mark.parametrize("samples", [1, 300, 13_000], ids=lambda n: f"{n}-samples")
def test_very_short_audio_separates(separator: EnsembleSeparator, samples: int) -> None:
    audio = audio_of(music_like(1.0)[:, :samples].copy())
    tracks = separator.separate(audio, ["vocals"])
    assert_tracks_sum_to_mix(tracks, audio)


def test_digital_silence_separates_to_silence(separator: EnsembleSeparator) -> None:
    audio = audio_of(np.zeros((2, 44100), np.float32))
    tracks = separator.separate(audio, ["vocals", "piano"])
    assert_tracks_sum_to_mix(tracks, audio)
    assert all(np.abs(track).max() < 1e-6 for track in tracks.values())


def _one_sample(folder: Path) -> Path:
    return write_audio(folder / "one.wav", np.array([[0.5], [-0.25]], np.float32), 44100)


def _hot_float(folder: Path) -> Path:
    hot = music_like(1.5) * np.float32(2.0 / 0.9)  # peaks at +6 dBFS
    return write_audio(folder / "hot.wav", hot, 44100, codec="pcm_f32le")


def _hi_res_surround(folder: Path) -> Path:
    return make_song(folder / "surround.wav", 1.5, 192000, 8)


ODD_FILES = {
    "1-sample wav": _one_sample,
    "+6 dBFS float wav": _hot_float,
    "192 kHz 7.1 wav": _hi_res_surround,
}


@pytest.mark.parametrize("kind", list(ODD_FILES))
def test_odd_files_separate_and_encode(
    separator: EnsembleSeparator, tmp_path: Path, kind: str
) -> None:
    """Decoded, separated (short input is padded for the model, then trimmed) and encoded;
    levels above full scale survive all three steps."""
    audio = decode_audio(ODD_FILES[kind](tmp_path))
    tracks = separator.separate(audio, ["vocals", "drums"])
    assert_tracks_sum_to_mix(tracks, audio)
    decoded = [decode(path) for path in encode_tracks(tracks, tmp_path / "out", "Odd")]
    assert all(d.shape == audio.samples.shape for d in decoded)
    if audio.samples.shape[1] == 1:
        return  # a single sample holds no signal to measure coding noise or peaks on
    total = np.sum(decoded, axis=0)
    error = total - audio.samples
    snr_db = 10 * np.log10(np.sum(audio.samples**2) / np.sum(error**2))
    assert snr_db > 15
    # Nothing clipped at full scale: the hot file's +6 dBFS peaks come back from the mp3s,
    # give or take the coding noise of three tracks.
    assert np.abs(total).max() == pytest.approx(np.abs(audio.samples).max(), rel=0.15)


def test_separation_is_deterministic(separator: EnsembleSeparator, clip: Audio) -> None:
    first = separator.separate(clip, ["bass"])
    second = separator.separate(clip, ["bass"])
    for name in first:
        np.testing.assert_array_equal(first[name], second[name])


@pytest.mark.parametrize(
    ("pick", "passes", "loaded"),
    [
        (["vocals"], 1, ("htdemucs_ft",)),
        (["drums", "vocals"], 2, ("htdemucs_ft",)),
        (["guitar"], 1, ("htdemucs_6s",)),
        (["other", "piano"], 1, ("htdemucs_6s",)),
        # drums, bass and vocals from three sub-models of A; guitar and piano from B;
        # `other` is the residual. A's `other` sub-model never runs.
        (list(SOURCES), 4, ("htdemucs_ft", "htdemucs_6s")),
    ],
)
def test_runs_only_the_sub_models_the_pick_needs(
    model_repo: Path, clip: Audio, pick: list[str], passes: int, loaded: tuple[str, ...]
) -> None:
    separator = make_separator(model_repo)
    separator.separate(clip, pick)
    assert separator.model_passes == passes
    assert set(separator.loaded_models) == set(loaded)


def test_matches_plain_demucs_apply_model_over_several_chunks(
    separator: EnsembleSeparator, model_repo: Path
) -> None:
    """Our chunked pass of one sub-model reproduces demucs's apply_model on that model.

    With htdemucs_ft's identity bag weights, A's vocals are its vocals sub-model's output."""
    assert separator.precision == "fp32", "compared with demucs's fp32 within 2e-5"
    audio = audio_of(music_like(10.0, seed=5))  # two chunks
    # Route: each source from one model's passes (blend would average vocals with B's).
    ours = separator.separate(audio, ["vocals", "guitar"], ensemble=Ensemble("route"))
    for name, source in (("htdemucs_ft", "vocals"), ("htdemucs_6s", "guitar")):
        expected, _ = demucs_estimate(model_repo, audio, name, source)
        np.testing.assert_allclose(ours[source], expected, atol=2e-5)


def test_a_last_chunk_that_adds_nothing_is_not_run(model_repo: Path) -> None:
    """A 7 s song: apply_model runs a second chunk at 5.85 s for samples the first chunk
    holds too; our pass runs the first alone, and matches apply_model before 5.85 s."""
    audio = audio_of(music_like(7.0, seed=5))
    seen: list[float] = []
    ours = make_separator(model_repo).separate(audio, ["vocals"], progress=seen.append)
    assert len(seen) == 2 + 1  # start, one chunk, end

    expected, model = demucs_estimate(model_repo, audio)
    second_chunk = int(0.75 * model.segment * model.samplerate)
    assert second_chunk < audio.samples.shape[1]
    np.testing.assert_allclose(
        ours["vocals"][:, :second_chunk], expected[:, :second_chunk], atol=2e-5
    )
    assert np.abs(ours["vocals"][:, second_chunk:] - expected[:, second_chunk:]).max() > 1e-4
    assert_tracks_sum_to_mix(ours, audio)


@pytest.mark.parametrize("seconds", [7.8, 10.0, 14.0, 30.0, 240.0, 241.0])
def test_chunks_cover_the_song_as_apply_model_places_them(seconds: float) -> None:
    """apply_model's chunk starts up to the first chunk that reaches the song's end."""
    segment = int(7.8 * 44100)
    length = int(seconds * 44100)
    offsets = chunk_offsets(length, segment, 0.25)
    theirs = range(0, length, int(0.75 * segment))
    assert list(offsets) == list(theirs)[: len(offsets)]
    assert offsets[-1] + segment >= length  # every sample is in a chunk
    assert len(offsets) == 1 or offsets[-2] + segment < length  # each chunk holds new samples
    assert len(theirs) - len(offsets) in (0, 1)


def test_a_third_of_song_lengths_save_a_chunk() -> None:
    segment = int(7.8 * 44100)
    lengths = range(segment + 1, 20 * segment, 997)
    saved = [
        len(range(0, n, int(0.75 * segment))) - len(chunk_offsets(n, segment, 0.25))
        for n in lengths
    ]
    assert set(saved) == {0, 1}
    assert sum(saved) / len(saved) == pytest.approx(1 / 3, abs=0.01)


def test_progress_rises_from_zero_to_one(separator: EnsembleSeparator) -> None:
    audio = audio_of(music_like(10.0, seed=2))  # two chunks per pass
    seen: list[float] = []
    separator.separate(audio, ["vocals", "guitar"], progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert seen == sorted(seen)
    assert len(seen) >= 2 + 4  # start, 2 passes x 2 chunks, end


@pytest.mark.parametrize("batch_size", [1, 4])
def test_cancel_between_chunks_stops_the_work(model_repo: Path, batch_size: int) -> None:
    # A batch is gathered chunk by chunk: cancelling stops it before its forward pass.
    separator = make_separator(model_repo, batch_size=batch_size)
    audio = audio_of(music_like(10.0, seed=2))
    polls = 0

    def should_cancel() -> bool:
        nonlocal polls
        polls += 1
        return polls >= 2

    with pytest.raises(SeparationCancelled):
        separator.separate(audio, SOURCES, should_cancel=should_cancel)
    # Cancelled on the second chunk of eight: the rest never ran.
    assert polls == 2
    assert separator.model_passes == 0
    # The instance still works afterwards.
    tracks = separator.separate(audio, ["vocals"], should_cancel=lambda: False)
    assert_tracks_sum_to_mix(tracks, audio)


def test_unknown_stems_are_refused_before_any_model_runs(model_repo: Path, clip: Audio) -> None:
    separator = make_separator(model_repo)
    for pick in ([], ["voice"], ["vocals", ""]):
        with pytest.raises(UnknownStemError):
            separator.separate(clip, pick)
    assert separator.loaded_models == ()


def test_samples_of_the_wrong_shape_are_refused(separator: EnsembleSeparator) -> None:
    for samples in (np.zeros((1, 100), np.float32), np.zeros((2, 0), np.float32)):
        with pytest.raises(ValueError, match="2, n"):
            separator.separate(audio_of(samples), ["vocals"])


def test_float64_samples_are_accepted(separator: EnsembleSeparator, clip: Audio) -> None:
    as_float64 = audio_of(clip.samples.astype(np.float64))
    tracks = separator.separate(as_float64, ["vocals"])
    np.testing.assert_array_equal(tracks["vocals"], separator.separate(clip, ["vocals"])["vocals"])


async def test_can_run_in_worker_threads(separator: EnsembleSeparator, clip: Audio) -> None:
    first, second = await asyncio.gather(
        asyncio.to_thread(separator.separate, clip, ["bass"]),
        asyncio.to_thread(separator.separate, clip, ["bass"]),
    )
    np.testing.assert_array_equal(first["bass"], second["bass"])


# -- blend weights and configuration --------------------------------------------------


def test_blend_weight_mixes_both_models(model_repo: Path, clip: Audio) -> None:
    def vocals(weight_a: float, always: bool = True) -> tuple[np.ndarray, int]:
        ensemble = Ensemble("blend", {"vocals": weight_a}, always=always)
        separator = make_separator(model_repo, ensemble=ensemble)
        return separator.separate(clip, ["vocals"])["vocals"], separator.model_passes

    only_a, passes_a = vocals(1.0)
    only_b, passes_b = vocals(0.0)
    blended, passes_both = vocals(0.25)
    # Vocals alone runs no B pass unless the ensemble says always: A's vocals.
    routed, passes_routed = vocals(0.25, always=False)
    assert (passes_a, passes_b, passes_both, passes_routed) == (1, 1, 2, 1)
    np.testing.assert_allclose(blended, 0.25 * only_a + 0.75 * only_b, atol=1e-6)
    np.testing.assert_array_equal(routed, only_a)


@pytest.mark.parametrize(
    "bad",
    [
        {"overlap": 1.0},
        {"shifts": -1},
        {"models": ("only_one",)},
    ],
)
def test_invalid_configuration_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SeparatorConfig(**bad)  # type: ignore[arg-type]


def _signatures(repo: Path, name: str) -> list[str]:
    return [str(sig) for sig in yaml.safe_load((repo / f"{name}.yaml").read_text())["models"]]


def test_a_pick_loads_only_the_sub_models_it_runs(model_repo: Path, clip: Audio) -> None:
    drums, bass, _other, vocals = _signatures(model_repo, "htdemucs_ft")
    (six,) = _signatures(model_repo, "htdemucs_6s")
    separator = make_separator(model_repo)
    separator.separate(clip, ["vocals"])
    # The bag's sources are read from its first sub-model's package, which is not built.
    assert separator.loaded_sub_models() == {"htdemucs_ft": [vocals]}
    separator.separate(clip, list(SOURCES))
    assert separator.loaded_sub_models() == {
        "htdemucs_ft": [drums, bass, vocals],
        "htdemucs_6s": [six],
    }


def _rewrite_package(
    model_repo: Path, tmp_path: Path, index: int, change: Callable[[dict[str, Any]], dict[str, Any]]
) -> tuple[Path, str]:
    """A copy of ``model_repo`` whose htdemucs_ft sub-model ``index`` is saved again, in
    demucs's format, as ``change`` makes its package; the copy and that signature."""
    from demucs.states import save_with_checksum

    repo = tmp_path / "models"
    shutil.copytree(model_repo, repo)
    signature = _signatures(repo, "htdemucs_ft")[index]
    path = next(repo.glob(f"{signature}-*.th"))
    package = change(torch.load(path, map_location="cpu", weights_only=False))
    path.unlink()
    save_with_checksum(package, repo / f"{signature}.th")
    return repo, signature


def _sources_positional(package: dict[str, Any]) -> dict[str, Any]:
    # The sources passed positionally: demucs builds it the same, its kwargs do not say.
    kwargs = dict(package["kwargs"])
    return {**package, "args": (kwargs.pop("sources"),), "kwargs": kwargs}


def _sources_reordered(package: dict[str, Any]) -> dict[str, Any]:
    # The same shapes, so demucs loads it; the bag's weights would fall on the wrong stems.
    drums, bass, *rest = package["kwargs"]["sources"]
    return {**package, "kwargs": {**package["kwargs"], "sources": [bass, drums, *rest]}}


def test_a_bag_whose_first_package_does_not_name_its_sources_builds_it(
    model_repo: Path, tmp_path: Path, clip: Audio
) -> None:
    repo, drums = _rewrite_package(model_repo, tmp_path, 0, _sources_positional)
    vocals = _signatures(repo, "htdemucs_ft")[3]
    separator = make_separator(repo)
    assert set(separator.separate(clip, ["vocals"])) == {"vocals", "no_vocals"}
    assert separator.loaded_sub_models() == {"htdemucs_ft": [drums, vocals]}


def test_a_sub_model_naming_other_sources_than_its_bag_is_model_unavailable(
    model_repo: Path, tmp_path: Path, clip: Audio
) -> None:
    repo, _vocals = _rewrite_package(model_repo, tmp_path, 3, _sources_reordered)
    separator = make_separator(repo)
    with pytest.raises(ModelUnavailableError, match="not the bag's"):
        separator.separate(clip, ["vocals"])
    assert set(separator.separate(clip, ["drums"])) == {"drums", "no_drums"}


def test_warm_up_loads_what_some_pick_can_run_and_nothing_else(model_repo: Path) -> None:
    drums, bass, other, vocals = _signatures(model_repo, "htdemucs_ft")
    (six,) = _signatures(model_repo, "htdemucs_6s")
    by_design = make_separator(model_repo)
    by_design.warm_up()
    # Under the default blend weights `other` comes from htdemucs_6s, never from A.
    assert by_design.loaded_sub_models() == {
        "htdemucs_ft": [drums, bass, vocals],
        "htdemucs_6s": [six],
    }
    other_from_a = make_separator(model_repo, ensemble=Ensemble("blend", {"other": 1.0}))
    other_from_a.warm_up()
    assert other_from_a.loaded_sub_models()["htdemucs_ft"] == [drums, bass, other, vocals]


def test_a_missing_sub_model_fails_only_the_picks_that_run_it(
    model_repo: Path, tmp_path: Path, clip: Audio
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(model_repo, repo)
    vocals = _signatures(repo, "htdemucs_ft")[3]
    next(repo.glob(f"{vocals}-*.th")).unlink()
    separator = make_separator(repo)
    assert set(separator.separate(clip, ["drums"])) == {"drums", "no_drums"}
    with pytest.raises(ModelUnavailableError, match=vocals):
        separator.separate(clip, ["vocals"])


@pytest.mark.parametrize(
    "weights", [[[1.0, 0.0]] * 4, [[1.0, 0.0, 0.0, 0.0]] * 3, [["loud", 0, 0, 0]] * 4]
)
def test_bag_weights_that_do_not_fit_are_model_unavailable(
    model_repo: Path, tmp_path: Path, clip: Audio, weights: list[list[object]]
) -> None:
    repo = tmp_path / "models"
    shutil.copytree(model_repo, repo)
    bag_file = repo / "htdemucs_ft.yaml"
    bag = yaml.safe_load(bag_file.read_text())
    bag_file.write_text(yaml.safe_dump({**bag, "weights": weights}))
    with pytest.raises(ModelUnavailableError, match="weights of htdemucs_ft"):
        make_separator(repo).separate(clip, ["vocals"])


def test_missing_model_or_folder_is_model_unavailable(
    model_repo: Path, tmp_path: Path, clip: Audio
) -> None:
    missing_name = make_separator(model_repo, models=("htdemucs_ft", "no_such_model"))
    with pytest.raises(ModelUnavailableError, match="no_such_model"):
        missing_name.separate(clip, ["piano"])
    missing_dir = make_separator(tmp_path / "nowhere")
    with pytest.raises(ModelUnavailableError):
        missing_dir.separate(clip, ["vocals"])


def test_device_names_are_taken_as_given() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("mps") == torch.device("mps")


@pytest.mark.parametrize(
    ("cuda", "mps", "expected"),
    [(True, True, "cuda"), (True, False, "cuda"), (False, True, "mps"), (False, False, "cpu")],
)
def test_auto_device_prefers_cuda_then_mps_then_cpu(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, mps: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert resolve_device("auto") == torch.device(expected)
