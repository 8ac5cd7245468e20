"""Exact judge for the toy world: which attributes of a prompt does an image show?

This is the toy world's reward and evaluation metric, so it must be right on clean renders (>= 99%),
survive sensor-like noise, and, most of all, refuse to be fooled by the failure modes of an under- or
over-trained model: a blurred blob is not a triangle, a square, a cross or a circle, and a stretched blob
is not a circle either (`MAX_SHAPE_BLUR`, `MAX_ELONGATION`, `MIN_SHAPE_IOU`).

Method (see shared/notes/toy-world-measurements.md):
1. background = palette background nearest to the median of the border pixels;
2. foreground = largest 8-connected region of pixels far (`FOREGROUND_DISTANCE`) from the background;
3. colour = palette colour nearest to the mean of the strongest quarter of that region;
4. the region is re-cut at half coverage: a pixel belongs to the shape when its projection on the
   background -> colour line is at least `COVERAGE_THRESHOLD`, which is where the renderer's anti-aliased
   edge crosses 50% for every colour/background pair alike;
5. position = quadrant of the centroid of that region;
6. shape: on the coverage map (the projection, clipped to [0, 1], around the region) every shape is placed
   by the map's mass and centroid, blurred by each of `FIT_BLURS`, and compared by soft IoU. The best
   (shape, blur) wins; the shape is None (no shape) when the fit is poor, needs a heavy blur (a blob), the
   map is more stretched than that shape (an ellipse is no circle) or too small.
   Fitting blurred templates makes the judge read the outline of soft, decoder-like edges (a Gaussian
   blur of 1 px at 32 px keeps >= 99% of shapes) while a blur of 2 px is never a shape (measured).

Partial prompts (e.g. the generic 'a photo of a triangle'): only the attributes the prompt names are
scored; the others are None in a `Verdict` (False with a False `<name>_scored` mask in `judge_batch`),
and `all_correct` means "every named attribute is right". A prompt that names nothing is an error.
An image without foreground is wrong on every named colour, shape and position.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from functools import lru_cache
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy import ndimage

from imgpref.toy.world import (
    BACKGROUNDS,
    COLORS,
    POSITIONS,
    REFERENCE_SIZE,
    SHAPES,
    Attributes,
    parse_prompt,
    shape_coverage,
    shape_inside,
)

ATTRIBUTE_NAMES = tuple(f.name for f in fields(Attributes))
# ITU-R BT.709 luma weights, as used by the darkening metrics of DESIGN.md section 4.
LUMA_WEIGHTS = np.array([0.2126, 0.7152, 0.0722])

# First-pass foreground cut, RGB distance in 0-255 units: 4 noise sigmas at sigma 12 (a pure-noise
# pixel passes with p ~ 1e-3, and strays are dropped by keeping the largest region), and still below
# half the smallest colour/background distance (purple on gray, ~124).
FOREGROUND_DISTANCE = 48.0
STRONG_FRACTION = 0.25  # share of the region (furthest from the background) that decides the colour
COVERAGE_THRESHOLD = 0.5  # a pixel is shape when at least half covered by the detected colour
# Best soft IoU below which the region is no shape at all. Renders score >= 0.95 clean and >= 0.85 with
# noise sigma 12 (min over 1000); a stretched blob or a rectangle fits no template this well.
MIN_SHAPE_IOU = 0.8
SUPPORT_MARGIN = 2  # px at 32 px: the coverage map is read this far around the half-coverage region
MOMENT_GRID = 401  # samples per side when measuring a shape's area and centroid
# Gaussian blurs (sigma, px at 32 px) the shape templates are also fitted with: generated images have
# soft edges, and a template blurred to match judges their outline rather than their sharpness.
FIT_BLURS = (0.0, 0.5, 1.0, 1.5, 2.0)
MAX_SHAPE_BLUR = 1.0  # a region best fitted by a blurrier template is a blob, not a shape
BLUR_REACH = 3.0  # the fitting window extends this many blur sigmas beyond the template
# A map more stretched than this relative to its best shape is no shape (a 4:3 ellipse is no circle).
# Renders measure <= 1.07 clean and <= 1.11 with noise sigma 12 (max over 1000).
MAX_ELONGATION = 1.2
PIXEL_VARIANCE = 1.0 / 12.0  # variance of a uniform 1-px box, added by reading a shape off pixels
MIN_SHAPE_AREA = 20.0  # px^2 of coverage at 32 px; the smallest render (r = 4.5, triangle) covers ~40

_PALETTE_NAMES = tuple(COLORS)
_PALETTE = np.array([COLORS[c] for c in _PALETTE_NAMES], dtype=np.float64)
_BACKGROUND_NAMES = tuple(BACKGROUNDS)
_BACKGROUND_PALETTE = np.array([BACKGROUNDS[b] for b in _BACKGROUND_NAMES], dtype=np.float64)
_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
#: Detection's shape_iou, shape_blur, shape_elongation, area and shape_fits of an image without foreground.
_NO_SHAPE_FIT = (0.0, float("nan"), float("nan"), 0, MappingProxyType({}))
#: The fitted template blurs sharp enough for a shape to count (Detection.shape_fits).
_SHARP_FIT_BLURS = np.asarray(FIT_BLURS) <= MAX_SHAPE_BLUR


@dataclass(frozen=True)
class Detection:
    """What the judge sees. color/shape/position are None without foreground (shape also when no shape
    fits). shape_iou is the best soft IoU over shapes and blurs, shape_blur the template blur of that fit
    (sigma, px at 32 px) and shape_elongation the stretch relative to the best shape (1 = as drawn); they
    are 0, NaN and NaN without foreground. area counts the pixels at least half covered. shape_fits holds,
    per shape, its best soft IoU over the templates sharp enough to count (blur <= MAX_SHAPE_BLUR): a
    continuous "how close is this to a crisp triangle" score (empty without foreground)."""

    background: str
    color: str | None
    shape: str | None
    position: str | None
    shape_iou: float
    shape_blur: float
    shape_elongation: float
    area: int
    shape_fits: Mapping[str, float]


@dataclass(frozen=True)
class Verdict:
    """Per-attribute correctness; None where the prompt does not name the attribute."""

    expected: Attributes
    detected: Detection
    color: bool | None
    shape: bool | None
    position: bool | None
    background: bool | None
    all_correct: bool
    mean_luma: float
    luma_std: float


def to_uint8_image(image: Any) -> np.ndarray:
    """uint8 HxWx3 from a uint8 or [0,1]-float HxWx3 array, a PIL image, or a [0,1] 3xHxW torch tensor."""
    if hasattr(image, "detach"):  # a torch tensor, converted without importing torch
        tensor = image.detach().cpu()
        array = (tensor.float() if tensor.is_floating_point() else tensor).numpy()  # bf16 has no numpy
        if array.ndim == 3 and array.shape[0] == 3:
            array = array.transpose(1, 2, 0)
    elif hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        array = np.asarray(image.convert("RGB"))
    else:
        array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image (HxWx3, or 3xHxW for a tensor), got shape {array.shape}")
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.floating):
        return np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ValueError(f"expected uint8 or float values in [0, 1], got dtype {array.dtype}")


def luma(image: Any) -> np.ndarray:
    """Luma Y in [0, 1], HxW, of the 8-bit image (float inputs are quantised first, as when saved)."""
    return to_uint8_image(image).astype(np.float64) @ LUMA_WEIGHTS / 255.0


def image_stats(image: Any) -> dict[str, float]:
    """Brightness/contrast numbers for metrics: mean and std of luma, its 1st/99th percentiles, and the
    Hasler-Suesstrunk colourfulness (on 0-255 values)."""
    rgb = to_uint8_image(image).astype(np.float64)
    y = rgb @ LUMA_WEIGHTS / 255.0
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    colorfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    return {
        "mean_luma": float(y.mean()),
        "luma_std": float(y.std()),
        "luma_p01": float(np.percentile(y, 1)),
        "luma_p99": float(np.percentile(y, 99)),
        "colorfulness": float(colorfulness),
    }


def _nearest(palette: np.ndarray, names: tuple[str, ...], rgb: np.ndarray) -> str:
    return names[int(np.argmin(np.linalg.norm(palette - rgb, axis=1)))]


def _largest_region(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


@dataclass(frozen=True)
class _ShapeMoments:
    """Moments of a shape in its [-1, 1]^2 box (units of r): area as a fraction of the box, the
    centroid's v offset (the triangle's sits r/3 below the box centre) and the variances along u and v."""

    area_fraction: float
    centroid_v: float
    var_u: float
    var_v: float


@lru_cache(maxsize=len(SHAPES))
def _shape_moments(shape: str) -> _ShapeMoments:
    """Measured on a fine grid of the renderer's own shape, so no formula can drift from the drawing."""
    grid = np.linspace(-1.0, 1.0, MOMENT_GRID)
    u, v = np.broadcast_arrays(grid[None, :], grid[:, None])
    inside = shape_inside(shape, u, v)
    centroid_v = float(v[inside].mean())
    return _ShapeMoments(
        area_fraction=float(inside.mean()),
        centroid_v=centroid_v,
        var_u=float((u[inside] ** 2).mean()),
        var_v=float(((v[inside] - centroid_v) ** 2).mean()),
    )


