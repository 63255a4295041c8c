"""Experiments: the spec, the hash assignment, and the report's statistics on simulated votes."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from common.experiments import (
    COMPLAINT_KEYWORDS,
    Experiment,
    ExperimentReport,
    Variant,
    VariantTally,
    assign_variant,
    complaint_counts,
    experiment_report,
    format_report,
    parse_experiment,
)
from separation.config import DEFAULT_BLEND_WEIGHTS, Ensemble
from separation.tracks import SOURCES

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = Ensemble("blend")


# --- parsing ---------------------------------------------------------------------------------


def test_the_documented_example_parses() -> None:
    experiment = parse_experiment("blend-vs-route: route=50,blend=50", DEFAULT)
    assert experiment.name == "blend-vs-route"
    assert [(v.name, v.ensemble.strategy, v.share) for v in experiment.variants] == [
        ("route", "route", 50),
        ("blend", "blend", 50),
    ]
    assert experiment.variant("blend") is experiment.variants[1]
    assert experiment.variant("refine") is None


def test_weights_override_only_the_named_sources_and_always_comes_from_the_default() -> None:
    default = Ensemble("route", {"bass": 0.5}, always=True)
    experiment = parse_experiment(
        " weights : blend( vocals = 0.7 ; drums=0.9 )=3, refine=1 ,route=2", default
    )
    assert experiment.name == "weights"
    first, second, third = experiment.variants
    assert first.name == "blend(vocals=0.7;drums=0.9)"
    assert first.share == 3
    assert first.ensemble.strategy == "blend"
    assert first.ensemble.always is True
    assert dict(first.ensemble.blend_weights) == {
        **DEFAULT_BLEND_WEIGHTS,
        "bass": 0.5,
        "vocals": 0.7,
        "drums": 0.9,
    }
    assert (second.name, second.ensemble.strategy, second.share) == ("refine", "refine", 1)
    assert (third.name, third.share) == ("route", 2)


def test_four_variants_of_one_strategy_with_different_weights_are_distinct() -> None:
    experiment = parse_experiment(
        "v: blend=1,blend(vocals=0)=1,blend(vocals=1;)=1,blend(vocals=0.5)=1", DEFAULT
    )
    assert len(experiment.variants) == 4
    assert [v.ensemble.blend_weights["vocals"] for v in experiment.variants[1:]] == [
        0.0,
        1.0,
        0.5,
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("route=50,blend=50", "no ':'"),
        ("", "no ':'"),
        ("  : route=50,blend=50", "no name"),
        ("x: route=50", "has 1 variant"),
        ("x: ", "has 1 variant"),
        ("x: route=1,blend=1,refine=1,blend(vocals=0.1)=1,blend(vocals=0.2)=1", "has 5"),
        ("x: route=50,mix=50", "unknown strategy 'mix'"),
        ("x: route=50,Blend=50", "unknown strategy 'Blend'"),
        ("x: route=50,=50", "unknown strategy ''"),
        ("x: route=50,blend", "write STRATEGY=SHARE"),
        ("x: route=50,blend(vocals=0.7=50", "write STRATEGY=SHARE"),
        ("x: route=50,blend=50=1", "write STRATEGY=SHARE"),
        ("x: route=50,", "empty variant"),
        ("x: route=50,blend(voice=0.7)=50", "unknown source 'voice'"),
        ("x: route=50,blend(vocals=high)=50", "'high' is not a number"),
        ("x: route=50,blend(vocals=1.5)=50", "not within 0..1"),
        ("x: route=50,blend(vocals=-0.1)=50", "not within 0..1"),
        ("x: route=50,blend(vocals=nan)=50", "not within 0..1"),
        ("x: route=50,blend(vocals)=50", "is not SOURCE=WEIGHT"),
        ("x: route=50,blend(vocals=0.7;vocals=0.8)=50", "given twice"),
        ("x: route=50,blend()=50", "empty weights"),
        ("x: route(vocals=0.7)=50,blend=50", "only blend takes weights"),
        ("x: route=0,blend=50", "share '0' is not a positive integer"),
        ("x: route=-5,blend=50", "is not a positive integer"),
        ("x: route=2.5,blend=50", "is not a positive integer"),
        ("x: route=,blend=50", "share '' is not a positive integer"),
        ("x: route=50,blend=50,route=10", "names variant 'route' twice"),
        ("x: blend(vocals=0.7)=1,blend( vocals=0.7 )=2", "twice"),
    ],
)
def test_a_malformed_spec_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_experiment(text, DEFAULT)
    assert message in str(caught.value)


# --- assignment ------------------------------------------------------------------------------


def _experiment(*shares: int) -> Experiment:
    names = ("route", "blend", "refine", "blend(vocals=0.5)")
    spec = ",".join(f"{name}={share}" for name, share in zip(names, shares, strict=False))
    return parse_experiment(f"exp: {spec}", DEFAULT)


def test_assignment_is_deterministic_and_ignores_the_pick_order() -> None:
    experiment = _experiment(50, 50)
    for request_id in range(200):
        first = assign_variant(experiment, request_id, ["vocals", "drums"])
        assert assign_variant(experiment, request_id, ["drums", "vocals"]) is first
        assert assign_variant(experiment, request_id, ("drums", "vocals", "drums")) is first
        assert assign_variant(experiment, request_id, iter(["vocals", "drums"])) is first


def test_assignment_follows_the_documented_hash() -> None:
    # Offline analysis can recompute a job's variant from this formula alone.
    experiment = _experiment(3, 5, 2)
    for request_id, stems in [(1, ["vocals"]), (42, ["piano", "bass"]), (10**9, list(SOURCES))]:
        key = f"exp:{request_id}:{'+'.join(sorted(set(stems)))}"
        point = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big") % 10
        expected = "route" if point < 3 else "blend" if point < 8 else "refine"
        assert assign_variant(experiment, request_id, stems).name == expected


def test_a_single_stem_passed_as_a_string_is_one_stem() -> None:
    experiment = _experiment(1, 1, 1, 1)
    for request_id in range(100):
        assert assign_variant(experiment, request_id, "vocals") is assign_variant(
            experiment, request_id, ["vocals"]
        )


@pytest.mark.parametrize("shares", [(50, 50), (1, 3), (50, 30, 20), (1, 1, 1, 1)])
def test_assignment_respects_the_shares(shares: tuple[int, ...]) -> None:
    experiment = _experiment(*shares)
    requests = 20_000
    counts = Counter(assign_variant(experiment, i, ["vocals"]).name for i in range(requests))
    total = sum(shares)
    for variant in experiment.variants:
        # A binomial's sd here is at most 0.35 points; 1.5 points is over 4 sd.
        assert abs(counts[variant.name] / requests - variant.share / total) < 0.015


def test_the_pick_and_the_experiment_name_reshuffle_the_assignment() -> None:
    experiment = _experiment(50, 50)
    renamed = parse_experiment("other: route=50,blend=50", DEFAULT)
    ids = range(1000)
    by_pick = [assign_variant(experiment, i, ["vocals"]) for i in ids]
    other_pick = [assign_variant(experiment, i, ["drums"]) for i in ids]
    by_name = [assign_variant(renamed, i, ["vocals"]).name for i in ids]
    # Independent halves agree about half the time.
    assert 400 < sum(a is b for a, b in zip(by_pick, other_pick, strict=True)) < 600
    assert 400 < sum(a.name == b for a, b in zip(by_pick, by_name, strict=True)) < 600


def test_an_experiment_without_shares_cannot_assign() -> None:
    with pytest.raises(ValueError, match="positive share"):
        assign_variant(Experiment("empty", ()), 1, ["vocals"])
    zero = Experiment("zero", (Variant("route", Ensemble("route"), 0),))
    with pytest.raises(ValueError, match="positive share"):
        assign_variant(zero, 1, ["vocals"])


# --- the report ------------------------------------------------------------------------------


def _simulate(
    rng: np.random.Generator, rates: dict[str, float], rated: int = 1000, unrated: int = 100
) -> list[VariantTally]:
    tallies = []
    for name, rate in rates.items():
        up = int((rng.random(rated) < rate).sum())
        tallies.append(VariantTally(name, jobs=rated + unrated, up=up, down=rated - up))
    return tallies


def test_the_report_recovers_known_rates_and_calls_a_ten_point_difference() -> None:
    rates = {"route": 0.60, "blend": 0.70}
    report = experiment_report("ab", _simulate(np.random.default_rng(7), rates))
    for variant in report.variants:
        assert (variant.jobs, variant.rated, variant.up + variant.down) == (1100, 1000, 1000)
        assert variant.ci95 is not None and variant.up_share is not None
        low, high = variant.ci95
        assert low < rates[variant.variant] < high
        assert low < variant.up_share < high
        # Wilson at n = 1000 and p near 0.65: about +-3 points.
        assert 0.04 < high - low < 0.07
    assert report.p_value is not None and report.p_value < 1e-4
    assert report.significant


def test_the_report_does_not_call_equal_rates_different() -> None:
    rates = {"route": 0.65, "blend": 0.65}
    report = experiment_report("aa", _simulate(np.random.default_rng(7), rates))
    for variant in report.variants:
        assert variant.ci95 is not None
        assert variant.ci95[0] < 0.65 < variant.ci95[1]
    assert report.p_value is not None and report.p_value > 0.05
    assert not report.significant


def test_the_wilson_interval_covers_the_true_rate_in_about_95_percent_of_runs() -> None:
    # The single-seed checks above are not luck: over 200 seeds the 95 % interval holds
    # the true rate at least 90 % of the time, and the test of two equal rates rarely fires.
    rates = {"route": 0.60, "blend": 0.70}
    covered = runs = false_alarms = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        for variant in experiment_report("ab", _simulate(rng, rates)).variants:
            assert variant.ci95 is not None
            covered += variant.ci95[0] <= rates[variant.variant] <= variant.ci95[1]
            runs += 1
        null = experiment_report("aa", _simulate(rng, {"a": 0.65, "b": 0.65}))
        false_alarms += null.significant
    assert covered / runs >= 0.90
    assert false_alarms / 200 <= 0.10


def test_two_variants_test_is_the_two_proportion_z_test() -> None:
    report = experiment_report(
        "z", [VariantTally("a", 100, 60, 40), VariantTally("b", 100, 45, 55)]
    )
    pooled = 105 / 200
    z = (0.60 - 0.45) / (pooled * (1 - pooled) * (2 / 100)) ** 0.5
    from scipy.stats import norm

    assert report.p_value == pytest.approx(2 * norm.sf(abs(z)), rel=1e-9)


def test_three_variants_are_tested_together() -> None:
    tallies = _simulate(np.random.default_rng(1), {"a": 0.6, "b": 0.6, "c": 0.75})
    report = experiment_report("three", tallies)
    assert len(report.variants) == 3
    assert report.significant


@pytest.mark.parametrize(
    "tallies",
    [
        [VariantTally("a", 10, 5, 5), VariantTally("b", 10, 0, 0)],  # nothing rated in b
        [VariantTally("a", 10, 5, 0), VariantTally("b", 10, 7, 0)],  # every vote 👍
        [VariantTally("a", 10, 0, 3), VariantTally("b", 10, 0, 4)],  # every vote 👎
        [VariantTally("a", 10, 5, 5)],  # one variant
        [],
    ],
)
def test_an_untestable_report_has_no_p_value(tallies: list[VariantTally]) -> None:
    report = experiment_report("x", tallies)
    assert report.p_value is None
    assert report.significant is False
    json.dumps(report.to_dict())


def test_a_variant_without_votes_has_no_share_or_interval() -> None:
    report = experiment_report("x", [VariantTally("a", 3, 0, 0), VariantTally("b", 4, 1, 0)])
    empty, one = report.variants
    assert (empty.rated, empty.up_share, empty.ci95) == (0, None, None)
    assert one.up_share == 1.0
    assert one.ci95 is not None and one.ci95[1] == pytest.approx(1.0)


def test_alpha_decides_significance() -> None:
    tallies = [VariantTally("a", 200, 120, 80), VariantTally("b", 200, 100, 100)]
    report = experiment_report("x", tallies)
    assert report.p_value is not None and 0.01 < report.p_value < 0.05
    assert report.significant
    assert not experiment_report("x", tallies, alpha=0.01).significant
    with pytest.raises(ValueError, match="alpha"):
        experiment_report("x", tallies, alpha=0.0)


def test_a_negative_count_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        experiment_report("x", [VariantTally("a", 1, -1, 0), VariantTally("b", 1, 1, 0)])


def test_to_dict_is_json_with_the_documented_keys() -> None:
    tallies = [
        VariantTally("route", 12, 6, 4, ("vocals are muddy", "барабаны пропали")),
        VariantTally("blend(vocals=0.7)", 11, 8, 2),
    ]
    data = json.loads(json.dumps(experiment_report("ab", tallies).to_dict()))
    assert set(data) >= {"name", "variants", "p_value", "significant"}
    assert data["name"] == "ab"
    assert isinstance(data["p_value"], float)
    assert data["significant"] is False
    route = data["variants"][0]
    assert set(route) == {
        "variant",
        "jobs",
        "rated",
        "up",
        "down",
        "up_share",
        "ci95",
        "complaints",
    }
    assert (route["variant"], route["jobs"], route["rated"], route["up"], route["down"]) == (
        "route",
        12,
        10,
        6,
        4,
    )
    assert route["up_share"] == 0.6
    assert len(route["ci95"]) == 2
    assert route["complaints"] == {"drums": 1, "vocals": 1, "quality": 1}
    assert data["variants"][1]["complaints"] == {}
    no_votes = experiment_report("x", [VariantTally("a", 1, 0, 0)]).to_dict()
    assert no_votes["variants"][0]["ci95"] is None
    assert no_votes["p_value"] is None


def test_format_report_shows_each_variant_and_its_counts() -> None:
    tallies = [
        VariantTally("route", 1234, 600, 400, ("the vocals bleed",) * 3),
        VariantTally("blend(vocals=0.7;drums=0.9)", 987, 700, 200),
    ]
    report = experiment_report("blend-vs-route", tallies)
    text = format_report(report)
    lines = text.splitlines()
    assert "blend-vs-route" in lines[0]
    route = next(line for line in lines if line.startswith("route "))
    blend = next(line for line in lines if line.startswith("blend(vocals=0.7;drums=0.9) "))
    for line, numbers in [(route, ("1234", "1000", "600", "400")), (blend, ("987", "900"))]:
        for number in numbers:
            assert f" {number} " in line
    assert "60.0" in route and "77.8" in blend
    assert "vocals 3" in route and "bleed 3" in route
    assert "p < 0.001" in text and "significant" in text and "not significant" not in text
    # A table: the header and the rows have their columns at the same places.
    header = lines[1]
    assert header.index("jobs") + len("jobs") == route.index("1234") + len("1234")
    assert all(line == line.rstrip() for line in lines)


def test_format_report_says_when_the_difference_is_not_testable() -> None:
    report = experiment_report("x", [VariantTally("a", 5, 0, 0), VariantTally("b", 5, 2, 1)])
    text = format_report(report)
    assert "not testable" in text
    assert " - " in text.splitlines()[2]
    manual = ExperimentReport("m", (), p_value=0.2, significant=False)
    assert "p = 0.200, not significant at 0.05" in format_report(manual)


# --- complaints ------------------------------------------------------------------------------


def test_complaints_are_counted_once_per_comment_in_both_languages() -> None:
    counts = complaint_counts(
        [
            "Vocals are gone, the VOICE is robotic, vocal vocal vocal",
            "вокал тихий, голос плывёт",
            "Барабаны и ударные пропали",
            "The drums and the bass",
            "бас гудит, а гитара хрипит",
            "Guitar bleeds into the piano",
            "Клавиши и фортепиано не отделились",
            "the keys are muddy",
            "остальное звучит плохо",
            "otherwise fine",  # not `other`
            "embassy",  # not `bass`
            "певица поёт тихо",
            "",
        ]
    )
    assert counts == {
        "drums": 2,
        "bass": 2,
        "vocals": 3,
        "guitar": 2,
        "piano": 3,
        "other": 1,
        "artifacts": 2,
        "bleed": 1,
        "quality": 1,
    }
    assert list(counts)[:6] == list(SOURCES)


def test_complaint_keys_start_with_the_sources_and_omit_zero_counts() -> None:
    assert tuple(COMPLAINT_KEYWORDS)[: len(SOURCES)] == SOURCES
    assert complaint_counts(["great, thanks"]) == {}
    assert complaint_counts([]) == {}


# --- the bot stays light ---------------------------------------------------------------------


def test_parsing_and_assigning_load_no_numpy() -> None:
    # The bot process imports this module; scipy, and numpy under it, load only for a report.
    script = (
        "import sys\n"
        "from common.experiments import parse_experiment, assign_variant\n"
        "from separation.config import Ensemble\n"
        "e = parse_experiment('x: route=1,blend=1', Ensemble())\n"
        "assign_variant(e, 1, ['vocals'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'scipy')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    assert result.stdout.strip() == "[]"
