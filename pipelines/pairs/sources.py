"""Prompt sources: the toy world's splits, a text file of prompts, or a subject manifest folder.

A source becomes a list of :class:`PromptItem` (prompt, what is known about it, ground-truth and
reference images when there are some); pair ``i`` uses item ``order[i mod len(items)]``.

Subject manifests (``imgpref data build``) are read here as plain JSON lines, one image per line with
``file_name``, ``subject``, ``class_word``, ``token``, ``prompts`` and optional ``crop_box``; file names
must stay inside the manifest folder. Each (image, prompt) is one item whose ground truth is that image
and whose reference image (for reference-conditioned families) is the next image of the same subject
(the image itself when the subject has only one).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageOps

from imgpref.toy import world
from pipelines.pairs.config import MANIFEST_FILE, source_kind
from pipelines.pairs.errors import PairsError


@dataclass(frozen=True)
class ImageRef:
    """An image file of a manifest, with the crop still to apply and where it was listed."""

    path: Path
    crop_box: tuple[int, int, int, int] | None
    where: str


@dataclass(frozen=True)
class PromptItem:
    """One prompt of a source and what is known about it."""

    prompt: str
    where: str
    """Source and line, for error messages (``prompts.txt:3``, ``manifest.jsonl:7``, ``toy-train``)."""
    attributes: world.Attributes | None = None
    """Toy attributes the prompt names (toy sources, and toy prompts in text files)."""
    class_word: str | None = None
    """Subject class word (manifests)."""
    image: ImageRef | None = None
    """Ground-truth image (manifests)."""
    reference: ImageRef | None = None
    """Reference image for reference-conditioned families (manifests)."""


def _toy_attributes(prompt: str) -> world.Attributes | None:
    try:
        attrs = world.parse_prompt(prompt, partial=True)
    except ValueError:
        return None
    return attrs if attrs.named() else None


def _text_items(path: Path) -> list[PromptItem]:
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            items.append(PromptItem(text, f"{path}:{number}", attributes=_toy_attributes(text)))
    return items


def resolve_inside(root: Path, name: str, where: str) -> Path:
    """``root / name`` when it stays inside ``root`` (relative, no ``..``, no link leading out)."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if not name or pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise PairsError(f"{where}: file name {name!r} must be a relative path inside {str(root)!r}")
    if ".." in pure.parts:
        raise PairsError(f"{where}: file name {name!r} must not contain '..'")
    path = root.joinpath(*pure.parts)
    if not path.resolve().is_relative_to(root.resolve()):
        raise PairsError(f"{where}: file name {name!r} leads outside {str(root)!r} (through a link)")
    return path


def _manifest_line(data: object, where: str) -> dict:
    if not isinstance(data, dict):
        raise PairsError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key in ("file_name", "subject", "class_word"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise PairsError(f"{where}: {key!r} must be a non-empty string, got {data.get(key)!r}")
    prompts = data.get("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise PairsError(f"{where}: 'prompts' must be a non-empty list of non-empty strings, got {prompts!r}")
    box = data.get("crop_box")
    if box is not None and (
        not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, int) and v >= 0 for v in box)
    ):
        raise PairsError(f"{where}: 'crop_box' must be null or [left, top, right, bottom] in pixels, got {box!r}")
    return data


def _manifest_items(folder: Path) -> list[PromptItem]:
    file = folder / MANIFEST_FILE
    rows: list[tuple[dict, ImageRef]] = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
        where = f"{file}:{number}"
        if not line.strip():
            continue
        try:
            data = _manifest_line(json.loads(line), where)
        except json.JSONDecodeError as err:
            raise PairsError(f"{where}: not valid JSON ({err.msg})") from None
        path = resolve_inside(folder, data["file_name"], where)
        if not path.is_file():
            raise PairsError(f"{where}: image {data['file_name']!r} not found in {str(folder)!r}")
        box = data.get("crop_box")
        rows.append((data, ImageRef(path, None if box is None else tuple(box), where)))
    by_subject: dict[str, list[ImageRef]] = {}
    position = []  # index of each row among its subject's images
    for data, ref in rows:
        same = by_subject.setdefault(data["subject"], [])
        position.append(len(same))
        same.append(ref)
    items = []
    for (data, ref), pos in zip(rows, position, strict=True):
        same = by_subject[data["subject"]]
        reference = same[(pos + 1) % len(same)]
        for text in data["prompts"]:
            items.append(
                PromptItem(text.strip(), ref.where, class_word=data["class_word"], image=ref, reference=reference)
            )
    return items


def load_items(source: str) -> list[PromptItem]:
    """The items of ``prompts.source`` in their base order; an empty source is an error."""
    kind = source_kind(source)
    if kind == "toy":
        split = source.removeprefix("toy-")
        items = [PromptItem(world.prompt(a), source, attributes=a) for a in world.split(split)]
    elif kind == "text":
        items = _text_items(Path(source).expanduser())
    else:
        items = _manifest_items(Path(source).expanduser())
    if not items:
        raise PairsError(
            f"prompts.source {source!r} holds no prompts (empty lines and lines starting with # are skipped); "
            "add prompts or pass another source"
        )
    return items


def pair_items(source: str, n_pairs: int, seed: int = 0) -> list[PromptItem]:
    """The item of each pair: toy sources cycle their split in a seeded order, files in file order."""
    items = load_items(source)
    if source_kind(source) == "toy":
        order = np.random.default_rng(seed).permutation(len(items))
    else:
        order = np.arange(len(items))
    return [items[order[i % len(items)]] for i in range(n_pairs)]


def load_image(ref: ImageRef, height: int, width: int) -> np.ndarray:
    """A manifest image as uint8 H×W×3: upright (EXIF), RGB, cropped by ``crop_box``, centre-cropped to
    the target aspect ratio and resized (Lanczos) to ``height`` × ``width``."""
    try:
        with Image.open(ref.path) as handle:
            image = ImageOps.exif_transpose(handle).convert("RGB")
    except OSError as err:
        raise PairsError(f"{ref.where}: cannot read image {str(ref.path)!r} ({err})") from None
    if ref.crop_box is not None:
        left, top, right, bottom = ref.crop_box
        if not (left < right <= image.width and top < bottom <= image.height):
            raise PairsError(f"{ref.where}: crop_box {list(ref.crop_box)} does not fit the image {image.size}")
        image = image.crop(ref.crop_box)
    return np.asarray(ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS))
