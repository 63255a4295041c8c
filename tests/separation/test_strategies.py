"""The ensemble's strategies: route, blend and refine keep the invariants on real music,
run only the passes their plan needs, and combine the models' estimates as documented."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from separation import SOURCES, STRATEGIES, Audio, Ensemble, EnsembleSeparator, decode_audio
from separation import strategies as st
from separation.errors import ModelUnavailableError
from tests.separation.conftest import audio_of
from tests.support.separators import make_separator

PICKS = (
    list(SOURCES),
    ["vocals"],
    ["piano"],
    ["drums", "bass", "vocals", "piano"],
    ["vocals", "guitar", "other"],
)


@pytest.fixture(scope="module")
def cached(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> EnsembleSeparator:
    """A separator with a cache: a song's model estimates are computed once, and every
    strategy and pick after that combines them (what differs between strategies), as a
    worker does for another pick of a cached song."""
    return make_separator(model_repo, cache_dir=tmp_path_factory.mktemp("strategy-cache"))


@pytest.fixture(scope="module")
def song(multitrack_song: Path) -> Audio:
    """Eight seconds of each real excerpt's mix (a synthetic one always): several chunks."""
    audio = decode_audio(multitrack_song)
    n = 8 * 44100
    reps = -(-n // audio.samples.shape[1])
    return audio_of(np.ascontiguousarray(np.tile(audio.samples, (1, reps))[:, :n]))


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_keeps_the_invariants_on_real_music(
    cached: EnsembleSeparator, song: Audio, strategy: str
) -> None:
    for pick in PICKS:
        tracks = cached.separate(song, pick, ensemble=Ensemble(strategy))
        for name, track in tracks.items():
            assert track.shape == song.samples.shape, (pick, name)
            assert track.dtype == np.float32
        total = np.sum(list(tracks.values()), axis=0, dtype=np.float64)
        # float32 rounding of a handful of tracks at music's levels.
        np.testing.assert_allclose(total, song.samples, atol=2e-5, err_msg=str(pick))


@pytest.mark.parametrize(
    ("ensemble", "pick", "passes"),
    [
        # All six: A's drums, bass and vocals sub-models and B, whatever the strategy.
        (Ensemble("route"), SOURCES, 4),
        (Ensemble("blend"), SOURCES, 4),
        (Ensemble("refine"), SOURCES, 4),
        # Vocals alone: one sub-model of A; the blend would need B too.
        (Ensemble("route"), ["vocals"], 1),
        (Ensemble("blend"), ["vocals"], 1),
        (Ensemble("blend", always=True), ["vocals"], 2),
        # Piano alone: B; refining it needs A's three.
        (Ensemble("refine"), ["piano"], 1),
        (Ensemble("refine", always=True), ["piano"], 4),
        # Drums + bass + vocals + piano runs A's three and B anyway: refined for free.
        (Ensemble("refine"), ["drums", "bass", "vocals", "piano"], 4),
    ],
)
def test_each_strategy_runs_only_the_passes_its_plan_needs(
    model_repo: Path, ensemble: Ensemble, pick: list[str], passes: int
) -> None:
    separator = make_separator(model_repo, ensemble=ensemble)
    separator.separate(audio_of(np.zeros((2, 44100), dtype=np.float32) + 0.1), pick)
    assert separator.model_passes == passes


def _models_alone(separator: EnsembleSeparator, song: Audio) -> tuple[dict, dict]:
    """A's and B's own estimates of each source they have (a weight of 1 or 0 names the
    one model that serves a source)."""
    only_a = Ensemble("blend", {s: 1.0 for s in ("drums", "bass", "vocals", "other")})
    only_b = Ensemble("blend", dict.fromkeys(SOURCES, 0.0))
    a = separator.separate(song, ["drums", "bass", "vocals", "other"], ensemble=only_a)
    b = {source: separator.separate(song, [source], ensemble=only_b)[source] for source in SOURCES}
    return a, b


def test_blend_is_the_weighted_average_of_both_models(
    cached: EnsembleSeparator, song: Audio
) -> None:
    a, b = _models_alone(cached, song)
    blend = Ensemble("blend")
    tracks = cached.separate(song, SOURCES, ensemble=blend)
    for source in ("drums", "bass", "vocals"):
        w = np.float32(blend.blend_weights[source])
        assert 0.0 < w < 1.0
        np.testing.assert_allclose(
            tracks[source], w * a[source] + (1 - w) * b[source], atol=1e-6, err_msg=source
        )
    for source in ("guitar", "piano"):
        np.testing.assert_array_equal(tracks[source], b[source], err_msg=source)


def test_blend_weights_default_to_the_published_ensemble_ratios() -> None:
    weights = Ensemble().blend_weights
    # MVSEP-MDX23: htdemucs_ft : htdemucs_6s = 18:4 drums, 19:5 bass, 10:8 vocals.
    assert weights["drums"] == pytest.approx(18 / 22)
    assert weights["bass"] == pytest.approx(19 / 24)
    assert weights["vocals"] == pytest.approx(10 / 18)
    assert (weights["guitar"], weights["piano"], weights["other"]) == (0.0, 0.0, 0.0)
    assert Ensemble().strategy == "blend"


def test_refine_splits_a_remainder_into_guitar_piano_and_other(
    cached: EnsembleSeparator, song: Audio
) -> None:
    a, _ = _models_alone(cached, song)
    tracks = cached.separate(song, SOURCES, ensemble=Ensemble("refine"))
    for source in ("drums", "bass", "vocals"):
        np.testing.assert_array_equal(tracks[source], a[source], err_msg=source)
    remainder = song.samples - a["drums"] - a["bass"] - a["vocals"]
    np.testing.assert_allclose(
        tracks["guitar"] + tracks["piano"] + tracks["other"], remainder, atol=1e-5
    )


def test_refine_masks_give_each_source_its_own_part_of_the_remainder() -> None:
    # B's estimates as masks: a remainder of three tones in separate bands, with B's
    # estimates of them off in level, comes apart into the tones themselves.
    n = 3 * 44100 + 321
    t = np.arange(n) / 44100
    rng = np.random.default_rng(1)

    def tone(hz: float) -> np.ndarray:
        return (0.2 * np.stack([np.sin(2 * np.pi * hz * t), np.cos(2 * np.pi * hz * t)])).astype(
            np.float32
        )

    guitar, piano, other = tone(440), tone(1500), tone(5000)
    a = {s: (0.05 * rng.standard_normal((2, n))).astype(np.float32) for s in st._FROM_A}
    mix = sum(a.values()) + guitar + piano + other
    found = {("A", s): x for s, x in a.items()}
    found |= {("B", "guitar"): 1.3 * guitar, ("B", "piano"): 0.7 * piano, ("B", "other"): other}
    out = st.combine(Ensemble("refine"), mix, found, SOURCES)
    for source, reference in (("guitar", guitar), ("piano", piano)):
        noise = np.sum((out[source] - reference) ** 2.0)
        assert 10 * np.log10(np.sum(reference**2.0) / noise) > 40, source


def test_refine_streamed_in_any_spans_gives_the_bits_of_the_whole_song() -> None:
    rng = np.random.default_rng(2)
    n = 100_003
    mix = rng.standard_normal((2, n)).astype(np.float32)
    found = {
        (role, s): rng.standard_normal((2, n)).astype(np.float32) for role in "AB" for s in SOURCES
    }
    whole = st.combine(Ensemble("refine"), mix, found, SOURCES)
    combiner = st.plan(Ensemble("refine"), SOURCES).combiner()
    spans = []
    position = 0
    for length in (1, 4095, 17, 30_000, 2_000, n):
        stop = min(n, position + length)
        spans += combiner.push(
            mix[:, position:stop], {k: x[:, position:stop] for k, x in found.items()}
        )
        position = stop
    spans += combiner.finish()
    for source, expected in whole.items():
        streamed = np.concatenate([span[source] for span in spans], axis=-1)
        np.testing.assert_array_equal(streamed, expected, err_msg=source)


def test_a_weight_on_a_source_model_a_lacks_is_a_clear_error(
    separator: EnsembleSeparator, clip: Audio
) -> None:
    with pytest.raises(ModelUnavailableError, match="guitar"):
        separator.separate(clip, ["guitar"], ensemble=Ensemble("blend", {"guitar": 1.0}))


@pytest.mark.parametrize(
    "bad",
    [
        {"strategy": "average"},
        {"blend_weights": {"kazoo": 1.0}},
        {"blend_weights": {"vocals": 1.5}},
        {"blend_weights": {"vocals": -0.1}},
    ],
)
def test_an_invalid_ensemble_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Ensemble(**bad)  # type: ignore[arg-type]


def test_an_ensemble_travels_as_a_dict() -> None:
    ensemble = Ensemble("blend", {"vocals": 0.7}, always=True)
    assert Ensemble.from_dict(ensemble.to_dict()) == ensemble
    assert Ensemble.from_dict({}) == Ensemble()
    assert Ensemble("blend", {"vocals": 0.7}) != Ensemble("blend")
