"""``imgpref data scan``: check every image of a subject folder, then compare images with each other.

Per image (see each module for the method and its reference):

============================  ===========================================================================
issue                         check
============================  ===========================================================================
``unreadable``                the file cannot be read or decoded completely (missing, empty, truncated)
``too_small``                 short side below ``min_side`` (after removing padding)
``padding``                   flat bars along the edges (:mod:`.padding`); *cropped*, not rejected
``upscaled``                  resampling traces of an enlargement by at most 4 (peak at or above
                              ``upscale.min_trace_frequency``) *and* missing high frequencies
                              (:mod:`.resampling`), or soft (see ``blur``) with either a resampling
                              trace (``upscale.soft_min_peak_score``) or the square pass-band of a
                              separable resize (:mod:`.passband`)
``blur``                      even the sharpest edges wider than ``blur.max_edge_width_px``
                              (:mod:`.sharpness`) and not an enlargement by either test above
                              (that explains the softness); or, sharp-looking edges (sensor noise
                              added after the blur) but mid-frequency detail lost along one direction
                              (:mod:`.motion`)
``low_jpeg_quality``          JPEG quality estimate below ``jpeg.min_quality`` (:mod:`.jpeg_quality`)
============================  ===========================================================================

Across images: ``duplicate`` (near-duplicate of a kept image, :mod:`.duplicates`; across subjects too)
and ``outlier`` (does not belong to its subject group, :mod:`.outliers`).

Output (in ``--out``): ``scan.jsonl`` (one JSON object per file, see :func:`analyze_image`),
``summary.json`` (counts, settings, subjects, duplicate groups, timing), ``report.md`` and ``report.html``
(thumbnails grouped by problem, in ``thumbs/``). The input folder is only read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from datasets_tools.config import ScanConfig
from datasets_tools.descriptors import ClipEmbedder, fallback_descriptor
from datasets_tools.duplicates import central_crop, colour_thumbnail, group_pairs, near_duplicate_pairs, phash_pair
from datasets_tools.imageio import load, luma, read_image, sha256_bytes
from datasets_tools.jpeg_quality import estimate_quality
from datasets_tools.layout import ImageEntry, Layout, LayoutError, discover, resolve_inside
from datasets_tools.motion import directional_ratio, looks_motion_blurred
from datasets_tools.outliers import judge_subjects
from datasets_tools.padding import find_padding
from datasets_tools.passband import looks_enlarged, passband_shape
from datasets_tools.resampling import detect_upscale
from datasets_tools.sharpness import edge_width

SCAN_VERSION = 1
#: issue -> (title in reports, whether ``data build`` rejects it unless told to keep it).
ISSUES: dict[str, tuple[str, bool]] = {
    "unreadable": ("Unreadable or truncated files", True),
    "too_small": ("Too small", True),
    "padding": ("Padding / letterbox borders (cropped)", False),
    "upscaled": ("Upscaled (resampling traces)", True),
    "blur": ("Blurry", True),
    "low_jpeg_quality": ("Low JPEG quality", True),
    "duplicate": ("Near-duplicates", True),
    "outlier": ("Not like the rest of its subject", True),
}
#: Long side of the reduced copy that hashes, descriptors and report thumbnails are computed from.
REDUCED_SIDE = 256
#: PIL's ``reducing_gap``: shrink by an integer factor first (fast), then resample (exact enough beyond 2x).
REDUCING_GAP = 2.0
#: Colour of the crop box drawn on padded thumbnails.
CROP_BOX_COLOR = (255, 0, 64)
THUMB_QUALITY = 85


@dataclass
class ImageResult:
    record: dict[str, Any]
    descriptor: np.ndarray | None = None
    colour_thumb: np.ndarray | None = None
    centre_thumb: np.ndarray | None = None
    thumbnail: bytes | None = None


@dataclass
class ScanResult:
    root: Path
    config: ScanConfig
    records: list[dict[str, Any]]
    subjects: dict[str, dict[str, Any]]
    skipped: list[tuple[str, str]]
    duplicate_groups: list[list[str]]
    descriptor: str
    seconds: dict[str, float]
    thumbnails: dict[str, bytes] = field(default_factory=dict)


def _reduced(image: Image.Image, side: int) -> Image.Image:
    """``image`` shrunk (if needed) so that its long side is at most ``side``."""
    scale = side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.BILINEAR, reducing_gap=REDUCING_GAP)


def _thumbnail(image: Image.Image, box: tuple[int, int, int, int] | None, full_width: int, size: int) -> bytes:
    """JPEG thumbnail of ``image`` (a reduced copy of a ``full_width`` wide image), crop ``box`` drawn on it."""
    import io

    thumb = _reduced(image, size).convert("RGB")
    if box is not None:
        scale = thumb.width / full_width
        draw = ImageDraw.Draw(thumb)
        left, top, right, bottom = (round(v * scale) for v in box)
        draw.rectangle((left, top, max(left, right - 1), max(top, bottom - 1)), outline=CROP_BOX_COLOR, width=2)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=THUMB_QUALITY)
    return buffer.getvalue()


def analyze_image(root: Path, entry: ImageEntry, cfg: ScanConfig) -> ImageResult:
    """All per-image checks of one file; never raises for a bad file (it becomes ``unreadable``).

    The record holds: ``file``, ``subject``, ``bytes``, ``sha256``, ``format``, ``width``, ``height``
    (upright), ``exif_rotated``, ``padding`` (bar widths), ``crop_box`` (left, top, right, bottom; the
    whole image when there is no padding), ``upscale`` (score, frequency, factor, hf_ratio),
    ``edge_width_px`` and ``edge_scale`` (the factor the image was shrunk by before measuring),
    ``jpeg_quality``, ``phash`` and ``phash_mirror`` (and ``phash_centre``, ``phash_centre_mirror`` of the
    central crop compared for duplicates), ``passband`` (for soft images, :mod:`.passband`),
    ``motion_ratio`` (for images neither soft nor flagged upscaled, :mod:`.motion`), and ``issues``
    (issue -> human-readable detail).
    Cross-image fields (``duplicate_of``, ``outlier``) are added by :func:`scan_folder`.
    """
    record: dict[str, Any] = {"file": entry.file, "subject": entry.subject, "issues": {}}
    try:
        path = resolve_inside(root, entry.file, str(root))
    except LayoutError as err:
        record["issues"]["unreadable"] = str(err)
        return ImageResult(record)
    loaded, data, reason = read_image(path)
    if data is not None:
        record.update(bytes=len(data), sha256=sha256_bytes(data))
    if loaded is None:
        record["issues"]["unreadable"] = reason
        return ImageResult(record)
    rgb = loaded.rgb
    height, width = rgb.shape[:2]
    record.update(format=loaded.format, mode=loaded.mode, width=width, height=height, exif_rotated=loaded.exif_rotated)
    issues = record["issues"]

    pad = find_padding(rgb, cfg.padding, lossy=loaded.lossy)
    record["padding"] = {k: v for k, v in pad.widths.items() if v}
    record["crop_box"] = list(pad.box)
    if pad.found:
        sides = ", ".join(f"{k} {v} px" for k, v in pad.widths.items() if v)
        issues["padding"] = f"bars: {sides}; crop box {list(pad.box)}"
    left, top, right, bottom = pad.box
    content = rgb[top:bottom, left:right]
    short = min(content.shape[:2])
    if short < cfg.min_side:
        issues["too_small"] = f"short side {short} px < {cfg.min_side}" + (" after cropping" if pad.found else "")

    # Only the centred square that detect_upscale analyses is turned into luma (big photos: 10x cheaper).
    side = min(short, cfg.upscale.analysis_size)
    top_c, left_c = (content.shape[0] - side) // 2, (content.shape[1] - side) // 2
    y_square = luma(content[top_c : top_c + side, left_c : left_c + side])
    up = detect_upscale(y_square, loaded.lossy, cfg.upscale)
    record["upscale"] = {k: v if isinstance(v, bool) else round(v, 4) for k, v in asdict(up).items()}
    if up.flagged:
        issues["upscaled"] = (
            f"resampling peak {up.score:.1f} at {up.frequency:.3f} cycles/px, high-frequency power "
            f"{up.hf_ratio:.3f} of natural (about {up.factor:.1f}x enlarged)"
        )

    scale = min(1.0, cfg.blur.analysis_size / short) if short else 1.0
    content_image = Image.fromarray(content)
    if scale < 1.0:
        size = (max(1, round(content.shape[1] * scale)), max(1, round(content.shape[0] * scale)))
        y_blur = luma(np.asarray(content_image.resize(size, Image.LANCZOS, reducing_gap=REDUCING_GAP)))
    else:
        y_blur = luma(content)
    width_px, n_edges = edge_width(y_blur, cfg.blur)
    record.update(edge_width_px=None if width_px is None else round(width_px, 3), edge_points=n_edges, edge_scale=scale)
    soft = width_px is None or width_px > cfg.blur.max_edge_width_px
    if soft and "upscaled" not in issues:
        # Soft and not flagged by the trace test: a resampling peak (whatever the high-frequency power) or a
        # square (separable) pass-band says enlarged; otherwise (a round or line-shaped pass-band) blurred.
        shape = passband_shape(y_square)
        record["passband"] = {k: round(v, 4) for k, v in asdict(shape).items()}
        if up.score >= cfg.upscale.soft_min_peak_score:
            # The trace test wants missing high frequencies too; the wide edges already show them missing.
            issues["upscaled"] = (
                f"soft, with a resampling peak {up.score:.1f} at {up.frequency:.3f} cycles/px (about "
                f"{up.factor:.1f}x enlarged; high-frequency power {up.hf_ratio:.3f} of natural, noise or JPEG)"
            )
        elif np.isfinite(up.hf_ratio) and looks_enlarged(shape, up.hf_ratio, cfg.passband):
            issues["upscaled"] = (
                f"soft, no resampling trace, but a square pass-band (separable resize): diagonals keep "
                f"{shape.corner:.2f} decades more detail than the axes past {shape.cutoff:.2f} cycles/px"
            )
        elif width_px is None:
            issues["blur"] = f"no edges found ({n_edges} edge points < {cfg.blur.min_edges})"
        else:
            issues["blur"] = f"sharpest edges {width_px:.2f} px wide > {cfg.blur.max_edge_width_px}"
    elif "upscaled" not in issues:
        # Sharp-looking edges can be sensor noise on top of a motion blur: look for one lost direction.
        ratio = directional_ratio(y_blur, cfg.motion)
        record["motion_ratio"] = round(ratio, 4)
        if looks_motion_blurred(ratio, width_px, cfg.motion):
            issues["blur"] = (
                f"motion blur: detail lost along one direction (mid/low-frequency energy of the weakest "
                f"direction {ratio:.2f} of the strongest's < {cfg.motion.max_ratio})"
            )

    quality = estimate_quality(loaded.quantization) if loaded.format == "JPEG" else None
    record["jpeg_quality"] = None if quality is None else asdict(quality)
    if quality is not None and quality.quality < cfg.jpeg.min_quality:
        issues["low_jpeg_quality"] = f"estimated quality {quality.quality} < {cfg.jpeg.min_quality}"

    # Hashes, descriptor and thumbnails only need a few hundred pixels: compute them from a reduced copy.
    reduced = np.asarray(_reduced(content_image, REDUCED_SIDE))
    record["phash"], record["phash_mirror"] = phash_pair(reduced)
    centre = central_crop(reduced, cfg.duplicates.centre_fraction)
    record["phash_centre"], record["phash_centre_mirror"] = phash_pair(centre)
    full = _reduced(Image.fromarray(rgb), REDUCED_SIDE) if pad.found else Image.fromarray(reduced)
    thumb = _thumbnail(full, pad.box if pad.found else None, width, cfg.thumbnail_size)
    return ImageResult(
        record,
        descriptor=fallback_descriptor(reduced),
        colour_thumb=colour_thumbnail(reduced),
        centre_thumb=colour_thumbnail(centre),
        thumbnail=thumb,
    )


def _analyze_star(args: tuple[Path, ImageEntry, ScanConfig]) -> ImageResult:
    return analyze_image(*args)


def _keeper_key(record: dict[str, Any], order: int) -> tuple:
    """Sort key choosing which image of a duplicate group to keep: best first."""
    others = len([i for i in record["issues"] if i not in ("padding", "duplicate")])
    box = record["crop_box"]
    pixels = (box[2] - box[0]) * (box[3] - box[1])
    quality = (record.get("jpeg_quality") or {}).get("quality", 101)
    return (others, -pixels, -quality, order)


def _mark_duplicates(
    records: list[dict[str, Any]],
    thumbs: list[np.ndarray | None],
    centre_thumbs: list[np.ndarray | None],
    cfg: ScanConfig,
) -> list[list[str]]:
    readable = [i for i, r in enumerate(records) if "phash" in r]

    def stacked(rows: list[np.ndarray | None]) -> np.ndarray:
        return np.stack([rows[i] for i in readable]) if readable else np.zeros((0, 0), np.float32)

    centre = None
    if cfg.duplicates.centre_fraction < 1:
        centre = (
            [records[i]["phash_centre"] for i in readable],
            [records[i]["phash_centre_mirror"] for i in readable],
            stacked(centre_thumbs),
        )
    pairs = near_duplicate_pairs(
        [records[i]["phash"] for i in readable],
        [records[i]["phash_mirror"] for i in readable],
        stacked(thumbs),
        cfg.duplicates,
        centre,
    )
    distance = {(a, b): d for a, b, d in pairs}
    groups = []
    for group in group_pairs(len(readable), pairs):
        members = sorted(group, key=lambda k: _keeper_key(records[readable[k]], k))
        keeper = records[readable[members[0]]]
        for k in members[1:]:
            record = records[readable[k]]
            d = distance.get((min(k, members[0]), max(k, members[0])))
            record["duplicate_of"] = keeper["file"]
            where = "" if record["subject"] == keeper["subject"] else f" (in subject {keeper['subject']!r})"
            via = f"pHash distance {d}" if d is not None else "through another duplicate"
            record["issues"]["duplicate"] = f"near-duplicate of {keeper['file']}{where}, {via}"
        groups.append([records[readable[k]]["file"] for k in members])
    return groups


def _mark_outliers(records: list[dict[str, Any]], descriptors: list[np.ndarray | None], cfg: ScanConfig, root: Path):
    """Judge subject membership on readable, non-duplicate images; returns the descriptor's name."""
    usable = [i for i, r in enumerate(records) if descriptors[i] is not None and "duplicate" not in r["issues"]]
    if not usable:
        return "none"
    if cfg.outliers.clip_checkpoint:
        embedder = ClipEmbedder(cfg.outliers.clip_checkpoint, cfg.outliers.clip_model, cfg.outliers.device)
        images = []
        for i in usable:
            loaded = load(resolve_inside(root, records[i]["file"], str(root)).read_bytes())
            left, top, right, bottom = records[i]["crop_box"]
            images.append(loaded.rgb[top:bottom, left:right])
        vectors, name = embedder.embed(images), embedder.name
    else:
        vectors, name = np.stack([descriptors[i] for i in usable]), "fallback (colour + gradient histograms)"
    verdicts = judge_subjects(vectors, [records[i]["subject"] for i in usable], cfg.outliers)
    for i, verdict in zip(usable, verdicts, strict=True):
        if verdict is None:
            continue
        records[i]["outlier"] = {
            "d_own": round(verdict.d_own, 4),
            "z": round(verdict.z, 2),
            "d_other": None if verdict.d_other is None else round(verdict.d_other, 4),
            "closest_other": verdict.closest_other,
        }
        if verdict.outlier:
            records[i]["issues"]["outlier"] = verdict.reason
    return name


