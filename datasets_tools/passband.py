"""Shape of the pass-band: tells an enlarged image (square, separable pass-band) from a blurred one (round).

A downscale-upscale is a *separable* resize: the image is filtered along x and along y with the same 1-D
kernel, so its 2-D transfer function is ``H(fx) H(fy)`` and its pass-band is a square with the cut-off
``c = 1 / (2 k)`` cycles/px (``k`` the factor) on both axes (Lanczos, bicubic and bilinear alike; see
Parker, Kenyon & Troxel, "Comparison of interpolating methods for image resampling", IEEE TMI 1983,
https://doi.org/10.1109/TMI.1983.4307610). Along the axes the detail ends at ``|f| = c``, along the
diagonals only at ``|f| = sqrt(2) c`` (the square's corner). Gaussian and defocus blur are isotropic (a
round pass-band): axes and diagonals lose their detail at the same ``|f|``. Motion blur is a line: it
makes two axes (or the two diagonals) differ from each other.

Statistics, on the log power spectrum ``L(f, theta) = log10 |FFT(hann * luma)|^2`` averaged in rings of
width 0.01 cycles/px within +-15 degrees of 0, 45, 90 and 135 degrees:

- ``R(f) = (L45 + L135) / 2 - (L0 + L90) / 2``, the diagonal-to-axis contrast in decades;
- ``corner = max_c [mean R over (c, sqrt(2) c) - (mean R over (c - w, c) + mean R over (sqrt(2) c,
  sqrt(2) c + w)) / 2]``, ``w = FLANK_RINGS``, ``c`` searched over ``CUTOFF_RINGS`` (factors 1.9-4.2):
  the diagonals' excess power between the axis cut-off and the corner of a square pass-band, over its
  level on both sides (enlargements by 2-4: about 0.2-0.6 decades, JPEG-compressed ones included;
  Gaussian blur: below 0.15; a defocus disc's ringing reaches 0.1-0.25);
- ``anisotropy = max(mean |L0 - L90|, mean |L45 - L135|)`` over ``ANISOTROPY_BAND`` (a line-shaped,
  motion-blur spectrum: 0.3-2 decades; an enlargement or a round blur: about 0.05-0.25).

An image with a square corner (``corner >= min_corner``), no line-shaped spectrum and little
high-frequency power is judged enlarged rather than blurred (:func:`looks_enlarged`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Rings of the radial profile between 0 and 0.5 cycles/px (0.01 cycles/px wide).
RING_BINS = 50
#: Half-width of each direction's wedge, radians (15 degrees: four wedges cover a third of the plane).
WEDGE_HALF_WIDTH = np.pi / 12
#: Candidate axis cut-offs, in rings: 0.12-0.26 cycles/px, i.e. enlargements by about 1.9-4.2.
CUTOFF_RINGS = range(12, 27)
#: Rings on each side of the band ``(c, sqrt(2) c)`` that its level is compared with (0.06 cycles/px).
FLANK_RINGS = 6
#: Rings (0.20-0.45 cycles/px) where the anisotropy of a motion blur is measured.
ANISOTROPY_BAND = slice(20, 45)
#: Nyquist frequency, cycles/px.
NYQUIST = 0.5
#: Smallest side measured: the FFT's bins (1/side cycles/px apart) must fall in every ring along the axes.
MIN_SIDE = 2 * RING_BINS
#: Floor added to the power before the log (the image is 0-255 luma; keeps empty rings finite).
POWER_FLOOR = 1e-9


@dataclass
class PassbandConfig:
    min_corner: float = 0.2
    """Diagonal excess (decades) from which a soft image counts as enlarged. On the tuning and dev seeds
    (0, 1, 10, 11, 13; soft images without a trace, line-free, ``hf_ratio`` below the limit) 0.2 moved 34
    of their 41 enlargements and 5 of the 300 blurred images to ``upscaled``; 0.15 moved 37 and 16,
    0.25 moved 23 and 1. (The fall of the contrast at one frequency, tried first, moved 25 and 4.)"""
    max_anisotropy: float = 0.3
    """Above this (decades) the spectrum is line-shaped (motion blur) and the image is not called enlarged."""
    max_hf_ratio: float = 0.25
    """Only images whose ``hf_ratio`` (:func:`datasets_tools.resampling.hf_ratio`) is below this: blur
    with sensor noise added afterwards has high-frequency power back, an enlargement does not."""

    def __post_init__(self) -> None:
        if self.min_corner <= 0:
            raise ValueError(f"passband.min_corner must be positive, got {self.min_corner}")
        if self.max_anisotropy <= 0:
            raise ValueError(f"passband.max_anisotropy must be positive, got {self.max_anisotropy}")


@dataclass
class Passband:
    corner: float
    """Diagonals' excess power between an axis cut-off ``c`` and ``sqrt(2) c``, decades (module docstring)."""
    cutoff: float
    """The axis cut-off ``c`` where it is largest, cycles/px (about ``1 / (2 k)`` for an enlargement by k)."""
    anisotropy: float
    """Largest mean difference between opposite wedges (0 vs 90, 45 vs 135 degrees), decades."""


