"""Grid / checkerboard score: periodic lattices in the spectrum of the high-passed luminance.

Over-trained LoRAs on latent diffusion models leave textures that repeat with the decoder's footprint:
8 px for a VAE with 8x downsampling, 16 px when the transformer also packs 2x2 latent patches (FLUX,
Qwen-Image, SD3). Anything that repeats every p pixels along both axes has all of its energy at the
frequencies ``(a/p, b/p)`` cycles per pixel (a, b integers): its lattice. The detector looks there.

Method (DESIGN.md section 4; the same idea as periodicity detectors for resampling and JPEG blocking:
Popescu & Farid, IEEE TSP 2005, https://doi.org/10.1109/TSP.2004.839932; Wang, Bovik & Evans, ICIP 2000,
https://doi.org/10.1109/ICIP.2000.899622):

1. BT.709 luma ``Y`` of the 8-bit image;
2. high-pass ``Y - mean of its 8 neighbours``: removes the smooth content that dominates natural images'
   1/f spectrum so that its window leakage cannot swamp the lattice (a linear filter does not change
   how far a peak stands above its close neighbours, so this costs no sensitivity);
3. centre crop to sides that are multiples of every period (at most ``max_size``): each lattice
   frequency then falls exactly on an FFT bin;
4. periodic Hann window (a tone on a bin spills only into the two adjacent bins);
5. ``F = rfft2``; for each lattice point ``k = (a H/p, b W/p)`` except DC, the peak ratio
   ``r_k = |F(k)| / max(median |F(k')|, quantisation floor)`` over nearby bins k' (below);
6. ``grid_p{p}`` = geometric mean of the `TOP_POINTS` largest ratios of period p. Seams,
   checkerboards and tiles light up 8 or more points, while an image's own structure that happens to
   cross the lattice usually lights one, so pooling a few points separates them better than the single
   largest peak (measured in ``bench/artifacts.md``); ``grid_p{p}_peak`` keeps that largest ratio.
   Reported, and what the spectrum figure marks; the single-image flag uses the fold statistic (7);
7. ``grid_p{p}_fold`` = the fold statistic: how many null standard deviations the energy of the image's
   mean p x p tile stands above its noise floor. Averaging the image over all its p x p cells ("folding"
   it modulo p) is the least-squares (in Gaussian noise, maximum-likelihood) estimate of a p-periodic
   pattern, and that tile's spectrum is the image's spectrum on the lattice (Sethares & Staley,
   "Periodicity transforms", IEEE Trans. Signal Processing 47(11), 1999). Per lattice point, in pattern
   units (8-bit levels^2 before the high-pass): ``e_k = s_k (|F(k)|^2 - N_k) / (sum(w) g_k)^2`` is the
   unbiased energy estimate and ``n_k = s_k N_k / (sum(w) g_k)^2`` the noise's mean energy, which is
   also its standard deviation (the energy of complex Gaussian noise is exponential); ``N_k`` is the
   mean of the neighbours' energies ``|F(k')|^2`` (the exponential's maximum-likelihood scale), ``g_k``
   the high-pass gain, ``s_k`` 2 (1 on self-conjugate bins). The inverse-variance weighted mean of the
   ``e_k`` over its null standard error::

       fold_p = sum_k (e_k / n_k^2) / sqrt(sum_k 1 / n_k^2)

   is the locally optimal (weak-signal) detector for a pattern whose energy is spread evenly over the
   lattice, a random tile for instance (Kay, Fundamentals of Statistical Signal Processing, Vol. II:
   Detection Theory, 1998, on locally optimum detectors). Each point counts by how precisely the image
   lets it be measured, so the low frequencies, where 1/f content and the high-pass leave a pattern
   almost unmeasurable, no longer dilute the score. With a known background it would be N(0, 1) under
   the null whatever the image's spectrum; estimated from 10-70 neighbours it runs wider (white noise:
   mean ~1, standard deviation 1.3-2.1), so the flag threshold is calibrated, not read off a normal table.
   At equal false positives it beats the pooled peak ratio, most on noisy 1/f textures and at period 16
   (bench/artifacts.md). The single-image flag uses it;
8. ``grid_p{p}_rms`` = the pattern's strength: the rms, in 8-bit levels, of the lattice points that
   stand out (``|F(k)|^2 >= SIGNIFICANT_ENERGY median^2 / ln 2``), by Parseval from their
   background-corrected energies, scaled like ``e_k`` but with ``median^2 / ln 2`` (the mean energy of
   Rayleigh noise with that median, robust to one outlying neighbour) in place of ``N_k``. A lattice
   can stand out of a perfectly smooth image at 1/100 of a level (an 8-bit ramp's steps); the rms says
   whether it is strong enough to matter. A flag needs both. (Summing the energies of all points
   instead is unbiased but, divided by the small high-pass gain of the low frequencies, so noisy on
   textured images that it rejected a third to a half of period-16 seams of 2/255.)

"Nearby" depends on where the point sits. Natural images (edges, horizons, buildings) put much more
energy on the two frequency axes than off them, so a point on an axis is compared with its neighbours
along that axis only (2..`AXIS_REACH` bins away), and a point off the axes with the bins of a
``(2 BOX_REACH + 1)^2`` box minus its centre 3x3 and minus the bins next to the axes. Bins of any lattice
are never used as neighbours. Seams (lines every p px) put their energy on the axes, checkerboards on
odd (a, b) off the axes, a general p x p tile anywhere on the lattice.

A point on several lattices (period 16's lattice holds period 8's) belongs to the smallest configured
period, so ``grid_p16`` answers "is there something with period 16 that is not period 8".

Differential (tuned vs base made with the same prompt and seed): per lattice point
``r_tuned / max(r_base, 1)`` pooled the same way, and the rms of the energy the tuned image adds on
those pooled points (`grid_excess`). A pattern present in both (a real fence, JPEG blocks in both
files) cancels; points are matched by frequency, so sizes may differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Any

import numpy as np
from scipy import fft, ndimage
from scipy.signal import windows

from imgpref.artifacts.defaults import DEFAULT_MAX_SIZE, DEFAULT_PERIODS
from imgpref.artifacts.images import LUMA_WEIGHTS, MAX_LEVEL, luma

#: Lattice points pooled into the period score (geometric mean of the largest ratios).
TOP_POINTS = 4
#: Axis neighbours: bins 2..AXIS_REACH away along the axis (bin 1 holds the Hann window's spill).
AXIS_REACH = 8
#: Off-axis neighbours: a box of half-side BOX_REACH bins around the point, minus its centre 3x3.
BOX_REACH = 4
#: Bins within this distance of an axis are never off-axis neighbours (the axes' energy spills there).
AXIS_GUARD = 1
#: A lattice point is scored only with at least this many neighbours (a median of fewer is too noisy).
MIN_NEIGHBOURS = 6
#: Periods per side an image needs before its lattice can be told from its content (with 4, textures of
#: 64 px images tripped period 16 in 4% of clean images; bench/artifacts.md).
MIN_PERIODS_PER_SIDE = 8
#: Rounding to 8 bits adds uniform noise of variance 1/12 level^2 per channel: the background can never
#: honestly be lower than that noise seen through luma, high-pass and window.
QUANTISATION_STD = math.sqrt(1.0 / 12.0) * float(np.linalg.norm(LUMA_WEIGHTS)) / MAX_LEVEL
#: median / rms of a Rayleigh-distributed magnitude (the |FFT| of noise): sqrt(ln 2).
RAYLEIGH_MEDIAN = math.sqrt(math.log(2.0))
#: A lattice point's energy counts towards the pattern's rms when it is at least this many times the
#: background's mean energy (noise alone does so with probability exp(-4) ~ 1.8% per point).
SIGNIFICANT_ENERGY = 4.0
#: The 8-neighbour mean subtracted by the high-pass (DESIGN.md: "minus the mean of its neighbours").
_NEIGHBOUR_MEAN = np.array([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64) / 8.0


@dataclass(frozen=True)
class LatticePoint:
    """Lattice frequency ``(a/period, b/period)`` cycles per pixel (rows, columns); a in (-p/2, p/2],
    b in [0, p/2] because the real FFT keeps one half-plane."""

    period: int
    a: int
    b: int

    @property
    def key(self) -> str:
        """Stable name, e.g. ``p8:1,0`` (1/8 cycles/px along the rows, 0 along the columns)."""
        return f"p{self.period}:{self.a},{self.b}"

    @property
    def self_conjugate(self) -> bool:
        """On the real FFT's corners (0 or Nyquist on both axes): the bin holds all of its tone."""
        return 2 * self.a in (0, self.period) and 2 * self.b in (0, self.period)

    def high_pass_gain(self) -> float:
        """``|1 - (2 cos wy + 2 cos wx + 4 cos wy cos wx) / 8|``: the 8-neighbour high-pass at this point."""
        cy, cx = math.cos(2 * math.pi * self.a / self.period), math.cos(2 * math.pi * self.b / self.period)
        return abs(1.0 - (2 * cy + 2 * cx + 4 * cy * cx) / 8.0)


