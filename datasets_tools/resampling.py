"""Signs of upscaling: the periodic traces interpolation leaves, and the high frequencies it cannot make.

**Resampling traces.** Enlarging an image by a factor ``k`` computes most pixels as fixed linear
combinations of their neighbours, with weights that repeat with the sampling phase, so local statistics
of the image become periodic with frequency ``1/k`` cycles per pixel (folded into [0, 0.5]; ``1 - 1/k``
for ``k < 2``). Natural images, blur and noise have no such period. Two periodic statistics are used:

- lossless files: the p-map of a fixed linear predictor's residue, ``p = exp(-e^2 / residue_scale)``
  with ``e = y - sum(alpha * neighbours)`` (Kirchner, "Fast and reliable resampling detection by spectral
  analysis of fixed linear predictor residue", ACM MM&Sec 2008, https://doi.org/10.1145/1411328.1411333);
- lossy files (JPEG, or lossless copies showing JPEG's block grid): the mean absolute second derivative
  (Gallagher, "Detection of linear and cubic interpolation in JPEG compressed images", CRV 2005,
  https://doi.org/10.1109/CRV.2005.33), which
  survives compression better. 8x8 luma and 16x16 subsampled-chroma blocks add their own periodic
  pattern to that profile; it is measured away from the grid: the profile is divided by its moving mean
  and the mean of each phase modulo ``JPEG_PERIOD`` (32) is subtracted (:func:`remove_periodic`), which
  removes the block pattern (its spectrum lives on multiples of 1/32) while an enlargement's peak a bin
  or more off those multiples survives. Only frequencies within ``grid_bins`` of a multiple of 1/32 and
  ``luma_grid_bins`` of a multiple of 1/8 are then ignored (what block edges of varying strength still
  leak next to them).

Each statistic is averaged along rows and along columns (a resize uses the same phases on every row);
both 1-D spectra are divided by their running median, and the score is the largest geometric mean of the
two at one frequency. Frequencies near 0.5 are always ignored: camera demosaicing leaves a period of 2,
and an exact 2x enlargement with centred pixels (PIL, OpenCV) has mirror-symmetric phases and leaves
no trace there anyway, so it is missed (it usually shows up as blur instead).

**Missing high frequencies.** ``hf_ratio`` is the spectral power above ``hf_cutoff`` cycles/px relative
to a 1/f^2 spectrum with the same mid-band power (natural images are close to 1/f^2, van der Schaaf &
van Hateren 1996). An image is flagged only with traces *and* missing high frequencies: downscaled and
rotated photos also carry resampling traces but keep their detail. On its own the ratio cannot tell
upscaling from blur.

**Which peaks count.** Missing detail above 0.25 cycles/px means a factor ``k >= 2``, whose fundamental
``1/k`` lies in [0.25, 0.5] for ``k <= 4`` and whose second harmonic ``2/k`` does for ``k <= 8``. The
flag therefore needs the peak at or above ``min_trace_frequency`` (0.25). Lower peaks on images with sharp
edges are mostly the aliased harmonics of regular patterns in the scene (a checked or spotted fabric drawn
with hard edges: a 4-fold symmetric pattern puts the same frequency on both axes, like a resize); an
enlargement by more than 4 leaves wide edges, and the soft-image rule of :mod:`.scan` still uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: Kirchner's fixed predictor: each pixel from its 8 neighbours.
PREDICTOR = np.array([[-0.25, 0.5, -0.25], [0.5, 0.0, 0.5], [-0.25, 0.5, -0.25]])
#: Period in pixels removed from JPEG profiles: 16x16 MCUs with 4:2:0 chroma and 8x8 blocks divide it;
#: 32 rather than 16 because peaks at odd multiples of 1/32 showed up on clean JPEGs of the tuning seeds.
JPEG_PERIOD = 32
#: Side of JPEG's luma blocks.
LUMA_BLOCK = 8
#: Pixels dropped at the border of the analysed crop by the 3x3 filters and second differences.
BORDER = 2
#: Default ``soft_min_peak_score``: the trace test's own ``min_peak_score``. Pooled over calibration seeds
#: 0-13 (``bench/data.md``, round 5) 4.0 took blur precision / recall from 89.8 / 93.6 % to 91.5 / 92.5 %
#: and upscaling from 91.9 / 90.6 % to 90.6 / 92.1 %; 3.5 gave blur 92.6 / 91.0 but upscaling precision
#: 89.4 %, 5.0 blur 90.9 / 93.2 %. On new seeds 14-19 afterwards: blur 93.3 / 92.2 %, upscaling 88.1 / 92.2 %.
SOFT_MIN_PEAK_SCORE = 4.0
#: Default ``min_trace_frequency`` (cycles/px): the trace test accepts a peak only where an enlargement by
#: at most 4 puts its fundamental (``1/k``), or one by 4-8 its second harmonic (``2/k``). Lower peaks on
#: images with sharp edges were mostly the aliased harmonics of regular patterns on the subject (checks,
#: spots, stripes): on calibration seeds 0-19 (``bench/data.md``, round 6) 25 of the 65 false trace flags
#: had their peak below 0.25 against 42 of the 961 true ones. Pooled over seeds 0-19 it took upscaling
#: precision / recall from 89.8 / 92.2 % to 91.1 / 91.9 %, blur unchanged (92.0 / 92.4 %); 0.2 gave
#: 90.4 / 92.0 %, 0.3 91.4 / 90.7 %. Soft images keep the whole range (``soft_min_peak_score``). On new
#: seeds 20-25 afterwards: upscaling 91.1 / 93.6 % (89.4 / 93.9 % without it), blur 92.6 / 90.6 %.
MIN_TRACE_FREQUENCY = 0.25


@dataclass
class UpscaleConfig:
    min_peak_score: float = 4.0
    """Flag when the resampling peak stands this many times above the local median on both axes."""
    residue_scale: float = 2.0
    """``residue_scale`` of the p-map (squared luma levels): how small a residue counts as interpolated."""
    analysis_size: int = 1024
    """Largest side of the centred square crop analysed, at native resolution."""
    min_frequency: float = 0.1
    """Lowest frequency (cycles/px) searched for a peak: factors up to 10, or down to 1.1 folded."""
    nyquist_bins: int = 2
    """Ignore this many frequency bins below 0.5 cycles/px (demosaicing; see the module docstring)."""
    grid_bins: int = 1
    """In lossy files, ignore peaks within this many bins of a multiple of 1/32 cycles/px (what is left of
    the block pattern after :func:`remove_periodic`: block edges whose strength varies with the content)."""
    luma_grid_bins: int = 2
    """The same within this many bins of a multiple of 1/8 cycles/px, where the 8x8 luma blocks leave more
    (2 covers the main lobe of the Hann window)."""
    baseline_bins: int = 31
    """Width in frequency bins of the running median that peaks are compared with (odd)."""
    hf_cutoff: float = 0.25
    """Frequency (cycles/px) above which power counts as high-frequency in ``hf_ratio``."""
    max_hf_ratio: float = 0.12
    """Only flag images whose ``hf_ratio`` is below this: an enlarged image lacks detail above its
    original Nyquist frequency, while downscaled or rotated images show resampling traces with full
    detail (they are fine). JPEG noise lifts an enlargement's ratio to about 0.1-0.2; 0.1 missed 6 %
    more of them on the tuning seeds, 0.15 flagged more soft clean shots."""
    min_trace_frequency: float = MIN_TRACE_FREQUENCY
    """The trace test (traces *and* missing detail) flags only peaks at or above this frequency (cycles/px):
    the fundamental ``1/k`` of an enlargement by ``k <= 1 / min_trace_frequency`` (4), or the second
    harmonic ``2/k`` of one up to twice that. Below it, on images whose edges look sharp, peaks come from
    regular patterns in the scene (their aliased harmonics); a larger enlargement leaves wide edges, and
    the soft-image rule (``soft_min_peak_score``) still searches down to ``min_frequency``."""
    soft_min_peak_score: float = SOFT_MIN_PEAK_SCORE
    """Images the blur test finds soft (:mod:`.sharpness`) are flagged upscaled when their resampling peak
    reaches this score, *whatever* their ``hf_ratio``: the wide edges already show the missing detail, and
    JPEG noise often lifts an enlargement's ``hf_ratio`` past ``max_hf_ratio``, while blur leaves no
    periodic trace. Applied by :mod:`.scan`; a very large value (e.g. ``1e9``) turns the rule off."""

    def __post_init__(self) -> None:
        if self.soft_min_peak_score <= 0:
            raise ValueError(f"upscale.soft_min_peak_score must be positive, got {self.soft_min_peak_score}")
        if self.baseline_bins < 5 or self.baseline_bins % 2 == 0:
            raise ValueError(f"upscale.baseline_bins must be odd and >= 5, got {self.baseline_bins}")
        if not 0 < self.min_frequency < 0.5:
            raise ValueError(f"upscale.min_frequency must be within (0, 0.5), got {self.min_frequency}")
        if not 0 <= self.min_trace_frequency < 0.5:
            raise ValueError(
                f"upscale.min_trace_frequency must be within [0, 0.5), got {self.min_trace_frequency} "
                "(0 accepts every peak the search finds)"
            )
        if self.analysis_size < 64:
            raise ValueError(f"upscale.analysis_size must be at least 64, got {self.analysis_size}")


@dataclass
class Upscale:
    score: float
    """Height of the strongest two-axis peak over the local median (about 1.5-3 for unresampled images)."""
    frequency: float
    """Where it is, cycles/px."""
    factor: float
    """Enlargement factor ``1/frequency`` (meaningful only when flagged; see :func:`detect_upscale`)."""
    hf_ratio: float
    """High-frequency power relative to a 1/f^2 spectrum (about 0.1-1 for sharp images, << 0.1 when missing)."""
    block_grid: bool
    """Whether a JPEG block grid was found (the file is JPEG, or a lossless copy of one)."""
    flagged: bool
    """Traces present (``score >= min_peak_score`` at ``frequency >= min_trace_frequency``) and detail
    missing (``hf_ratio < max_hf_ratio``)."""


def p_map(luma: np.ndarray, residue_scale: float) -> np.ndarray:
    """``exp(-e^2 / residue_scale)`` of the fixed-predictor residue ``e`` (Kirchner 2008), border dropped."""
    residue = luma - ndimage.correlate(luma, PREDICTOR, mode="reflect")
    return np.exp(-(residue[BORDER:-BORDER, BORDER:-BORDER] ** 2) / residue_scale)


def second_derivative_profiles(luma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean |second derivative| along x per column and along y per row (Gallagher 2005), border dropped."""
    dxx = np.abs(np.diff(luma, 2, axis=1))[BORDER:-BORDER, 1:-1]
    dyy = np.abs(np.diff(luma, 2, axis=0))[1:-1, BORDER:-BORDER]
    return dxx.mean(axis=0), dyy.mean(axis=1)


