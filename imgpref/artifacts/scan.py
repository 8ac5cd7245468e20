"""Scan a folder of images for artifacts, alone or against reference images with the same names.

``scan_folder(directory, reference, settings)`` walks ``directory`` recursively, reads every image
(`IMAGE_SUFFIXES`), scores it (`imgpref.artifacts.measure`), and, when ``reference`` is given, scores it
differentially against ``reference/<same relative path>`` (the base model's image for the same prompt
and seed). Unreadable files are reported and skipped, never fatal; sizes may differ from image to image
and between an image and its reference (the grid detector matches lattice frequencies, not bins).

The result is the content of ``scan.json``::

    {"directory": ..., "reference": ... | null, "settings": {...},
     "images": [{"file": <path relative to DIR>, "size": [w, h], "format": "PNG",
                 "reference": <relative path> | null, "scores": {...}, "flags": [...]}],
     "skipped": [{"file": ..., "error": ...}],
     "unmatched": [<files with no readable reference, scored alone>],
     "summary": {"images": n, "skipped": n, "flagged": n, "by_flag": {flag: n}}}

Pixels are read as stored (no EXIF rotation): grid lattices and JPEG blocks live in stored pixel order.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgpref.artifacts.defaults import DEFAULT_MAX_SIZE, DEFAULT_PERIODS, ArtifactThresholds
from imgpref.artifacts.measure import image_flags, image_scores, measure

#: File suffixes read as images (case-insensitive).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
#: PIL format names of JPEG files (their 8x8 blocks are a grid of their own).
JPEG_FORMATS = frozenset({"JPEG", "MPO"})


@dataclass
class ScanSettings:
    """What the scanner measures and when it flags."""

    periods: tuple[int, ...] = DEFAULT_PERIODS
    """Grid periods in pixels (8: VAE footprint; 16: VAE x 2x2 patch packing)."""
    max_size: int = DEFAULT_MAX_SIZE
    """Larger images are centre-cropped to this side for the grid spectrum."""
    thresholds: ArtifactThresholds = field(default_factory=ArtifactThresholds)
    """When each detector trips (calibrated defaults: bench/artifacts.md)."""

    def __post_init__(self) -> None:
        if not self.periods or any(p < 2 for p in self.periods):
            raise ValueError(f"periods must be pixel periods >= 2, got {self.periods!r}")
        if self.max_size < 4 * max(self.periods):
            raise ValueError(f"max_size {self.max_size} is too small for period {max(self.periods)}; use >= 4x it")


class ImageReadError(ValueError):
    """A file could not be read as an image."""


def find_images(directory: Path, exclude: Path | None = None) -> list[Path]:
    """Image files under ``directory`` (recursive, sorted, hidden entries skipped), minus ``exclude``."""
    found = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
    return found


def read_image(path: Path) -> tuple[np.ndarray, str]:
    """(uint8 HxWx3 RGB pixels as stored, PIL format name); :class:`ImageReadError` when unreadable."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB")).copy(), str(image.format)
    except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as err:
        raise ImageReadError(f"{type(err).__name__}: {err}") from err


def _clean(value: Any) -> Any:
    """JSON-safe floats: NaN (image too small for a period) becomes null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def scan_folder(
    directory: Path,
    reference: Path | None = None,
    settings: ScanSettings | None = None,
    exclude: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Scan ``directory`` and return the ``scan.json`` dict (module docstring). Files under ``exclude``
    (the output folder, when it sits inside ``directory``) are left out; ``progress(i, n)`` is called
    before each file."""
    settings = settings or ScanSettings()
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"image folder {str(directory)!r} not found; pass an existing folder")
    if reference is not None and not Path(reference).is_dir():
        raise FileNotFoundError(f"--reference folder {str(reference)!r} not found; pass an existing folder")
    files = find_images(directory, exclude.resolve() if exclude is not None else None)
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise FileNotFoundError(f"no images ({suffixes}) under {str(directory)!r}")

    images, skipped, unmatched = [], [], []
    for i, path in enumerate(files):
        if progress is not None:
            progress(i, len(files))
        relative = path.relative_to(directory).as_posix()
        try:
            pixels, fmt = read_image(path)
            tuned = measure(pixels, settings.periods, settings.max_size)
        except (ImageReadError, ValueError) as err:
            skipped.append({"file": relative, "error": str(err)})
            continue
        base, ref_relative, ref_error = None, None, None
        if reference is not None:
            ref_path = Path(reference) / relative
            if ref_path.is_file():
                try:
                    base = measure(read_image(ref_path)[0], settings.periods, settings.max_size)
                    ref_relative = relative
                except (ImageReadError, ValueError) as err:
                    ref_error = f"reference unreadable: {err}"
            else:
                ref_error = "no reference with this relative path"
            if base is None:
                unmatched.append(relative)
        scores = image_scores(tuned, base)
        entry = {
            "file": relative,
            "size": [int(pixels.shape[1]), int(pixels.shape[0])],
            "format": fmt,
            "reference": ref_relative,
            "scores": {k: _clean(float(v)) for k, v in scores.items()},
            "flags": image_flags(scores, settings.thresholds, jpeg=fmt in JPEG_FORMATS),
        }
        if ref_error is not None:
            entry["note"] = f"{ref_error}; scored alone"
        images.append(entry)

    by_flag: dict[str, int] = {}
    for entry in images:
        for flag in entry["flags"]:
            by_flag[flag] = by_flag.get(flag, 0) + 1
    result = {
        "directory": str(directory),
        "reference": str(reference) if reference is not None else None,
        "settings": {
            "periods": list(settings.periods),
            "max_size": settings.max_size,
            "thresholds": dataclasses.asdict(settings.thresholds),
        },
        "images": images,
        "skipped": skipped,
        "unmatched": unmatched,
        "summary": {
            "images": len(images),
            "skipped": len(skipped),
            "flagged": sum(1 for entry in images if entry["flags"]),
            "by_flag": dict(sorted(by_flag.items())),
        },
    }
    return result
