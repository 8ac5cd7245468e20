"""The dataset folder on disk: PNGs written aside and renamed, ``metadata.jsonl`` rewritten atomically.

Folder layout::

    OUT/metadata.jsonl          one pair per line (``datasets.load_dataset("imagefolder", data_dir=OUT)``)
    OUT/filtered.jsonl          pairs dropped by ``report.filter_not_better``, each with its ``reason``
    OUT/metadata.rank{i}.jsonl  process i's pairs while several processes run (merged, then removed)
    OUT/images/000123_chosen.png, 000123_rejected.png, 000123_reference.png (reference families)
    OUT/pairs_config.yaml, pair_quality.json, pair_quality.md

A pair counts as done when a metadata line lists it and all its files exist: a PNG without a line is
never trusted (it is regenerated), a line without its files is dropped and its pair regenerated.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgpref.outdir import atomic_write_bytes, atomic_write_text
from pipelines.pairs.errors import PairsError

METADATA_FILE = "metadata.jsonl"
FILTERED_FILE = "filtered.jsonl"
RANK_FILE = "metadata.rank{rank}.jsonl"
IMAGES_DIR = "images"
#: Keys of a metadata line naming files of the pair (relative to the dataset folder).
FILE_KEYS = ("chosen_file_name", "rejected_file_name", "reference_file_name")


def image_name(pair_index: int, role: str) -> str:
    """``images/000123_chosen.png`` (role: chosen, rejected, reference)."""
    return f"{IMAGES_DIR}/{pair_index:06d}_{role}.png"


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a uint8 H×W×3 image as PNG next to ``path`` and rename it into place (never half-written)."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def _finite(value: Any) -> Any:
    """JSON readers (pyarrow) reject NaN: non-finite floats are written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def dumps_lines(lines: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(_finite(line), ensure_ascii=False) + "\n" for line in lines)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a file (missing file: none); a bad line is an error naming file and line."""
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise PairsError(f"{path}:{number}: not valid JSON ({err.msg}); fix or remove the line") from None
        if not isinstance(row, dict) or not isinstance(row.get("pair_index"), int):
            raise PairsError(f"{path}:{number}: expected a metadata object with an integer pair_index")
        rows.append(row)
    return rows


def files_exist(out: Path, line: dict[str, Any]) -> bool:
    """Whether every file a line names exists in ``out``."""
    return all(line.get(key) is None or (out / line[key]).is_file() for key in FILE_KEYS)


def rank_files(out: Path) -> list[Path]:
    return sorted(out.glob(RANK_FILE.format(rank="*")))


def existing_lines(out: Path) -> dict[int, dict[str, Any]]:
    """Finished pairs in ``out`` by index: metadata, filtered and per-process lines whose files exist.

    Per-process files win over ``metadata.jsonl`` (they are newer: merged into it at the end)."""
    done: dict[int, dict[str, Any]] = {}
    sources = [out / METADATA_FILE, out / FILTERED_FILE, *rank_files(out)]
    for path in sources:
        for line in read_jsonl(path):
            line = {k: v for k, v in line.items() if k != "reason"}
            if files_exist(out, line):
                done[line["pair_index"]] = line
    return done


def not_better_reason(line: dict[str, Any]) -> str | None:
    """Why a pair's winner is not better (for ``filtered.jsonl``), or None when it is or no verdict exists."""
    if line.get("winner_better") is not False:
        return None
    verdict = line.get("verdict") or {}
    chosen, rejected = verdict.get("chosen"), verdict.get("rejected")
    kind = "tie" if chosen == rejected else "loser better"
    return f"{kind} by {verdict.get('source')}: chosen {chosen}, rejected {rejected}"


def write_dataset(out: Path, lines: dict[int, dict[str, Any]], filter_not_better: bool) -> tuple[int, int]:
    """Rewrite ``metadata.jsonl`` (and ``filtered.jsonl``) atomically, sorted by pair index.

    Returns (kept, filtered). Images of filtered pairs stay on disk."""
    kept, filtered = [], []
    for index in sorted(lines):
        reason = not_better_reason(lines[index]) if filter_not_better else None
        if reason is None:
            kept.append(lines[index])
        else:
            filtered.append({**lines[index], "reason": reason})
    atomic_write_text(out / METADATA_FILE, dumps_lines(kept))
    if filtered or (out / FILTERED_FILE).exists():
        atomic_write_text(out / FILTERED_FILE, dumps_lines(filtered))
    return len(kept), len(filtered)
