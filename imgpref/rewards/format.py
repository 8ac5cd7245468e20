"""Format rewards: brightness inside a band, aspect ratio, image size.

``luma_band(low, high, scale)``: with the image's mean BT.709 luma ``Y`` (0..1, the darkening metric of
DESIGN.md section 4)::

    r = 1                          if low <= Y <= high
    r = −scale · distance(Y, band) otherwise (distance = low − Y below, Y − high above)

so an image in the band earns 1 and one outside loses in proportion to how far out it is (with the
default scale 10, 0.1 of luma outside costs 1): a compliance bonus plus a slope that points back in.

``aspect(ratio, tolerance)``: 1 when ``|W/H − ratio| <= tolerance`` else 0; ``size(min_side, max_side)``:
1 when both sides lie in [min_side, max_side] (0 = no bound) else 0. Generated batches share one size,
so these two mainly guard rollouts whose size varies (or rewards served to other pipelines).
"""

from __future__ import annotations

import math

import torch

#: BT.709 luma weights (R, G, B); the same as imgpref.artifacts.images and the toy judge.
LUMA_WEIGHTS = (0.2126, 0.7152, 0.0722)
#: Default penalty per unit of luma outside the band: 0.1 outside costs 1 (as much as the bonus).
DEFAULT_LUMA_SCALE = 10.0


def mean_luma(images: torch.Tensor) -> torch.Tensor:
    """Mean BT.709 luma per image, [B], of images in [0, 1] (B×3×H×W), quantised to 8 bits as saved."""
    rgb = torch.round(images.detach().float().clamp(0, 1) * 255) / 255
    weights = torch.tensor(LUMA_WEIGHTS, dtype=rgb.dtype, device=rgb.device).reshape(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1).flatten(1).mean(dim=1).cpu()


def luma_band_reward(luma: torch.Tensor, low: float, high: float, scale: float) -> torch.Tensor:
    """1 inside [low, high], else −scale × the distance to the band."""
    distance = (low - luma).clamp(min=0) + (luma - high).clamp(min=0)
    return torch.where(distance > 0, -scale * distance, torch.ones_like(luma))


def make_luma_band(name: str, low: float = 0.35, high: float = 0.65, scale: float = DEFAULT_LUMA_SCALE):
    """Brightness inside [low, high] (mean luma in 0..1); see the module docstring."""
    if not (0 <= low < high <= 1):
        raise ValueError(f"luma_band needs 0 <= low < high <= 1, got low={low}, high={high}")
    if not (math.isfinite(scale) and scale >= 0):
        raise ValueError(f"luma_band: scale must be finite and >= 0, got {scale}")

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
        return {name: luma_band_reward(mean_luma(images), low, high, scale)}

    return reward


def make_aspect(name: str, ratio: float = 1.0, tolerance: float = 0.01):
    """1 when the image's width / height is within ``tolerance`` of ``ratio``, else 0."""
    if not (ratio > 0 and tolerance >= 0):
        raise ValueError(f"aspect needs ratio > 0 and tolerance >= 0, got ratio={ratio}, tolerance={tolerance}")

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        ok = abs(width / height - ratio) <= tolerance
        return {name: torch.full((images.shape[0],), float(ok))}

    return reward


def make_size(name: str, min_side: int = 0, max_side: int = 0):
    """1 when both image sides lie in [min_side, max_side] (0 = unbounded), else 0."""
    if min_side < 0 or max_side < 0 or (max_side and max_side < min_side):
        raise ValueError(f"size needs 0 <= min_side <= max_side (0 = unbounded), got {min_side}, {max_side}")

    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
        sides = images.shape[-2:]
        ok = all(s >= min_side and (not max_side or s <= max_side) for s in sides)
        return {name: torch.full((images.shape[0],), float(ok))}

    return reward
