"""The track table of DESIGN.md: which tracks a pick delivers, and that they sum to the mix."""

from __future__ import annotations

import numpy as np
import pytest

from separation import SOURCES, UnknownStemError, plan_tracks, sources_to_estimate
from separation.mixing import assemble_tracks


@pytest.mark.parametrize("source", SOURCES)
def test_one_source_gives_it_and_the_mix_without_it(source: str) -> None:
    assert plan_tracks([source]) == (source, f"no_{source}")


def test_two_sources_give_each_and_rest_in_stable_order() -> None:
    assert plan_tracks(["vocals", "drums"]) == ("drums", "vocals", "rest")
    assert plan_tracks(["drums", "vocals"]) == ("drums", "vocals", "rest")


def test_five_sources_give_each_and_rest() -> None:
    five = ["other", "piano", "guitar", "bass", "drums"]
    assert plan_tracks(five) == ("drums", "bass", "guitar", "piano", "other", "rest")


def test_all_six_give_the_six_sources() -> None:
    assert plan_tracks(reversed(SOURCES)) == SOURCES


def test_duplicates_case_and_spaces_are_forgiven() -> None:
    assert plan_tracks([" Vocals", "vocals"]) == ("vocals", "no_vocals")


def test_empty_pick_is_an_unknown_stem_error() -> None:
    with pytest.raises(UnknownStemError):
        plan_tracks([])


def test_unknown_name_is_refused_with_the_valid_names() -> None:
    with pytest.raises(UnknownStemError) as caught:
        plan_tracks(["vocals", "kazoo"])
    assert "kazoo" in caught.value.user_message
    assert "drums" in caught.value.user_message
    assert isinstance(caught.value, ValueError)


def test_all_six_need_no_estimate_of_other() -> None:
    assert sources_to_estimate(SOURCES) == ("drums", "bass", "vocals", "guitar", "piano")
    assert sources_to_estimate(["other"]) == ("other",)
    assert sources_to_estimate(["other", "vocals"]) == ("vocals", "other")


@pytest.mark.parametrize(
    "pick",
    [["vocals"], ["bass", "piano"], ["drums", "bass", "vocals", "guitar", "piano"], SOURCES],
)
def test_assembled_tracks_sum_to_the_mix(pick: list[str]) -> None:
    rng = np.random.default_rng(1)
    mix = rng.uniform(-1, 1, (2, 5000)).astype(np.float32)
    estimates = {s: rng.uniform(-1, 1, (2, 5000)).astype(np.float32) for s in SOURCES}
    tracks = assemble_tracks(mix, estimates, pick)
    assert tuple(tracks) == plan_tracks(pick)
    total = np.sum(list(tracks.values()), axis=0)
    assert np.abs(total - mix).max() <= 1e-4
    for name in sources_to_estimate(pick):
        np.testing.assert_array_equal(tracks[name], estimates[name])


def test_estimate_of_wrong_length_is_refused() -> None:
    mix = np.zeros((2, 100), np.float32)
    with pytest.raises(ValueError, match="shape"):
        assemble_tracks(mix, {"vocals": np.zeros((2, 99), np.float32)}, ["vocals"])
