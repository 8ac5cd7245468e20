"""Read and check a preference-pair folder before training (DESIGN.md section 3, "Preference data").

A pair folder holds ``metadata.jsonl`` (one JSON object per line with at least ``prompt``,
``chosen_file_name`` and ``rejected_file_name``; optionally ``reference_file_name``) and the images it
names, by paths relative to the folder. Every problem (bad JSON, missing field, a path leaving the
folder, a missing, unreadable or wrongly sized image) is collected with its line number and file and
reported in one error before any training starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from imgpref.errors import PairDataError

METADATA = "metadata.jsonl"
REQUIRED = ("prompt", "chosen_file_name", "rejected_file_name")
#: Problems listed in the error message before "... and N more".
MAX_LISTED = 20


@dataclass(frozen=True)
class Pair:
    """One preference pair: paths are absolute, ``line`` is its line in ``metadata.jsonl`` (1-based)."""

    line: int
    prompt: str
    chosen: Path
    rejected: Path
    reference: Path | None = None


def _inside(root: Path, name: object, line: int, key: str, problems: list[str]) -> Path | None:
    if not isinstance(name, str) or not name:
        problems.append(f"{METADATA}:{line}: {key} must be a non-empty relative path, got {name!r}")
        return None
    path = Path(name)
    resolved = (root / path).resolve()
    if path.is_absolute() or not resolved.is_relative_to(root.resolve()):
        problems.append(f"{METADATA}:{line}: {key} {name!r} must be a path inside the pair folder (no '..')")
        return None
    return root / path


def read_pairs(folder: str | Path, limit: int = 0) -> list[Pair]:
    """Parse ``metadata.jsonl``; raise :class:`PairDataError` listing every bad line."""
    root = Path(folder)
    meta = root / METADATA
    if not meta.is_file():
        raise PairDataError(
            f"{str(root)!r} has no {METADATA}: point data.path at a pair folder (make one with "
            "`imgpref pairs generate`)"
        )
    pairs: list[Pair] = []
    problems: list[str] = []
    for line_no, text in enumerate(meta.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(f"{METADATA}:{line_no}: not valid JSON ({err.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{METADATA}:{line_no}: must be a JSON object")
            continue
        missing = [k for k in REQUIRED if k not in row]
        if missing:
            problems.append(f"{METADATA}:{line_no}: missing {', '.join(missing)} (a pair needs {', '.join(REQUIRED)})")
            continue
        if not isinstance(row["prompt"], str):
            problems.append(f"{METADATA}:{line_no}: prompt must be a string")
            continue
        chosen = _inside(root, row["chosen_file_name"], line_no, "chosen_file_name", problems)
        rejected = _inside(root, row["rejected_file_name"], line_no, "rejected_file_name", problems)
        ref_name = row.get("reference_file_name")
        reference = _inside(root, ref_name, line_no, "reference_file_name", problems) if ref_name else None
        if chosen is None or rejected is None or (ref_name and reference is None):
            continue
        pairs.append(Pair(line_no, row["prompt"], chosen, rejected, reference))
        if limit and len(pairs) >= limit:
            break
    if not pairs and not problems:
        problems.append(f"{METADATA}: no pairs (the file is empty)")
    if problems:
        raise PairDataError(_format(root, problems))
    return pairs


def _format(root: Path, problems: list[str]) -> str:
    listed = "\n  ".join(problems[:MAX_LISTED])
    more = f"\n  ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"pair folder {str(root)!r}: {len(problems)} problem(s):\n  {listed}{more}"


def load_image(path: Path, resolution: int) -> torch.Tensor:
    """An RGB image as a float tensor 3×H×W in [0, 1]; resized (shorter side) and centre-cropped to
    ``resolution`` when it is > 0."""
    with Image.open(path) as img:
        img = img.convert("RGB")
        if resolution:
            scale = resolution / min(img.size)
            size = (max(resolution, round(img.width * scale)), max(resolution, round(img.height * scale)))
            if size != img.size:
                img = img.resize(size, Image.Resampling.BICUBIC)
            left, top = (img.width - resolution) // 2, (img.height - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
        array = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def check_images(root: Path, pairs: list[Pair], resolution: int) -> tuple[int, int]:
    """Open every image once; raise :class:`PairDataError` naming each unreadable or odd-sized one.

    Returns the (height, width) training images will have."""
    problems: list[str] = []
    sizes: dict[tuple[int, int], str] = {}
    for pair in pairs:
        for key, path in (("chosen", pair.chosen), ("rejected", pair.rejected), ("reference", pair.reference)):
            if path is None:
                continue
            where = f"{METADATA}:{pair.line}: {key} {str(path.relative_to(root))!r}"
            if not path.is_file():
                problems.append(f"{where} does not exist")
                continue
            try:
                with Image.open(path) as img:
                    img.load()
                    size = (img.height, img.width)
            except (UnidentifiedImageError, OSError, SyntaxError) as err:
                problems.append(f"{where} cannot be read ({type(err).__name__}: {err})")
                continue
            if key != "reference" and not resolution:
                sizes.setdefault(size, where)
                if len(sizes) > 1:
                    first = next(iter(sizes))
                    problems.append(
                        f"{where} is {size[1]}x{size[0]} but {sizes[first]} is {first[1]}x{first[0]}; "
                        "set data.resolution to train at one size"
                    )
                    sizes.pop(size)
    if problems:
        raise PairDataError(_format(root, problems))
    if resolution:
        return resolution, resolution
    return next(iter(sizes))