@lru_cache(maxsize=256)
def _blur_matrices(n: int, scale: float) -> np.ndarray:
    """(len(FIT_BLURS), n, n) matrices that Gaussian-blur a length-n axis (zero outside), one per blur:
    blurring a small template as two matrix products is several times faster than ndimage filters."""
    offsets = np.arange(n)[:, None] - np.arange(n)[None, :]
    matrices = []
    for sigma in FIT_BLURS:
        if sigma == 0:
            matrices.append(np.eye(n))
            continue
        kernel_offsets = np.arange(-n, n + 1)
        kernel = np.exp(-0.5 * (kernel_offsets / (sigma * scale)) ** 2)
        matrices.append(np.exp(-0.5 * (offsets / (sigma * scale)) ** 2) / kernel.sum())
    return np.stack(matrices)


@dataclass(frozen=True)
class _MapMoments:
    """Mass, centroid (px, pixel i centred at i + 0.5) and 2x2 covariance (rows then columns) of a map."""

    mass: float
    cy: float
    cx: float
    covariance: np.ndarray


def _map_moments(alpha: np.ndarray) -> _MapMoments:
    rows, cols = np.nonzero(alpha)
    weights = alpha[rows, cols]
    mass = float(weights.sum())
    cy, cx = float((weights * (rows + 0.5)).sum() / mass), float((weights * (cols + 0.5)).sum() / mass)
    offsets = np.stack([rows + 0.5 - cy, cols + 0.5 - cx])
    return _MapMoments(mass, cy, cx, (weights * offsets) @ offsets.T / mass)