def remove_periodic(profile: np.ndarray, period: int) -> np.ndarray:
    """The profile with its component of period ``period`` taken out, after demodulation.

    JPEG's block pattern is multiplicative: ``x[i] = a[i] (1 + g[i mod period])`` with a strength ``a``
    that follows the content. Dividing by the moving mean over one period (which is ``a`` times a
    constant, whatever ``g`` is) leaves ``1 + g``; then ``y[i] - mean{y[j] : j = i (mod period)}`` over
    the first ``period * floor(n / period)`` samples removes it. With a length that is a multiple of
    ``period`` the phase means' DFT is exactly the bins at multiples of ``n / period``, so those bins are
    zeroed and the others untouched: an enlargement's peak next to a block frequency survives.
    """
    n = profile.size // period * period
    level = ndimage.uniform_filter1d(profile[:n], period, mode="reflect")
    phases = (profile[:n] / (level + 1e-12)).reshape(-1, period)
    return (phases - phases.mean(axis=0)).ravel()


def peak_scores(profile: np.ndarray, baseline_bins: int, period: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies, magnitude / running median) of a 1-D profile's Hann-windowed spectrum, DC excluded;
    with ``period``, the profile's component of that period is removed first (:func:`remove_periodic`)."""
    if period:
        profile = remove_periodic(profile, period)
    centred = profile - profile.mean()
    spectrum = np.abs(np.fft.rfft(centred * np.hanning(centred.size)))
    freqs = np.fft.rfftfreq(centred.size)
    baseline = ndimage.median_filter(spectrum, size=baseline_bins, mode="reflect")
    return freqs[1:], spectrum[1:] / (baseline[1:] + 1e-12)


