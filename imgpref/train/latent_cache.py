"""Encode a pair folder once: VAE latents of winners and losers, prompt (and reference) conditionings.

Training steps never run the VAE encoder or the text encoders: everything they need is computed here
once, stored as safetensors under a key that hashes the model folder's files and the pair data, and
reused by later runs on the same model and data (a β sweep encodes once). A cache entry is written to
a temporary folder and renamed into place, so a crash never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from imgpref.models.base import Cond, FamilyAdapter, concat_cond
from imgpref.toy.cache import cache_root
from imgpref.train.pair_data import Pair, load_image

#: Bump when the cache layout or what is encoded changes.
CACHE_VERSION = 1
#: Files of a model folder whose size and modification time enter the cache key.
MODEL_FILE_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model")


@dataclass
class EncodedPairs:
    """Everything a DPO step needs, on the CPU: ``chosen``/``rejected`` latents [N, C, h, w], the
    conditioning of each distinct condition [U, ...] and ``cond_index`` [N] mapping pairs to it."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    cond: Cond
    cond_index: torch.Tensor

    def __len__(self) -> int:
        return int(self.chosen.shape[0])

    def batch_cond(self, indices: torch.Tensor) -> Cond:
        rows = self.cond_index[indices]
        return {k: v[rows] for k, v in self.cond.items()}


def _file_fingerprint(path: Path) -> list:
    stat = path.stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def cache_key(model_path: str, family: str, dtype: torch.dtype, pairs: list[Pair], size: tuple[int, int]) -> str:
    """A hash of the model folder's files, the family, dtype, training size and every pair's inputs."""
    digest = hashlib.sha256()
    digest.update(json.dumps([CACHE_VERSION, family, str(dtype), list(size), model_path]).encode())
    root = Path(model_path)
    if root.is_dir():
        for f in sorted(root.rglob("*")):
            if f.is_file() and f.suffix in MODEL_FILE_SUFFIXES:
                digest.update(json.dumps(_file_fingerprint(f)).encode())
    for p in pairs:
        files = [_file_fingerprint(x) for x in (p.chosen, p.rejected, p.reference) if x is not None]
        digest.update(json.dumps([p.prompt, files]).encode())
    return digest.hexdigest()[:24]


def _condition_key(pair: Pair) -> tuple[str, str | None]:
    return pair.prompt, str(pair.reference) if pair.reference else None


@torch.no_grad()
def _encode(
    model: FamilyAdapter, pairs: list[Pair], size: tuple[int, int], batch_size: int, progress: bool
) -> dict[str, torch.Tensor]:
    resolution = size[0] if size[0] == size[1] else 0
    conditions = list(dict.fromkeys(_condition_key(p) for p in pairs))
    where = {c: i for i, c in enumerate(conditions)}
    tensors: dict[str, torch.Tensor] = {
        "cond_index": torch.tensor([where[_condition_key(p)] for p in pairs], dtype=torch.long)
    }
    bar = tqdm(total=2 * len(pairs) + len(conditions), desc="encoding pairs (once)", unit="img", disable=not progress)
    for side in ("chosen", "rejected"):
        chunks = []
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            images = torch.stack([load_image(getattr(p, side), resolution) for p in batch]).to(model.device)
            chunks.append(model.encode_images(images).float().cpu())
            bar.update(len(batch))
        tensors[side] = torch.cat(chunks)
    conds: list[Cond] = []
    # SDXL's micro-conditioning describes the training size.
    extra = {"image_size": size} if "image_size" in inspect.signature(model.encode_prompts).parameters else {}
    for start in range(0, len(conditions), batch_size):
        batch = conditions[start : start + batch_size]
        refs = None
        if model.takes_reference_image:
            refs = torch.stack([load_image(Path(r), 0) for _, r in batch]).to(model.device)
        cond = model.encode_prompts([prompt for prompt, _ in batch], reference_images=refs, **extra)
        conds.append({k: v.cpu() for k, v in cond.items()})
        bar.update(len(batch))
    bar.close()
    tensors.update({f"cond.{k}": v.contiguous() for k, v in concat_cond(*conds).items()})
    return tensors


def encode_pairs(
    model: FamilyAdapter,
    model_path: str,
    pairs: list[Pair],
    size: tuple[int, int],
    *,
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[EncodedPairs, Path, bool]:
    """The encoded pairs, the cache entry's folder, and whether it was a cache hit."""
    if model.takes_reference_image and any(p.reference is None for p in pairs):
        line = next(p.line for p in pairs if p.reference is None)
        raise ValueError(
            f"metadata.jsonl:{line}: family {model.name!r} is conditioned on a reference image but the pair "
            "has no reference_file_name"
        )
    key = cache_key(model_path, model.name, model.dtype, pairs, size)
    root = Path(cache_dir) if cache_dir else cache_root() / "latents"
    entry = root / key
    hit = (entry / "tensors.safetensors").is_file()
    if not hit:
        tensors = _encode(model, pairs, size, batch_size, progress)
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{key}."))
        try:
            save_file(tensors, str(tmp / "tensors.safetensors"))
            (tmp / "info.json").write_text(json.dumps({"model": model_path, "pairs": len(pairs), "size": size}))
            os.replace(tmp, entry)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (entry / "tensors.safetensors").is_file():  # not another process winning the same race
                raise
    tensors = load_file(str(entry / "tensors.safetensors"))
    cond = {k.removeprefix("cond."): v for k, v in tensors.items() if k.startswith("cond.")}
    encoded = EncodedPairs(tensors["chosen"], tensors["rejected"], cond, tensors["cond_index"])
    return encoded, entry, hit
