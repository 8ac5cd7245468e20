"""The reference model's errors, computed once per sweep and reused by every run.

With the LoRA disabled the policy is the base model, and its errors on a micro-batch depend only on the
model, the pairs and the (pair, t, ε) draws of that stream position (:mod:`imgpref.train.draws`), not on
β or the optimiser. When all runs share what fixes the draws, the errors of every stream position the
longest run reads are computed here once, saved as ``OUT/reference/errors.safetensors`` (keys
``"<position>/w"`` and ``"<position>/l"``), and handed to :func:`imgpref.train.dpo.train_dpo` as a lookup.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from imgpref.config import to_dict
from imgpref.sweep.grid import Run
from imgpref.train.dpo_config import DPOConfig
from imgpref.train.draws import stream_start

#: Config keys that fix the reference errors of a stream position; runs may share errors only if these agree.
SHARED_KEYS = (
    "model",
    "data",
    "train.batch_size",
    "train.grad_accum",
    "train.seed",
    "train.mixed_precision",
    "dpo.timesteps",
    "dpo.logit_mean",
    "dpo.logit_std",
)
REFERENCE_FILE = Path("reference") / "errors.safetensors"


def _get(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[part]
    return tree


def shared_settings(config: DPOConfig) -> dict[str, Any]:
    """The values of :data:`SHARED_KEYS` in one run's config."""
    tree = to_dict(config)
    return {key: _get(tree, key) for key in SHARED_KEYS}


def why_not_shared(runs: Sequence[Run]) -> str | None:
    """None when every run has the same reference errors; else which key differs between which runs."""
    first = shared_settings(runs[0].config)
    for run in runs[1:]:
        other = shared_settings(run.config)
        for key in SHARED_KEYS:
            if other[key] != first[key]:
                return f"{key} differs between runs {runs[0].name!r} and {run.name!r}"
    return None


def stream_positions(runs: Sequence[Run]) -> list[int]:
    """First stream positions of every micro-batch the longest run reads (one process per run)."""
    config = runs[0].config
    b, accum = config.train.batch_size, config.train.grad_accum
    steps = max(run.config.train.max_steps for run in runs)
    return [
        stream_start(step, micro, 0, batch_size=b, grad_accum=accum, world_size=1)
        for step in range(steps)
        for micro in range(accum)
    ]


class ReferenceTable:
    """``table(start, batch) -> (err_w, err_l)``: precomputed reference errors by stream position."""

    def __init__(self, errors: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
        self.errors = errors

    def __call__(self, start: int, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if start not in self.errors:
            raise KeyError(
                f"no precomputed reference errors for stream position {start}; delete the sweep's "
                f"{REFERENCE_FILE} to recompute them for the current grid"
            )
        err_w, err_l = self.errors[start]
        return err_w.to(batch.t.device), err_l.to(batch.t.device)

    def save(self, path: Path, fingerprint: str) -> None:
        """Write atomically (aside, then rename) with the shared settings' fingerprint as metadata."""
        tensors = {}
        for start, (err_w, err_l) in self.errors.items():
            tensors[f"{start}/w"], tensors[f"{start}/l"] = err_w.cpu().contiguous(), err_l.cpu().contiguous()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata={"fingerprint": fingerprint})
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> ReferenceTable | None:
        """The saved table, or None when there is none or it was made for other settings."""
        if not path.is_file():
            return None
        with safe_open(str(path), framework="pt") as handle:
            if (handle.metadata() or {}).get("fingerprint") != fingerprint:
                return None
            raw = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (safe_open is not a mapping)
        starts = {int(key.split("/")[0]) for key in raw}
        return cls({s: (raw[f"{s}/w"], raw[f"{s}/l"]) for s in sorted(starts)})


def fingerprint(runs: Sequence[Run], positions: Sequence[int]) -> str:
    return json.dumps({"settings": shared_settings(runs[0].config), "positions": list(positions)}, sort_keys=True)


@torch.no_grad()
def compute_reference(config: DPOConfig, positions: Sequence[int], progress: bool = False) -> ReferenceTable:
    """The base model's errors (no LoRA) on the micro-batch at each stream position, computed the way
    :func:`imgpref.train.dpo.train_dpo` computes them (same device, dtype and mixed precision)."""
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from imgpref.train.dpo import load_model_and_pairs, make_batch, pair_errors

    device_is_cpu = config.model.device == "cpu" or not torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision=config.train.mixed_precision, cpu=device_is_cpu)
    model, data, _, _, _ = load_model_and_pairs(config, accelerator, progress=progress)
    errors = {}
    with accelerator.autocast():
        for start in tqdm(positions, desc="reference errors", unit="batch", disable=not progress):
            err_w, err_l, _, _ = pair_errors(model, make_batch(data, config, start, model))
            errors[start] = (err_w.cpu(), err_l.cpu())
    return ReferenceTable(errors)


def prepare_reference(runs: Sequence[Run], out: Path, progress: bool = False) -> tuple[ReferenceTable, dict]:
    """Load the sweep's saved reference errors, or compute and save them; returns the table and a note
    for the summary (positions, seconds, whether they were loaded)."""
    positions = stream_positions(runs)
    key = fingerprint(runs, positions)
    path = out / REFERENCE_FILE
    tick = time.perf_counter()
    table = ReferenceTable.load(path, key)
    loaded = table is not None
    if table is None:
        table = compute_reference(runs[0].config, positions, progress)
        table.save(path, key)
    info = {"shared": True, "positions": len(positions), "loaded": loaded, "file": str(REFERENCE_FILE)}
    info["seconds"] = round(time.perf_counter() - tick, 3)
    return table, info