def hf_ratio(luma: np.ndarray, cutoff: float) -> float:
    """Power above ``cutoff`` over what a 1/f^2 spectrum with the same mid-band power would have there.

    Under ``P(f) = c / f^2`` the product ``P f^2`` is ``c`` in every band, so the ratio of its means over
    the high band and the mid band ``[cutoff/4, cutoff)`` is 1 for a natural-looking image.
    """
    window = np.outer(np.hanning(luma.shape[0]), np.hanning(luma.shape[1]))
    power = np.abs(np.fft.rfft2((luma - luma.mean()) * window)) ** 2
    fy = np.fft.fftfreq(luma.shape[0])[:, None]
    fx = np.fft.rfftfreq(luma.shape[1])[None, :]
    f = np.hypot(fy, fx)
    mid = (f >= cutoff / 4) & (f < cutoff)
    high = (f >= cutoff) & (f <= 0.5)
    return float((power[high] * f[high] ** 2).mean() / ((power[mid] * f[mid] ** 2).mean() + 1e-12))


def _two_axis_scores(
    px: np.ndarray, py: np.ndarray, cfg: UpscaleConfig, period: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    freqs, sx = peak_scores(px, cfg.baseline_bins, period)
    _, sy = peak_scores(py, cfg.baseline_bins, period)
    return freqs, np.sqrt(sx * sy)


def _near(freqs: np.ndarray, targets: np.ndarray, bins: int) -> np.ndarray:
    step = freqs[1] - freqs[0]
    return np.abs(freqs[:, None] - targets[None, :]).min(axis=1) <= (bins + 0.5) * step


def has_block_grid(freqs: np.ndarray, scores: np.ndarray, cfg: UpscaleConfig) -> bool:
    """Peaks at all of 1/8, 1/4 and 3/8 cycles/px: 8x8 blocks (a single enlargement makes one or two)."""
    for target in (1 / 8, 1 / 4, 3 / 8):
        if scores[_near(freqs, np.array([target]), cfg.grid_bins)].max(initial=0.0) < cfg.min_peak_score:
            return False
    return True


def detect_upscale(luma: np.ndarray, lossy: bool, cfg: UpscaleConfig | None = None) -> Upscale:
    """Resampling peak score, frequency and factor of a luma image (0-255, native resolution).

    ``lossy``: the file is JPEG (or lossy WebP). A lossless file that shows JPEG's block grid (a PNG
    saved from a JPEG) is analysed as lossy too.
    """
    cfg = cfg or UpscaleConfig()
    height, width = luma.shape
    # A square crop whose profiles have a length divisible by JPEG_PERIOD, so the block grid's peaks
    # fall exactly on frequency bins.
    n = (min(height, width, cfg.analysis_size) - 2 * BORDER) // JPEG_PERIOD * JPEG_PERIOD
    if n < 2 * cfg.baseline_bins:
        return Upscale(0.0, 0.0, 1.0, float("nan"), block_grid=False, flagged=False)
    top, left = (height - n) // 2 - BORDER, (width - n) // 2 - BORDER
    crop = luma[top : top + n + 2 * BORDER, left : left + n + 2 * BORDER]
    grid = lossy
    if not lossy:
        pm = p_map(crop, cfg.residue_scale)
        freqs, both = _two_axis_scores(pm.mean(axis=0), pm.mean(axis=1), cfg)
        grid = has_block_grid(freqs, both, cfg)
    if grid:
        freqs, both = _two_axis_scores(*second_derivative_profiles(crop), cfg, period=JPEG_PERIOD)
        multiples = np.arange(1, JPEG_PERIOD // 2 + 1) / JPEG_PERIOD
        both[_near(freqs, multiples, cfg.grid_bins)] = 0.0
        both[_near(freqs, np.arange(1, LUMA_BLOCK // 2 + 1) / LUMA_BLOCK, cfg.luma_grid_bins)] = 0.0
    step = freqs[1] - freqs[0]
    both[freqs < cfg.min_frequency] = 0.0
    both[freqs > 0.5 - (cfg.nyquist_bins + 0.5) * step] = 0.0
    best = int(np.argmax(both))
    score, frequency = float(both[best]), float(freqs[best])
    hf = hf_ratio(crop, cfg.hf_cutoff)
    # A peak at f means k = 1/f or, folded, k/(k-1) = 1/(1-f); flagged images lack detail above 0.25
    # cycles/px, which only the larger factor (k >= 2) explains.
    factor = 1.0 / frequency if frequency > 0 else 1.0
    # A peak below min_trace_frequency would mean a factor above 4 (or the harmonic of a pattern in the
    # scene); only the soft-image rule in scan.py, which also sees wide edges, may use it.
    flagged = score >= cfg.min_peak_score and hf < cfg.max_hf_ratio and frequency >= cfg.min_trace_frequency
    return Upscale(score, frequency, factor, hf, block_grid=grid, flagged=flagged)
