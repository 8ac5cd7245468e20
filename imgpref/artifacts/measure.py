"""Per-image scores and flags: every detector on one image, alone or against its base image.

``measure`` runs the detectors once per image (``Measurement``); ``image_scores`` turns one measurement,
or a tuned/base pair, into a flat ``{name: float}`` dict; ``image_flags`` names the detectors that trip
under ``ArtifactThresholds``. The default thresholds are the calibrated ones of ``bench/artifacts.md``
(``python bench/artifacts_calibration.py`` re-measures them).

Score names (``p`` = each grid period):

- ``grid_p{p}_fold`` the fold statistic (the mean p x p tile's energy in null standard deviations),
  ``grid_p{p}`` pooled lattice peak ratio, ``grid_p{p}_peak`` its largest single ratio, ``grid_p{p}_rms``
  the rms in 8-bit levels of the lattice points that stand out (`imgpref.artifacts.grid`); the tone
  statistics of `imgpref.artifacts.tone`;
- with a base image also ``grid_p{p}_excess`` / ``grid_p{p}_excess_rms`` (differential grid),
  ``grid_p{p}_base`` (the base's own pooled ratio), ``<tone>_change`` and ``saturation_change``.

Flags: ``grid_p{p}`` (alone: fold statistic and rms; with a base: excess ratio and excess rms), and with
a base only, because a dark or gray picture is no artifact by itself: ``darker``, ``desaturated``,
``crushed_blacks``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from imgpref.artifacts.defaults import DEFAULT_MAX_SIZE, DEFAULT_PERIODS
from imgpref.artifacts.grid import GridResult, grid_excess, grid_scores
from imgpref.artifacts.images import luma, to_rgb_uint8
from imgpref.artifacts.tone import tone_change, tone_stats

# Calibrated defaults (bench/artifacts.md, "Chosen thresholds"): each is the smallest round value whose
# false-positive rate on split A of the calibration set (clean images, benign pairs, patterns present in
# base and tuned alike) is at most 0.3% (grid) or 0.25% (each tone flag); GRID_RMS is set by design.
GRID_FOLD = 5.3
#: Not a flag threshold since the fold statistic replaced the pooled ratio for single images: the pooled
#: ratio clean images stay below (calibrated the same way), which the report's spectrum figure marks and
#: the ``artifact_penalty`` reward (imgpref.rewards.artifact) scales its grid penalty by.
GRID_RATIO = 4.4
GRID_EXCESS_RATIO = 2.6
GRID_RMS = 0.2
JPEG_GRID_RMS = 0.45
DARKER = 0.025
DESATURATED = 0.04
CRUSHED_BLACKS = 0.01
#: JPEG's block side (px): lattices at its multiples are partly JPEG's own in a JPEG file.
JPEG_BLOCK = 8


@dataclass
class ArtifactThresholds:
    """When a detector trips. The fold statistic is in null standard deviations, ratios are pooled
    lattice peak ratios, rms values 8-bit levels, tone changes fractions (0.03 = 3%)."""

    grid_fold: float = GRID_FOLD
    """Single image: a period's fold statistic ``grid_p{p}_fold`` (null standard deviations) at or above
    this trips (with grid_rms)."""
    grid_ratio: float = GRID_RATIO
    """Single image: the pooled peak ratio ``grid_p{p}`` that clean images stay below. Not a flag
    threshold (the fold statistic is); the report marks lattice points at or above it and the
    ``artifact_penalty`` reward scales its grid penalty by it."""
    grid_rms: float = GRID_RMS
    """... and only when the lattice pattern's rms (levels) is at least this: a lattice can stand out of
    a noiseless 8-bit ramp at 1/100 of a level, which nobody can see."""
    jpeg_grid_rms: float = JPEG_GRID_RMS
    """JPEG files, periods that are multiples of 8 (JPEG's own 8x8 blocks, 16x16 with 4:2:0 chroma): the
    rms threshold used instead of grid_rms, above the blocking of quality >= 75 files (alone or against a
    reference, whose blocks differ as soon as the content moves)."""
    grid_excess_ratio: float = GRID_EXCESS_RATIO
    """With a base image: pooled ``r_tuned / max(r_base, 1)`` at or above this trips (with grid_rms on the
    excess rms)."""
    darker: float = DARKER
    """With a base image: mean luma lower by at least this fraction of the base's trips ``darker``."""
    desaturated: float = DESATURATED
    """With a base image: colourfulness per unit of luma (``saturation_change``) lower by at least this
    fraction trips ``desaturated``."""
    crushed_blacks: float = CRUSHED_BLACKS
    """With a base image: share of crushed-black pixels up by at least this (absolute) trips."""

    def __post_init__(self) -> None:
        if self.grid_fold <= 0:
            raise ValueError(f"grid_fold must be > 0 (null standard deviations), got {self.grid_fold}")
        for name in ("grid_ratio", "grid_excess_ratio"):
            if getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be > 1 (a ratio of 1 is plain background), got {getattr(self, name)}")
        for name in ("grid_rms", "jpeg_grid_rms", "darker", "desaturated", "crushed_blacks"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True)
class Measurement:
    """What the detectors saw in one image: the lattice analysis, the tone statistics and the size."""

    grid: GridResult
    tone: dict[str, float]
    size: tuple[int, int]


def measure(image: Any, periods: tuple[int, ...] = DEFAULT_PERIODS, max_size: int = DEFAULT_MAX_SIZE) -> Measurement:
    """Run the grid and tone detectors on one image."""
    rgb = to_rgb_uint8(image)
    y = luma(rgb)
    return Measurement(grid=grid_scores(y, tuple(periods), max_size), tone=tone_stats(rgb, y), size=rgb.shape[:2])


def image_scores(tuned: Measurement, base: Measurement | None = None) -> dict[str, float]:
    """Flat scores of one image, differential when ``base`` (same prompt and seed) is given."""
    scores: dict[str, float] = {}
    for p in tuned.grid.scores:
        scores[f"grid_p{p}"] = tuned.grid.scores[p]
        scores[f"grid_p{p}_peak"] = tuned.grid.peaks[p]
        scores[f"grid_p{p}_rms"] = tuned.grid.rms[p]
        scores[f"grid_p{p}_fold"] = tuned.grid.folds[p]
    scores.update(tuned.tone)
    if base is not None:
        excess, excess_rms = grid_excess(tuned.grid, base.grid)
        for p in tuned.grid.scores:
            scores[f"grid_p{p}_base"] = base.grid.scores.get(p, math.nan)
            scores[f"grid_p{p}_excess"] = excess[p]
            scores[f"grid_p{p}_excess_rms"] = excess_rms[p]
        scores.update(tone_change(tuned.tone, base.tone))
    return scores


def grid_periods(scores: dict[str, float]) -> list[int]:
    """The grid periods present in a scores dict (from its ``grid_p{p}`` keys)."""
    return sorted(int(k[len("grid_p") :]) for k in scores if k.startswith("grid_p") and k[len("grid_p") :].isdigit())


def image_flags(scores: dict[str, float], thresholds: ArtifactThresholds, jpeg: bool = False) -> list[str]:
    """Names of the detectors that trip. ``jpeg``: the image was read from a JPEG file (grid flags at
    multiples of 8 px then need ``jpeg_grid_rms``). NaN scores (image too small) never trip."""
    flags = []
    differential = "mean_luma_change" in scores
    for p in grid_periods(scores):
        if differential:
            stat, rms = scores[f"grid_p{p}_excess"], scores[f"grid_p{p}_excess_rms"]
            min_stat = thresholds.grid_excess_ratio
        else:
            stat, rms = scores[f"grid_p{p}_fold"], scores[f"grid_p{p}_rms"]
            min_stat = thresholds.grid_fold
        min_rms = thresholds.jpeg_grid_rms if jpeg and p % JPEG_BLOCK == 0 else thresholds.grid_rms
        if stat >= min_stat and rms >= min_rms:  # NaN compares False
            flags.append(f"grid_p{p}")
    if differential:
        if scores["mean_luma_change"] <= -thresholds.darker:
            flags.append("darker")
        if scores["saturation_change"] <= -thresholds.desaturated:
            flags.append("desaturated")
        if scores["crushed_black_change"] >= thresholds.crushed_blacks:
            flags.append("crushed_blacks")
    return flags
