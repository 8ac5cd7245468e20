"""Motion blur: detail lost along one direction only, measured above the sensor-noise floor.

Motion blur of length ``L`` along ``theta`` multiplies the spectrum by ``sinc(L f . u_theta)``: the
mid frequencies vanish along the motion and survive across it. Sensor noise added afterwards (as a camera
does) brings back isotropic high-frequency energy, so the sharpest edges look sharp again and the
edge-width test (:mod:`.sharpness`) misses the blur, but the mid-frequency *direction* pattern stays.

Statistic. The directional gradient energy at Gaussian scale ``s`` is a quadratic form in the direction
``u = (cos theta, sin theta)``: ``E_s(theta) = u^T T_s u`` with the structure tensor
``T_s = mean([gx^2, gx gy; gx gy, gy^2])`` of Gaussian-derivative gradients at scale ``s`` (Bigun &
Granlund, "Optimal orientation detection of linear symmetry", ICCV 1987). The fine scale is a band-pass
at mid frequencies, the coarse scale one at low frequencies that motion blurs of 6-12 px barely touch:
dividing the two cancels the image content's own orientation (stripes, straight outlines), which is the
same at both scales. The expected energy of white noise of level ``sigma_n`` is taken off the fine tensor
first: ``A = T_fine - sigma_n^2 k_fine I`` with ``k_fine`` the sum of squares of the derivative kernel,
``sigma_n`` by Immerkaer's estimator ("Fast noise variance estimation", CVIU 1996,
https://doi.org/10.1006/cviu.1996.0060). Then

    ratio = min_theta (u^T A u / u^T T_coarse u) / max_theta (same)

which is the smallest over the largest generalised eigenvalue of ``(A, T_coarse)`` (closed form, no
search over angles). A round blur or an enlargement keeps ``ratio`` near 1, clean shots mostly 0.6-1 (their
content's orientation is not quite the same at both scales); motion blur of 6-12 px gives about 0.43-0.85
(``bench/data.md``, round 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg, ndimage

#: Immerkaer's noise-estimation kernel (difference of two Laplacians; zero response to planes and ramps).
NOISE_KERNEL = np.array([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]])
#: Side of the impulse used to measure a derivative kernel's energy (wide enough for sigma up to 6 px).
IMPULSE_SIDE = 81


@dataclass
class MotionConfig:
    max_ratio: float = 0.6
    """Flag as motion blur when the mid-to-low frequency energy ratio of the weakest direction is below
    this fraction of the strongest direction's (see the module docstring). On the tuning and dev seeds
    (0, 1, 10, 11) 0.6 found 18 of the 22 motion blurs the edge-width test missed, and flagged 2 of the
    931 other images it looked at (neither soft nor flagged upscaled)."""
    min_edge_width_px: float = 0.5
    """...and the edge width (:mod:`.sharpness`) is at least this: motion blur with noise still widens the
    edges a little, while crisp clean shots with strongly oriented detail stay well below it."""
    fine_sigma: float = 1.0
    """Scale of the mid-frequency (fine) gradients, pixels."""
    coarse_sigma: float = 3.0
    """Scale of the low-frequency (coarse) gradients, pixels; a motion blur of 6-12 px barely changes them."""

    def __post_init__(self) -> None:
        if not 0 < self.fine_sigma < self.coarse_sigma:
            raise ValueError(
                f"need 0 < motion.fine_sigma < motion.coarse_sigma, got {self.fine_sigma} and {self.coarse_sigma}"
            )
        if not 0 < self.max_ratio < 1:
            raise ValueError(f"motion.max_ratio must be within (0, 1), got {self.max_ratio}")


def noise_sigma(luma: np.ndarray) -> float:
    """Immerkaer's estimate of white-noise level (levels):
    ``sigma = sqrt(pi / 2) / (6 (W - 2) (H - 2)) * sum |luma * N|`` over the valid part of the image."""
    y = np.asarray(luma, dtype=np.float64)
    h, w = y.shape
    if h < 3 or w < 3:
        return 0.0
    response = ndimage.convolve(y, NOISE_KERNEL)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(response).sum() / (6 * (w - 2) * (h - 2)))


def structure_tensor(luma: np.ndarray, sigma: float) -> np.ndarray:
    """2x2 mean outer product of the Gaussian-derivative gradient (x, y) at scale ``sigma``."""
    gx = ndimage.gaussian_filter(luma, sigma, order=(0, 1))
    gy = ndimage.gaussian_filter(luma, sigma, order=(1, 0))
    xy = float(np.mean(gx * gy))
    return np.array([[float(np.mean(gx * gx)), xy], [xy, float(np.mean(gy * gy))]])


def derivative_energy(sigma: float) -> float:
    """Sum of squares of the Gaussian x-derivative kernel at ``sigma``: white noise of variance 1 gives
    each gradient component this variance."""
    impulse = np.zeros((IMPULSE_SIDE, IMPULSE_SIDE))
    impulse[IMPULSE_SIDE // 2, IMPULSE_SIDE // 2] = 1.0
    return float(np.sum(ndimage.gaussian_filter(impulse, sigma, order=(0, 1)) ** 2))


def directional_ratio(luma: np.ndarray, cfg: MotionConfig | None = None) -> float:
    """Smallest over largest generalised eigenvalue of (noise-corrected fine tensor, coarse tensor), in
    [0, 1]; 1 when the image has no measurable structure (see the module docstring)."""
    cfg = cfg or MotionConfig()
    y = np.asarray(luma, dtype=np.float64)
    fine = structure_tensor(y, cfg.fine_sigma)
    fine -= noise_sigma(y) ** 2 * derivative_energy(cfg.fine_sigma) * np.eye(2)
    coarse = structure_tensor(y, cfg.coarse_sigma)
    if np.linalg.eigvalsh(coarse)[0] <= 0:
        return 1.0
    values = linalg.eigh(fine, coarse, eigvals_only=True)
    if values[-1] <= 0:
        return 1.0
    return float(np.clip(values[0] / values[-1], 0.0, 1.0))


def looks_motion_blurred(ratio: float, edge_width_px: float | None, cfg: MotionConfig) -> bool:
    """Directional loss of mid frequencies with edges at least a little wide."""
    return edge_width_px is not None and edge_width_px >= cfg.min_edge_width_px and ratio < cfg.max_ratio
