"""``artifact_penalty``: a per-image penalty (≤ 0) from the artifact detectors of :mod:`imgpref.artifacts`.

Over-optimised LoRAs grow grid/checkerboard textures and go dark (DESIGN.md section 4). Without a base
image to compare against (a reward sees one image at a time), the single-image forms are used::

    grid  = max over periods p of max(0, grid_p / grid_ratio − 1),  counted only when grid_p_rms >= grid_rms
    dark  = max(0, min_luma − mean_luma)                            (0 with the default min_luma = 0)
    r     = −(grid_weight · grid + dark_weight · dark + crushed_weight · crushed_black)

``grid_p`` is the pooled lattice peak ratio and ``grid_p_rms`` the lattice pattern's rms in 8-bit levels
(:mod:`imgpref.artifacts.grid`); the defaults of ``grid_ratio`` and ``grid_rms`` are the calibrated
single-image flag thresholds (bench/artifacts.md), so a clean image scores exactly 0. ``crushed_black``
is the share of pixels with luma ≤ 3/255. Periods an image is too small for (NaN) count as clean.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def make_artifact_penalty(
    name: str,
    periods: Sequence[int] = (8, 16),
    grid_weight: float = 1.0,
    dark_weight: float = 1.0,
    crushed_weight: float = 1.0,
    min_luma: float = 0.0,
    grid_ratio: float | None = None,
    grid_rms: float | None = None,
):
    """Factory of ``artifact_penalty`` (see the module docstring)."""
    from imgpref.artifacts.defaults import DEFAULT_MAX_SIZE, GRID_RATIO, GRID_RMS
    from imgpref.artifacts.measure import measure

    ratio_threshold = GRID_RATIO if grid_ratio is None else float(grid_ratio)
    rms_threshold = GRID_RMS if grid_rms is None else float(grid_rms)
    weights = (grid_weight, dark_weight, crushed_weight)
    if not all(math.isfinite(w) and w >= 0 for w in weights) or not 0 <= min_luma <= 1:
        raise ValueError("artifact_penalty: weights must be finite and >= 0 and min_luma in [0, 1]")
    if ratio_threshold <= 1 or rms_threshold < 0:
        raise ValueError("artifact_penalty: grid_ratio must be > 1 and grid_rms >= 0")
    periods = tuple(int(p) for p in periods)

    def penalty(image: torch.Tensor) -> float:
        m = measure(image, periods, DEFAULT_MAX_SIZE)
        grid = 0.0
        for p in periods:
            score, rms = m.grid.scores.get(p, math.nan), m.grid.rms.get(p, math.nan)
            if math.isfinite(score) and math.isfinite(rms) and rms >= rms_threshold:
                grid = max(grid, score / ratio_threshold - 1.0)
        dark = max(0.0, min_luma - m.tone["mean_luma"])
        return -(grid_weight * grid + dark_weight * dark + crushed_weight * m.tone["crushed_black"])

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
        images = images.detach().float().cpu()
        return {name: torch.tensor([penalty(images[i]) for i in range(images.shape[0])], dtype=torch.float32)}

    return reward
