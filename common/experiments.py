"""A/B experiments over ensemble strategies: the spec, the assignment, and the report.

An operator sets ``DEMIX_EXPERIMENT`` to ``NAME: VARIANT=SHARE,...``, e.g.
``blend-vs-route: route=50,blend=50``. A variant is a strategy (``route``, ``blend``,
``refine``), for ``blend`` optionally with weights in parentheses separated by ``;``, e.g.
``blend(vocals=0.7;drums=0.9)=50``; shares are positive integers, relative to each other.

Each request and pick is assigned a variant by a hash (:func:`assign_variant`), so a
re-press never flips it and no state is kept. The report (:func:`experiment_report`) turns
the 👍 / 👎 counts per variant into rates with intervals and a test of their difference.

Statistics come from scipy rather than formulas of our own:

- the 95 % interval of a variant's 👍 share is the Wilson score interval,
  ``scipy.stats.binomtest(up, rated).proportion_ci(confidence_level=0.95, method="wilson")``
  (unlike the normal approximation it stays inside 0..1 and holds up at small counts);
- the difference between variants is Pearson's χ² test on the variants × (up, down) table,
  ``scipy.stats.chi2_contingency(table, correction=False)``: for two variants this is
  exactly the two-proportion z-test (χ² = z²), for three or four the test of homogeneity.

scipy (and numpy under it) is imported only inside :func:`experiment_report`: the bot
process imports this module to parse and assign, and must not load numpy just for that.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from separation.config import STRATEGIES, Ensemble
from separation.tracks import SOURCES

MIN_VARIANTS = 2
MAX_VARIANTS = 4
CONFIDENCE = 0.95

_FORMAT = "NAME: VARIANT=SHARE,... (e.g. 'blend-vs-route: route=50,blend=50')"
_VARIANT_FORMAT = "STRATEGY=SHARE or blend(SOURCE=WEIGHT;...)=SHARE"
# The strategy, optional weights in parentheses, and the share after the last '='.
_VARIANT = re.compile(r"(?P<strategy>[^()=]*)(?:\((?P<weights>[^()]*)\))?=(?P<share>[^()=]*)")
_SHARE = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Variant:
    """One arm of an experiment.

    Attributes:
        name: the variant as written in the spec without its share, all whitespace removed,
            e.g. ``route`` or ``blend(vocals=0.7;drums=0.9)``; what storage records per job.
        ensemble: the strategy and weights it separates with (weights not named, and
            ``always``, come from the default ensemble).
        share: its relative share of requests (positive).
    """

    name: str
    ensemble: Ensemble
    share: int


@dataclass(frozen=True)
class Experiment:
    """A running experiment: its name and its two to four variants."""

    name: str
    variants: tuple[Variant, ...]

    def variant(self, name: str) -> Variant | None:
        """The variant called ``name``, or None when the experiment has none by that name."""
        for variant in self.variants:
            if variant.name == name:
                return variant
        return None


def parse_experiment(text: str, default: Ensemble) -> Experiment:
    """Parse a ``DEMIX_EXPERIMENT`` value.

    Args:
        text: ``NAME: VARIANT=SHARE,...`` with two to four variants, e.g.
            ``blend-vs-route: route=50,blend(vocals=0.7;drums=0.9)=50``.
        default: the ensemble configured without the experiment; a variant's weights not
            named, and ``always``, come from it.

    Returns:
        The experiment, its variants in the order written.

    Raises:
        ValueError: with an operator-facing message for anything malformed: no ``:``, an
            empty name, fewer than two or more than four variants, an unknown strategy,
            weights on a strategy other than blend, an unknown source or a weight that is
            not a number within 0..1, a share that is not a positive integer, or two
            variants of the same name.
    """
    name, colon, body = text.partition(":")
    name = name.strip()
    if not colon:
        raise ValueError(f"experiment {text.strip()!r} has no ':'; write {_FORMAT}")
    if not name:
        raise ValueError(f"experiment {text.strip()!r} has no name before ':'; write {_FORMAT}")
    items = body.split(",")
    if not MIN_VARIANTS <= len(items) <= MAX_VARIANTS:
        raise ValueError(
            f"experiment {name!r} has {len(items)} variant(s); it needs "
            f"{MIN_VARIANTS} to {MAX_VARIANTS}: {_FORMAT}"
        )
    variants: list[Variant] = []
    for item in items:
        variant = _parse_variant(name, item, default)
        if any(v.name == variant.name for v in variants):
            raise ValueError(f"experiment {name!r} names variant {variant.name!r} twice")
        variants.append(variant)
    return Experiment(name=name, variants=tuple(variants))


def _parse_variant(experiment: str, item: str, default: Ensemble) -> Variant:
    # Whitespace carries no meaning, and removing it makes the stored name one spelling.
    compact = "".join(item.split())
    where = f"experiment {experiment!r}, variant {compact!r}"
    if not compact:
        raise ValueError(f"experiment {experiment!r} has an empty variant; write {_FORMAT}")
    match = _VARIANT.fullmatch(compact)
    if match is None:
        raise ValueError(f"{where}: write {_VARIANT_FORMAT}")
    strategy, weights_text, share_text = match["strategy"], match["weights"], match["share"]
    if strategy not in STRATEGIES:
        raise ValueError(
            f"{where}: unknown strategy {strategy!r}; use one of {', '.join(STRATEGIES)}"
        )
    if not _SHARE.fullmatch(share_text) or int(share_text) <= 0:
        raise ValueError(f"{where}: share {share_text!r} is not a positive integer")
    weights: dict[str, float] = {}
    if weights_text is not None:
        # Only blend reads the weights; on route or refine they would make a second name
        # for the same behaviour.
        if strategy != "blend":
            raise ValueError(f"{where}: only blend takes weights, not {strategy}")
        weights = _parse_weights(where, weights_text)
    ensemble = Ensemble(
        strategy=strategy,
        blend_weights={**default.blend_weights, **weights},
        always=default.always,
    )
    name = compact[: match.start("share") - 1]
    return Variant(name=name, ensemble=ensemble, share=int(share_text))


def _parse_weights(where: str, text: str) -> dict[str, float]:
    weights: dict[str, float] = {}
    # A trailing ';' is harmless, so empty items are skipped rather than refused.
    for pair in filter(None, text.split(";")):
        source, equals, value = pair.partition("=")
        if not equals:
            raise ValueError(f"{where}: weight {pair!r} is not SOURCE=WEIGHT")
        if source not in SOURCES:
            raise ValueError(
                f"{where}: unknown source {source!r} in the weights; use {', '.join(SOURCES)}"
            )
        if source in weights:
            raise ValueError(f"{where}: the weight of {source} is given twice")
        try:
            weight = float(value)
        except ValueError:
            raise ValueError(f"{where}: weight of {source} {value!r} is not a number") from None
        if not 0.0 <= weight <= 1.0:  # also refuses nan
            raise ValueError(f"{where}: weight of {source} is {value}, not within 0..1")
        weights[source] = weight
    if not weights:
        raise ValueError(f"{where}: empty weights; write blend(SOURCE=WEIGHT;...)")
    return weights


def assign_variant(experiment: Experiment, request_id: int, stems: Iterable[str]) -> Variant:
    """The variant a request and pick separates with.

    The key ``f"{experiment.name}:{request_id}:{'+'.join(sorted(set(stems)))}"`` is hashed
    with SHA-256; the digest as an integer modulo the total share picks the variant by
    cumulative share. Nothing is stored: the same request and pick always get the same
    variant (a re-press never flips it, the order of the pick does not matter), another
    experiment name reshuffles, and over many requests each variant gets its share.

    Args:
        experiment: the running experiment.
        request_id: the request's id.
        stems: the picked source names (a single name may be passed as a string).

    Raises:
        ValueError: an experiment without variants, or with a negative or zero total share.
    """
    if isinstance(stems, str):
        # set("vocals") would be its letters.
        stems = [stems]
    shares = [variant.share for variant in experiment.variants]
    total = sum(shares)
    if not shares or total <= 0 or min(shares) < 0:
        raise ValueError(f"experiment {experiment.name!r} has no variant with a positive share")
    key = f"{experiment.name}:{request_id}:{'+'.join(sorted(set(stems)))}"
    # 256 bits modulo a small total: the bias towards low residues is negligible.
    point = int.from_bytes(hashlib.sha256(key.encode()).digest(), "big") % total
    cumulative = 0
    for variant in experiment.variants:
        cumulative += variant.share
        if point < cumulative:
            return variant
    raise AssertionError("unreachable: point < total")  # pragma: no cover


@dataclass(frozen=True)
class VariantTally:
    """What storage counts for one variant.

    Attributes:
        variant: the variant's name (:attr:`Variant.name`).
        jobs: jobs separated with it.
        up: its jobs with a 👍 (a job is rated when it has a vote).
        down: its jobs with a 👎.
        down_comments: what users wrote after a 👎 on its jobs.
    """

    variant: str
    jobs: int
    up: int
    down: int
    down_comments: tuple[str, ...] = ()


@dataclass(frozen=True)
class VariantReport:
    """One variant's figures.

    Attributes:
        variant: its name.
        jobs: jobs separated with it.
        rated: jobs with a vote (``up + down``).
        up: 👍 votes.
        down: 👎 votes.
        up_share: ``up / rated``; None when nothing is rated.
        ci95: the Wilson score 95 % interval of the 👍 share; None when nothing is rated.
        complaints: per source (and ``artifacts``, ``bleed``, ``quality``) how many 👎
            comments name it (:func:`complaint_counts`); only keys with a count above 0.
    """

    variant: str
    jobs: int
    rated: int
    up: int
    down: int
    up_share: float | None
    ci95: tuple[float, float] | None
    complaints: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (``ci95`` as ``[lo, hi]`` or null)."""
        return {
            "variant": self.variant,
            "jobs": self.jobs,
            "rated": self.rated,
            "up": self.up,
            "down": self.down,
            "up_share": self.up_share,
            "ci95": list(self.ci95) if self.ci95 is not None else None,
            "complaints": dict(self.complaints),
        }


