"""Resumable checkpoints, written atomically (DESIGN.md section 6).

``OUT/checkpoints/step-000123/`` holds the LoRA (safetensors), the optimiser and LR-scheduler state,
the RNG states and ``state.json`` (step, recipe state such as the artifact guard's). It is written to a
hidden temporary folder and renamed into place; ``state.json`` is written last, so a folder without it
is never picked. Everything is read back with safetensors or ``torch.load(weights_only=True)``.
Data order, timesteps and noise are functions of (seed, step), so the step is the data position.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
_NAME = re.compile(r"^step-(\d+)$")


def checkpoint_dir(out: Path, step: int) -> Path:
    return out / CHECKPOINTS / f"step-{step:06d}"


def list_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with ``state.json``), oldest first."""
    root = out / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _NAME.match(path.name)
        if match and (path / "state.json").is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(out: Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1][1] if found else None


def _rng_state() -> dict[str, torch.Tensor]:
    """Global torch RNG states (LoRA dropout draws from them; data, t and noise use seeded generators)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            state[f"cuda{i}"] = s
    return state


def save_checkpoint(
    out: Path,
    step: int,
    *,
    lora: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
    protect: int | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and keep only the ``keep`` newest complete ones (and the
    checkpoint of step ``protect``, e.g. the last one that passed the artifact guard)."""
    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(out, step)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}."))
    try:
        save_file({k: v.contiguous() for k, v in lora.items()}, str(tmp / "lora.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(_rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1))
        if final.exists():  # a re-save of the same step (e.g. SIGTERM right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old_step, old in list_checkpoints(out)[:-keep]:
        if old_step != protect:
            shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> tuple[dict, dict[str, Any]]:
    """Restore optimiser, scheduler and RNG from ``path``; return (LoRA state dict, state.json)."""
    lora = load_file(str(path / "lora.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return lora, json.loads((path / "state.json").read_text())