def _fit_shapes(alpha: np.ndarray, moments: _MapMoments, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Soft IoU of the coverage map with every shape of SHAPES blurred by every sigma of FIT_BLURS
    (array shape (shapes, blurs)), and each shape's fitted radius.

    Mass and centroid of the map fix the size and position each shape would need (blur preserves
    both), so each template sits where that shape should be and the IoU measures how well outline and
    edge sharpness match; a template blurred like the image judges a soft image by its outline."""
    shape_moments = [_shape_moments(shape) for shape in SHAPES]
    radii = np.sqrt(moments.mass / (4.0 * np.array([m.area_fraction for m in shape_moments])))
    centers_y = moments.cy - np.array([m.centroid_v for m in shape_moments]) * radii
    # One window holds the map's support, every template and its blurred rim; nothing outside it counts.
    pad = int(np.ceil(BLUR_REACH * max(FIT_BLURS) * scale))
    rows, cols = np.nonzero(alpha)
    top = max(min(rows.min(), int(np.floor((centers_y - radii).min())) - pad), 0)
    left = max(min(cols.min(), int(np.floor(moments.cx - radii.max())) - pad), 0)
    bottom = min(max(rows.max() + 1, int(np.ceil((centers_y + radii).max())) + pad), alpha.shape[0])
    right = min(max(cols.max() + 1, int(np.ceil(moments.cx + radii.max())) + pad), alpha.shape[1])
    height, width = bottom - top, right - left
    sharp = np.stack(
        [
            shape_coverage(
                shape,
                (moments.cx - r - left, cy - r - top, moments.cx + r - left, cy + r - top),
                height,
                width,
            )
            for shape, r, cy in zip(SHAPES, radii, centers_y, strict=True)
        ]
    )
    blur_rows, blur_cols = _blur_matrices(height, scale), _blur_matrices(width, scale)
    templates = blur_rows[None] @ sharp[:, None] @ blur_cols.transpose(0, 2, 1)[None]  # (shapes, blurs, h, w)
    window = alpha[top:bottom, left:right]
    ious = np.minimum(window, templates).sum(axis=(2, 3)) / np.maximum(window, templates).sum(axis=(2, 3))
    return ious, radii


def _elongation(moments: _MapMoments, shape: str, radius: float, blur_px: float) -> float:
    """How much more stretched the map is along some axis than `shape` would be: the axis ratio of its
    covariance after dividing out the shape's own (a 4:3 ellipse read as a circle gives 4/3)."""
    shape_moments = _shape_moments(shape)
    # Blur adds its variance on both axes, pixel sampling adds a box's 1/12 px^2.
    isotropic = blur_px**2 + PIXEL_VARIANCE
    variances = np.array([shape_moments.var_v, shape_moments.var_u]) * radius**2 + isotropic
    expected_std = np.sqrt(variances)  # rows then columns, like the map's covariance
    low, high = np.linalg.eigvalsh(moments.covariance / np.outer(expected_std, expected_std))
    return float(np.sqrt(high / max(low, np.finfo(float).tiny)))


@dataclass(frozen=True)
class _ShapeFit:
    shape: str | None
    iou: float
    blur: float
    elongation: float
    fits: dict[str, float]


def _classify_shape(alpha: np.ndarray, scale: float) -> _ShapeFit:
    """Best (shape, blur) by soft IoU; the shape is None unless that fit is close, sharp enough, not
    stretched and not tiny."""
    moments = _map_moments(alpha)
    ious, radii = _fit_shapes(alpha, moments, scale)
    shape_index, blur_index = np.unravel_index(int(np.argmax(ious)), ious.shape)
    best, radius, blur = SHAPES[shape_index], float(radii[shape_index]), FIT_BLURS[blur_index]
    iou = float(ious[shape_index, blur_index])
    elongation = _elongation(moments, best, radius, blur * scale)
    accepted = (
        moments.mass >= MIN_SHAPE_AREA * scale**2
        and iou >= MIN_SHAPE_IOU
        and blur <= MAX_SHAPE_BLUR
        and elongation <= MAX_ELONGATION
    )
    fits = {shape: float(v) for shape, v in zip(SHAPES, ious[:, _SHARP_FIT_BLURS].max(axis=1), strict=True)}
    return _ShapeFit(best if accepted else None, iou, blur, elongation, fits)


def detect(image: Any) -> Detection:
    """Read background, colour, shape and position off one image (see the module docstring)."""
    rgb = to_uint8_image(image).astype(np.float64)
    size = min(rgb.shape[:2])
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
    background = _nearest(_BACKGROUND_PALETTE, _BACKGROUND_NAMES, np.median(border, axis=0))
    bg_rgb = np.asarray(BACKGROUNDS[background], dtype=np.float64)
    distance = np.linalg.norm(rgb - bg_rgb, axis=-1)
    region = _largest_region(distance > FOREGROUND_DISTANCE)
    if not region.any():
        return Detection(background, None, None, None, *_NO_SHAPE_FIT)
    region_distance = distance[region]
    n_strong = max(1, int(np.ceil(STRONG_FRACTION * region_distance.size)))
    strongest = np.argsort(region_distance)[-n_strong:]
    color = _nearest(_PALETTE, _PALETTE_NAMES, rgb[region][strongest].mean(axis=0))
    direction = np.asarray(COLORS[color], dtype=np.float64) - bg_rgb
    alpha = (rgb - bg_rgb) @ direction / (direction @ direction)
    shape_region = _largest_region(alpha >= COVERAGE_THRESHOLD)
    if not shape_region.any():  # strongly blurred or faded: a colour is visible but no solid shape
        return Detection(background, color, None, None, *_NO_SHAPE_FIT)
    rows, cols = np.nonzero(shape_region)
    column, row = int(cols.mean() + 0.5 >= rgb.shape[1] / 2), int(rows.mean() + 0.5 >= rgb.shape[0] / 2)
    position = next(name for name, cell in POSITIONS.items() if cell == (column, row))
    margin = max(1, round(SUPPORT_MARGIN * size / REFERENCE_SIZE))
    support = ndimage.binary_dilation(shape_region, iterations=margin)
    soft = np.where(support, np.clip(alpha, 0.0, 1.0), 0.0)
    fit = _classify_shape(soft, size / REFERENCE_SIZE)
    area = int(shape_region.sum())
    return Detection(background, color, fit.shape, position, fit.iou, fit.blur, fit.elongation, area, fit.fits)


def _expected(prompt: str) -> Attributes:
    expected = parse_prompt(prompt, partial=True)
    if not expected.named():
        raise ValueError(f"prompt {prompt!r} names no attribute of the toy world: nothing to judge")
    return expected


def judge(image: Any, prompt: str) -> Verdict:
    """Judge one image against one (full or partial) prompt of the toy world."""
    expected = _expected(prompt)
    rgb = to_uint8_image(image)
    detected = detect(rgb)
    y = luma(rgb)
    wanted = {name: getattr(expected, name) for name in ATTRIBUTE_NAMES}
    scores = {name: None if w is None else getattr(detected, name) == w for name, w in wanted.items()}
    return Verdict(
        expected=expected,
        detected=detected,
        all_correct=all(ok for ok in scores.values() if ok is not None),
        mean_luma=float(y.mean()),
        luma_std=float(y.std()),
        **scores,
    )


def _as_image_list(images: Any) -> list[Any]:
    if hasattr(images, "detach") or isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"expected a batch of images (4-D), got shape {tuple(images.shape)}")
        return [images[i] for i in range(images.shape[0])]
    return list(images)