@dataclass(frozen=True)
class ExperimentReport:
    """The experiment's figures: each variant's, and whether their 👍 rates differ.

    Attributes:
        name: the experiment's name.
        variants: each variant's figures, in the order of the tallies.
        p_value: of the χ² test that the variants' 👍 rates differ; None when it cannot be
            computed (fewer than two variants, a variant with nothing rated, or every vote
            the same).
        significant: ``p_value`` is not None and below ``alpha``.
        alpha: the significance level ``significant`` was decided at.
    """

    name: str
    variants: tuple[VariantReport, ...]
    p_value: float | None
    significant: bool
    alpha: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form, what ``demix stats --experiments --json`` prints."""
        return {
            "name": self.name,
            "variants": [variant.to_dict() for variant in self.variants],
            "p_value": self.p_value,
            "significant": self.significant,
            "alpha": self.alpha,
        }


def experiment_report(
    name: str, tallies: Sequence[VariantTally], alpha: float = 0.05
) -> ExperimentReport:
    """Rates, Wilson intervals, complaints and the test of difference for an experiment.

    Args:
        name: the experiment's name.
        tallies: storage's counts per variant.
        alpha: the significance level (the intervals stay at 95 %).

    Returns:
        The report; ``p_value`` None (and not significant) where the test is undefined.

    Raises:
        ValueError: a negative count, or ``alpha`` outside (0, 1).
    """
    # Imported here: the bot imports this module to parse and assign without numpy.
    from scipy.stats import binomtest, chi2_contingency

    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha is {alpha}, not within (0, 1)")
    reports: list[VariantReport] = []
    for tally in tallies:
        if min(tally.jobs, tally.up, tally.down) < 0:
            raise ValueError(f"variant {tally.variant!r} has a negative count: {tally}")
        rated = tally.up + tally.down
        up_share: float | None = None
        ci95: tuple[float, float] | None = None
        if rated > 0:
            up_share = tally.up / rated
            interval = binomtest(tally.up, rated).proportion_ci(
                confidence_level=CONFIDENCE, method="wilson"
            )
            ci95 = (float(interval.low), float(interval.high))
        reports.append(
            VariantReport(
                variant=tally.variant,
                jobs=tally.jobs,
                rated=rated,
                up=tally.up,
                down=tally.down,
                up_share=up_share,
                ci95=ci95,
                complaints=complaint_counts(tally.down_comments),
            )
        )
    p_value: float | None = None
    table = [[report.up, report.down] for report in reports]
    # χ² divides by the expected counts: a variant with nothing rated, or a column of
    # zeros (every vote 👍, or every vote 👎), leaves the test undefined.
    if (
        len(table) >= 2
        and all(up + down > 0 for up, down in table)
        and all(sum(column) > 0 for column in zip(*table, strict=True))
    ):
        p = float(chi2_contingency(table, correction=False).pvalue)
        p_value = None if math.isnan(p) else p
    return ExperimentReport(
        name=name,
        variants=tuple(reports),
        p_value=p_value,
        significant=p_value is not None and p_value < alpha,
        alpha=alpha,
    )


def format_report(report: ExperimentReport) -> str:
    """The report as a plain-text table (``demix stats --experiments``, the admin /stats).

    ASCII apart from the names, so it lines up in a monospace block.
    """
    header = ("variant", "jobs", "rated", "up", "down", "up %", "95% CI", "complaints")
    rows = [
        (
            v.variant,
            str(v.jobs),
            str(v.rated),
            str(v.up),
            str(v.down),
            f"{100 * v.up_share:.1f}" if v.up_share is not None else "-",
            f"{100 * v.ci95[0]:.1f}-{100 * v.ci95[1]:.1f}" if v.ci95 is not None else "-",
            ", ".join(f"{k} {n}" for k, n in v.complaints.items()) or "-",
        )
        for v in report.variants
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"experiment {report.name}"]
    for row in [header, *rows]:
        # Names and complaints left-aligned, numbers right-aligned; no padding at line end.
        cells = [
            cell.ljust(width) if i in (0, len(row) - 1) else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    if report.p_value is None:
        lines.append("difference: not testable yet (a variant without votes, or all votes alike)")
    else:
        p = "p < 0.001" if report.p_value < 0.001 else f"p = {report.p_value:.3f}"
        verdict = "significant" if report.significant else "not significant"
        lines.append(f"difference: {p}, {verdict} at {report.alpha:g}")
    return "\n".join(lines)


# Regex fragments matched at the start of a word, after casefolding and ё -> е: mostly stems
# ("drum" finds "drums" and "drummer", "bass" not "embassy"); "other" must end the word, or
# "otherwise" would count. A rough signal of what users miss, not a classifier.
COMPLAINT_KEYWORDS: dict[str, tuple[str, ...]] = {
    "drums": ("drum", "percussion", "snare", "kick", "cymbal", "hi-?hat", "барабан", "ударн"),
    "bass": ("bass", "бас"),
    "vocals": (
        "vocal",
        "voice",
        "vox",
        "singing",
        "singer",
        "вокал",
        "голос",
        "пение",
        "певиц",
        "певец",
        "поет",
        "поют",
    ),
    "guitar": ("guitar", "гитар"),
    "piano": ("piano", "keys", "keyboard", "пианин", "фортепиан", "клавиш", "роял"),
    "other": (r"others?\b", "остальн", "прочее"),
    "artifacts": (
        "artifact",
        "artefact",
        "glitch",
        "distort",
        "robotic",
        "metallic",
        "артефакт",
        "искаж",
        "металлич",
        "хрип",
    ),
    "bleed": ("bleed", "leak", "пробива", "просачива"),
    "quality": ("quality", "muddy", "muffled", "качеств", "глух", "мутн"),
}
_COMPLAINT_PATTERNS = {
    key: re.compile(r"(?<!\w)(?:" + "|".join(words) + ")")
    for key, words in COMPLAINT_KEYWORDS.items()
}


def complaint_counts(texts: Iterable[str]) -> dict[str, int]:
    """How many comments name each source (and artifacts, bleed, quality).

    English and Russian keywords (:data:`COMPLAINT_KEYWORDS`), case-insensitive, matched at
    the start of a word; a comment counts once per key however often it repeats the word.

    Args:
        texts: the comments users wrote after a 👎.

    Returns:
        Key -> number of comments, sources first in :data:`SOURCES` order; only keys with a
        count above 0.
    """
    counts = dict.fromkeys(COMPLAINT_KEYWORDS, 0)
    for text in texts:
        folded = text.casefold().replace("ё", "е")
        for key, pattern in _COMPLAINT_PATTERNS.items():
            if pattern.search(folded):
                counts[key] += 1
    return {key: n for key, n in counts.items() if n > 0}
