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

from imgpref.artifacts.defaults import DEFAULT_MAX_SIZE, DEFAULT_PERIODS, ArtifactThresholds
from imgpref.artifacts.grid import GridResult, grid_excess, grid_scores
from imgpref.artifacts.images import luma, to_rgb_uint8
from imgpref.artifacts.tone import tone_change, tone_stats

#: JPEG's block side (px): lattices at its multiples are partly JPEG's own in a JPEG file.
JPEG_BLOCK = 8


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