def wedge_profiles(luma: np.ndarray) -> np.ndarray:
    """Mean log10 power per ring (rows: 0, 45, 90, 135 degrees; ``RING_BINS`` columns) of a Hann-windowed
    luma image; rings without a sample in a wedge are NaN."""
    y = np.asarray(luma, dtype=np.float64)
    window = np.outer(np.hanning(y.shape[0]), np.hanning(y.shape[1]))
    power = np.abs(np.fft.rfft2((y - y.mean()) * window)) ** 2
    fy = np.fft.fftfreq(y.shape[0])[:, None]
    fx = np.fft.rfftfreq(y.shape[1])[None, :]
    ring = np.minimum((np.hypot(fy, fx) / NYQUIST * RING_BINS).astype(np.int64), RING_BINS)
    angle = np.mod(np.arctan2(fy, fx), np.pi)
    profiles = np.full((4, RING_BINS), np.nan)
    for k, centre in enumerate((0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)):
        distance = np.abs(angle - centre)
        in_wedge = np.minimum(distance, np.pi - distance) < WEDGE_HALF_WIDTH
        in_wedge = np.broadcast_to(in_wedge, power.shape)
        total = np.bincount(ring[in_wedge], power[in_wedge], RING_BINS + 1)[:RING_BINS]
        count = np.bincount(ring[in_wedge], None, RING_BINS + 1)[:RING_BINS]
        with np.errstate(divide="ignore", invalid="ignore"):
            profiles[k] = np.where(count > 0, np.log10(total / count + POWER_FLOOR), np.nan)
    return profiles


def passband_shape(luma: np.ndarray) -> Passband:
    """``corner``, ``cutoff`` and ``anisotropy`` of a luma image (see the module docstring); all 0 for
    images with a side below :data:`MIN_SIDE` (too few frequencies per ring)."""
    if min(luma.shape) < MIN_SIDE:
        return Passband(corner=0.0, cutoff=0.0, anisotropy=0.0)
    p0, p45, p90, p135 = wedge_profiles(luma)
    contrast = (p45 + p135) / 2 - (p0 + p90) / 2
    best, cutoff = -np.inf, 0.0
    for c in CUTOFF_RINGS:
        corner = round(c * np.sqrt(2))
        inside = np.nanmean(contrast[c:corner])
        flanks = (np.nanmean(contrast[c - FLANK_RINGS : c]) + np.nanmean(contrast[corner : corner + FLANK_RINGS])) / 2
        if inside - flanks > best:
            best, cutoff = float(inside - flanks), c * NYQUIST / RING_BINS
    band = ANISOTROPY_BAND
    anisotropy = max(np.nanmean(np.abs(p0 - p90)[band]), np.nanmean(np.abs(p45 - p135)[band]))
    return Passband(corner=best if np.isfinite(best) else 0.0, cutoff=cutoff, anisotropy=float(anisotropy))


def looks_enlarged(shape: Passband, hf_ratio: float, cfg: PassbandConfig) -> bool:
    """A soft image's spectrum is cut off by a separable kernel: a square corner, not line-shaped, little
    high-frequency power."""
    return shape.corner >= cfg.min_corner and shape.anisotropy < cfg.max_anisotropy and hf_ratio < cfg.max_hf_ratio
