"""Calibrated defaults and the settings built on them (detector thresholds, the training guard), shared
by the detectors, the guard, the recipes' configs and the command line; importable without numpy or scipy,
so a config loads (and a typo in it is reported) without the detectors' imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: Grid periods in pixels: the VAE footprint (8) and VAE x 2x2 patch packing (16: FLUX, Qwen-Image, SD3).
DEFAULT_PERIODS: tuple[int, ...] = (8, 16)
#: Larger images are centre-cropped to this side before the grid FFT (a 1024^2 crop takes ~30-50 ms on
#: one core). Lattice peaks grow with the side (they add up coherently) faster than the background.
DEFAULT_MAX_SIZE = 1024

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

#: Calibrated in bench/artifacts.md: benign groups (other seeds of the same prompts) stay above it.
DIVERSITY_RATIO = 0.45


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


@dataclass
class GuardSettings:
    """When the artifact guard runs, what trips it and what it does then."""

    every: int = 100
    """Check every this many optimizer steps (0 = never)."""
    action: Literal["warn", "stop", "restore"] = "warn"
    """On a failed check: warn (log, continue), stop, or restore (stop and load the last passing checkpoint)."""
    patience: int = 1
    """Failing checks in a row needed before acting (earlier ones only warn)."""
    min_flagged_fraction: float = 0.5
    """Share of validation images that must carry a grid (differential flag) for grid_p{p} to trip."""
    diversity_ratio: float = DIVERSITY_RATIO
    """``collapse`` trips when the median over prompts of tuned/base spread across seeds is below this."""
    periods: tuple[int, ...] = DEFAULT_PERIODS
    """Grid periods in pixels (8: VAE footprint; 16: VAE x 2x2 patch packing)."""
    max_size: int = DEFAULT_MAX_SIZE
    """Larger validation images are centre-cropped to this side for the grid spectrum."""
    thresholds: ArtifactThresholds = field(default_factory=ArtifactThresholds)
    """Per-image and per-set thresholds (calibrated defaults: bench/artifacts.md)."""

    def __post_init__(self) -> None:
        if self.every < 0:
            raise ValueError(f"guard.every must be >= 0 (0 turns the guard off), got {self.every}")
        if self.patience < 1:
            raise ValueError(f"guard.patience must be >= 1, got {self.patience}")
        if not 0.0 < self.min_flagged_fraction <= 1.0:
            raise ValueError(f"guard.min_flagged_fraction must be in (0, 1], got {self.min_flagged_fraction}")
        if not 0.0 <= self.diversity_ratio <= 1.0:
            raise ValueError(f"guard.diversity_ratio must be in [0, 1], got {self.diversity_ratio}")
        if not self.periods or any(p < 2 for p in self.periods):
            raise ValueError(f"guard.periods must be pixel periods >= 2, got {self.periods!r}")