@dataclass(frozen=True)
class GridResult:
    """Lattice analysis of one image (see the module docstring).

    ``ratios[key]`` and ``rms2[key]`` per lattice point (peak ratio; background-corrected energy as a
    squared rms in levels^2, negative where the peak is below the background's mean); ``scores``,
    ``peaks``, ``folds`` and ``rms`` per period (NaN where the image is too small for that period);
    ``shape``: the analysed crop (H, W)."""

    ratios: dict[str, float]
    rms2: dict[str, float]
    scores: dict[int, float]
    peaks: dict[int, float]
    folds: dict[int, float]
    rms: dict[int, float]
    shape: tuple[int, int]


def high_pass(y: np.ndarray) -> np.ndarray:
    """``Y - mean of the 8 neighbours`` (edges reflected)."""
    return y - ndimage.correlate(y, _NEIGHBOUR_MEAN, mode="reflect")


def analysis_crop(shape: tuple[int, int], periods: tuple[int, ...], max_size: int) -> tuple[slice, slice]:
    """Centred slices whose sides are the largest multiples of lcm(periods) within the image and max_size."""
    step = math.lcm(*periods)
    out = []
    for side in shape:
        n = (min(side, max_size) // step) * step
        start = (side - n) // 2
        out.append(slice(start, start + n))
    return out[0], out[1]


def lattice_points(periods: tuple[int, ...]) -> list[LatticePoint]:
    """Every lattice point of every period (DC and conjugate duplicates excluded), each given to the
    smallest period whose lattice holds it."""
    points: list[LatticePoint] = []
    seen: set[tuple[Fraction, Fraction]] = set()
    for p in sorted(periods):
        for a in range(-((p - 1) // 2), p // 2 + 1):  # row frequencies a/p in (-1/2, 1/2]
            for b in range(p // 2 + 1):
                # DC, and conjugates of points on the real FFT's edge columns (b = 0 and b = p/2).
                if (b == 0 and a <= 0) or (2 * b == p and a < 0):
                    continue
                freq = (Fraction(a, p), Fraction(b, p))
                if freq not in seen:
                    seen.add(freq)
                    points.append(LatticePoint(p, a, b))
    return points


@lru_cache(maxsize=64)
def _layout(shape: tuple[int, int], periods: tuple[int, ...]):
    """Scorable points, their flat bin indices and a (-1)-padded array of their neighbours' flat indices."""
    height, width = shape
    half = width // 2 + 1
    lattice_bins = {(a * height // p, b * width // p) for p in periods for a in range(p) for b in range(p // 2 + 1)}

    def signed(ky: int) -> int:
        return ky - height if ky > height // 2 else ky

    points, centres, neighbour_lists = [], [], []
    for point in lattice_points(periods):
        if min(height, width) < MIN_PERIODS_PER_SIDE * point.period:
            continue
        ky, kx = (point.a * height // point.period) % height, point.b * width // point.period
        if point.a == 0:
            candidates = [(0, kx + d) for d in range(-AXIS_REACH, AXIS_REACH + 1) if abs(d) >= 2]
        elif point.b == 0:
            candidates = [((ky + d) % height, 0) for d in range(-AXIS_REACH, AXIS_REACH + 1) if abs(d) >= 2]
        else:
            candidates = [
                ((ky + dy) % height, kx + dx)
                for dy in range(-BOX_REACH, BOX_REACH + 1)
                for dx in range(-BOX_REACH, BOX_REACH + 1)
                if max(abs(dy), abs(dx)) > 1 and abs(signed((ky + dy) % height)) > AXIS_GUARD and kx + dx > AXIS_GUARD
            ]
        kept = [(ny, nx) for ny, nx in candidates if nx < half and (ny, nx) not in lattice_bins]
        if len(kept) < MIN_NEIGHBOURS:
            continue
        points.append(point)
        centres.append(ky * half + kx)
        neighbour_lists.append([ny * half + nx for ny, nx in kept])
    neighbours = np.full((len(points), max((len(n) for n in neighbour_lists), default=0)), -1, dtype=np.int64)
    for i, n in enumerate(neighbour_lists):
        neighbours[i, : len(n)] = n
    return tuple(points), np.array(centres, dtype=np.int64), neighbours


def windowed_residual(
    image: Any, periods: tuple[int, ...] = DEFAULT_PERIODS, max_size: int = DEFAULT_MAX_SIZE
) -> np.ndarray:
    """The high-passed luma of the analysis crop times a periodic Hann window (steps 1-4 of the module doc).

    ``image``: anything `to_rgb_uint8` reads, or an HxW float32 luma from `imgpref.artifacts.images.luma`."""
    _check_periods(periods)
    y = image if isinstance(image, np.ndarray) and image.ndim == 2 and image.dtype == np.float32 else luma(image)
    rows, cols = analysis_crop(y.shape, periods, max_size)
    residual = high_pass(y)[rows, cols]
    if residual.size == 0:
        return residual
    window = np.outer(windows.hann(residual.shape[0], sym=False), windows.hann(residual.shape[1], sym=False))
    return (residual * window).astype(np.float32)


def lattice_spectrum(
    image: Any, periods: tuple[int, ...] = DEFAULT_PERIODS, max_size: int = DEFAULT_MAX_SIZE
) -> np.ndarray:
    """``|rfft2|`` of `windowed_residual` (step 5 of the module doc), float64."""
    residual = windowed_residual(image, periods, max_size)
    if residual.size == 0:
        return np.zeros((residual.shape[0], residual.shape[1] // 2 + 1))
    return np.abs(fft.rfft2(residual, workers=1)).astype(np.float64)


def grid_scores(image: Any, periods: tuple[int, ...] = DEFAULT_PERIODS, max_size: int = DEFAULT_MAX_SIZE) -> GridResult:
    """Peak ratio and pattern energy of every lattice point, pooled per period (module docstring).

    ``image``: anything `to_rgb_uint8` reads, or an HxW float32 luma from `imgpref.artifacts.images.luma`."""
    periods = tuple(periods)
    magnitude = lattice_spectrum(image, periods, max_size)
    height, width = magnitude.shape[0], 2 * (magnitude.shape[1] - 1)
    ratios: dict[str, float] = {}
    rms2: dict[str, float] = {}
    fold_e: dict[str, float] = {}  # e_k of the fold statistic (module docstring, step 7)
    weights: dict[str, float] = {}  # 1 / n_k^2, the precision of e_k
    significant: set[str] = set()
    points, centres, neighbours = _layout((height, width), periods) if height and width else ((), None, None)
    if points:
        flat = magnitude.ravel()
        gain = np.array([pt.high_pass_gain() for pt in points])
        window_sum = (height / 2.0) * (width / 2.0)  # sum of a periodic 2-D Hann window
        window_norm = math.sqrt((3.0 * height / 8.0) * (3.0 * width / 8.0))  # its L2 norm
        floor = QUANTISATION_STD * gain * window_norm * RAYLEIGH_MEDIAN
        gathered = np.where(neighbours >= 0, flat[np.maximum(neighbours, 0)], np.nan)
        background = np.maximum(np.nanmedian(gathered, axis=1), floor)
        peak = flat[centres]
        # Parseval: a tone of rms c on a bin gives |F| = c sum(w) gain / sqrt(2) (or c sum(w) gain on a
        # self-conjugate bin, which holds the whole tone).
        share = np.array([1.0 if pt.self_conjugate else 2.0 for pt in points])
        to_levels2 = share / (window_sum * gain) ** 2 * MAX_LEVEL**2
        noise_energy = background**2 / RAYLEIGH_MEDIAN**2  # N_k: the background's mean energy
        # Not clipped per point: clipping each noisy difference at 0 would bias the sum upwards.
        level2 = (peak**2 - noise_energy) * to_levels2
        # The fold statistic takes the background's mean energy from the neighbours' mean energy: with
        # median^2 / ln 2 (noisier), weights and energies erred together and its null spread on white
        # noise grew from 1.3-2.1 to 1.4-6.8 standard deviations.
        mean_energy = np.maximum(np.nanmean(gathered**2, axis=1), (floor / RAYLEIGH_MEDIAN) ** 2)
        fold_energy = (peak**2 - mean_energy) * to_levels2
        precision = 1.0 / (mean_energy * to_levels2) ** 2
        for point, r, e, f, w in zip(points, peak / background, level2, fold_energy, precision, strict=True):
            ratios[point.key] = float(r)
            rms2[point.key] = float(e)
            fold_e[point.key] = float(f)
            weights[point.key] = float(w)
            if r * r >= SIGNIFICANT_ENERGY / RAYLEIGH_MEDIAN**2:  # |F|^2 >= SIGNIFICANT_ENERGY median^2 / ln 2
                significant.add(point.key)
    scores, peaks, folds, rms = {}, {}, {}, {}
    for p in periods:
        keys = [pt.key for pt in points if pt.period == p]
        scores[p], peaks[p] = _pool([ratios[k] for k in keys])
        folds[p] = fold_statistic([fold_e[k] for k in keys], [weights[k] for k in keys])
        rms[p] = math.sqrt(max(sum(rms2[k] for k in keys if k in significant), 0.0)) if keys else float("nan")
    return GridResult(ratios=ratios, rms2=rms2, scores=scores, peaks=peaks, folds=folds, rms=rms, shape=(height, width))


def fold_statistic(energies: list[float], precisions: list[float]) -> float:
    """``sum_k w_k e_k / sqrt(sum_k w_k)`` with ``w_k = 1 / n_k^2`` (module docstring, step 7): the
    inverse-variance weighted mean of the lattice energies ``e_k`` over its null standard error. Under
    the null (noise only, ``e_k`` of mean 0 and standard deviation ``n_k``, both known) it has mean 0 and
    variance 1; with ``n_k`` estimated from the image it runs wider (module docstring). NaN for no points."""
    if not energies:
        return float("nan")
    e, w = np.asarray(energies, dtype=np.float64), np.asarray(precisions, dtype=np.float64)
    return float(np.sum(w * e) / math.sqrt(np.sum(w)))


def grid_excess(tuned: GridResult, base: GridResult) -> tuple[dict[int, float], dict[int, float]]:
    """Differential scores per period: pooled ``r_tuned / max(r_base, 1)`` over the `TOP_POINTS` points
    where that excess is largest, and the rms (levels) that the tuned image adds on those same points
    (``sqrt(max(sum of e_tuned - e_base, 0))``). Measuring the added energy on the points that stand out,
    not on the whole lattice, keeps a strong pattern present in both images from passing the rms test on
    the noise of its own energy. Points the base could not score (a smaller image) count as ratio 1 and
    energy 0 there, i.e. as in single-image mode."""
    scores, rms = {}, {}
    for p in tuned.scores:
        prefix = f"p{p}:"
        excess = {k: r / max(base.ratios.get(k, 1.0), 1.0) for k, r in tuned.ratios.items() if k.startswith(prefix)}
        if not excess:
            scores[p], rms[p] = float("nan"), float("nan")
            continue
        top = sorted(excess, key=excess.__getitem__, reverse=True)[:TOP_POINTS]
        scores[p], _ = _pool([excess[k] for k in top])
        added = sum(tuned.rms2[k] - base.rms2.get(k, 0.0) for k in top)
        rms[p] = math.sqrt(max(added, 0.0))
    return scores, rms


def _pool(ratios: list[float]) -> tuple[float, float]:
    """(geometric mean of the TOP_POINTS largest ratios, the largest ratio); NaN for no points."""
    if not ratios:
        return float("nan"), float("nan")
    top = sorted(ratios, reverse=True)[:TOP_POINTS]
    return float(np.exp(np.mean(np.log(np.maximum(top, np.finfo(float).tiny))))), float(top[0])


def _check_periods(periods: tuple[int, ...]) -> None:
    if not periods or any(not isinstance(p, int) or p < 2 for p in periods):
        raise ValueError(f"grid periods must be integers >= 2 (pixels), got {periods!r}")
