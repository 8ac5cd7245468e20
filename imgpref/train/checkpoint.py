"""Resumable checkpoints, written atomically (DESIGN.md section 6).

``OUT/checkpoints/step-000123/`` holds the LoRA (safetensors), the optimiser and LR-scheduler state,
the RNG states and ``state.json`` (step, recipe state such as the artifact guard's). It is written to a
hidden temporary folder and renamed into place; ``state.json`` is written last, so a folder without it
is never picked. Everything is read back with safetensors or ``torch.load(weights_only=True)``.
Data order, timesteps and noise are functions of (seed, step), so the step is the data position.

Under FSDP2 the LoRA and the optimiser state are sharded (DTensors); a checkpoint still holds them whole,
in the same layout as a single-process run (the files do not depend on the launch): every process
gathers (:func:`gathered_optimizer_state`), the main process writes, and on resume every process reads
the whole state and keeps its own shard (:func:`load_optimizer_state`).
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
    optimizer_state: dict[str, Any],
    scheduler: Any,
    state: dict[str, Any],
    keep: int,
    protect: int | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and keep only the ``keep`` newest complete ones (and the
    checkpoint of step ``protect``, e.g. the last one that passed the artifact guard). ``lora`` and
    ``optimizer_state`` hold whole tensors (see :func:`gathered_optimizer_state`)."""
    root = out / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(out, step)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".step-{step:06d}."))
    try:
        save_file({k: v.contiguous() for k, v in lora.items()}, str(tmp / "lora.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
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
    """Restore optimiser, scheduler and RNG from ``path``; return (LoRA state dict, state.json). Under
    FSDP every process calls it (each keeps its shard of the optimiser state)."""
    lora = load_file(str(path / "lora.safetensors"))
    load_optimizer_state(optimizer, torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return lora, json.loads((path / "state.json").read_text())


def gathered_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with whole tensors: the state of FSDP2-sharded parameters (DTensors)
    is all-gathered, so under FSDP every process must call this, in step."""
    from torch.distributed.tensor import DTensor

    state = optimizer.state_dict()  # its per-parameter dicts are the optimiser's own: build new ones
    state["state"] = {
        index: {name: v.full_tensor().cpu() if isinstance(v, DTensor) else v for name, v in per_param.items()}
        for index, per_param in state["state"].items()
    }
    return state


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a state written by :func:`gathered_optimizer_state`. For a sharded parameter, each state
    tensor of the parameter's shape is cut to this process's shard like the parameter itself (every
    process holds the whole tensor, so no data moves); scalars such as Adam's step stay as they are."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, per_param in saved["state"].items():
        param = params[int(index)]
        if not isinstance(param, DTensor):
            continue
        for name, value in per_param.items():
            if torch.is_tensor(value) and value.shape == param.shape:
                value = value.to(dtype=param.dtype, device=param.device)
                per_param[name] = distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)
    optimizer.load_state_dict(saved)