def scan_folder(
    root: str | Path, cfg: ScanConfig | None = None, progress: Callable[[int, int], None] | None = None
) -> ScanResult:
    """Scan the subject folder ``root`` (layout: :mod:`datasets_tools.layout`)."""
    cfg = cfg or ScanConfig()
    root = Path(root)
    start = time.perf_counter()
    layout: Layout = discover(root)
    jobs = [(root, entry, cfg) for entry in layout.images]
    results: list[ImageResult] = []
    if cfg.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            for result in pool.map(_analyze_star, jobs, chunksize=4):
                results.append(result)
                if progress:
                    progress(len(results), len(jobs))
    else:
        for job in jobs:
            results.append(_analyze_star(job))
            if progress:
                progress(len(results), len(jobs))
    per_image = time.perf_counter() - start

    records = [r.record for r in results]
    groups = _mark_duplicates(records, [r.colour_thumb for r in results], [r.centre_thumb for r in results], cfg)
    descriptor = _mark_outliers(records, [r.descriptor for r in results], cfg, root)
    subjects = {
        sid: {
            "class_word": info.class_word,
            "token": info.token,
            "prompts": info.prompts,
            "images": sum(r["subject"] == sid for r in records),
        }
        for sid, info in sorted(layout.subjects.items())
    }
    total = time.perf_counter() - start
    return ScanResult(
        root=root,
        config=cfg,
        records=records,
        subjects=subjects,
        skipped=layout.skipped,
        duplicate_groups=groups,
        descriptor=descriptor,
        seconds={"per_image_checks": round(per_image, 3), "total": round(total, 3)},
        thumbnails={r.record["file"]: r.thumbnail for r in results if r.thumbnail is not None},
    )


def issue_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """Images per issue, in the order of :data:`ISSUES`, plus ``clean`` (no issue, padding aside)."""
    counts = {name: sum(name in r["issues"] for r in records) for name in ISSUES}
    counts["clean"] = sum(not (set(r["issues"]) - {"padding"}) for r in records)
    return counts