def judge_batch(images: Any, prompts: list[str]) -> dict[str, np.ndarray]:
    """Judge a batch: images as a list (any type `judge` takes), a uint8 BxHxWx3 array or a float
    Bx3xHxW tensor in [0, 1]. Returns boolean arrays per attribute and `all_correct`, `<name>_scored`
    masks, float `mean_luma`, `luma_std`, `shape_iou`, `shape_blur` and `shape_elongation` (see
    `Detection`), `asked_shape_fit` (the soft IoU of the shape the prompt asks for, from
    `Detection.shape_fits`: a continuous shape reward; 0 without foreground or when the prompt names no
    shape), and the detected attributes (`detected_<name>`, object arrays holding a name or None)."""
    image_list = _as_image_list(images)
    if len(image_list) != len(prompts):
        raise ValueError(f"got {len(image_list)} images but {len(prompts)} prompts")
    verdicts = [judge(image, text) for image, text in zip(image_list, prompts, strict=True)]
    result: dict[str, np.ndarray] = {}
    for name in ATTRIBUTE_NAMES:
        values = [getattr(v, name) for v in verdicts]
        result[name] = np.array([bool(x) for x in values], dtype=bool)
        result[f"{name}_scored"] = np.array([x is not None for x in values], dtype=bool)
        result[f"detected_{name}"] = np.array([getattr(v.detected, name) for v in verdicts], dtype=object)
    result["all_correct"] = np.array([v.all_correct for v in verdicts], dtype=bool)
    result["mean_luma"] = np.array([v.mean_luma for v in verdicts], dtype=np.float64)
    result["luma_std"] = np.array([v.luma_std for v in verdicts], dtype=np.float64)
    for name in ("shape_iou", "shape_blur", "shape_elongation"):
        result[name] = np.array([getattr(v.detected, name) for v in verdicts], dtype=np.float64)
    result["asked_shape_fit"] = np.array(
        [v.detected.shape_fits.get(v.expected.shape, 0.0) if v.expected.shape else 0.0 for v in verdicts],
        dtype=np.float64,
    )
    return result
