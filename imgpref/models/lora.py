"""LoRA on a family's denoiser: attach with peft, reference by disabling, save and load in diffusers form.

Preference tuning of released (distilled, RLHF'd) models trains a LoRA and uses the same network with
its adapters disabled as the reference: one copy of the weights, never two (DESIGN.md section 3).
Saved with the family pipeline's ``save_lora_weights`` *including the adapter metadata*: without it a
LoRA with alpha ≠ rank reloads with the wrong scale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

from imgpref.models.base import FamilyAdapter
from imgpref.models.settings import LoraSettings

#: File name of a LoRA saved with a diffusers pipeline's ``save_lora_weights`` (its default).
LORA_WEIGHTS_FILE = "pytorch_lora_weights.safetensors"

#: peft's name for the adapter imgpref trains.
ADAPTER_NAME = "default"


def attach_lora(model: FamilyAdapter, settings: LoraSettings) -> list[torch.nn.Parameter]:
    """Freeze the denoiser, add a LoRA adapter, and return the trainable LoRA parameters."""
    denoiser = model.denoiser
    denoiser.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules or model.default_lora_targets),
        init_lora_weights=True if settings.init == "default" else "gaussian",
    )
    denoiser.add_adapter(config, adapter_name=ADAPTER_NAME)
    params = [p for name, p in denoiser.named_parameters() if "lora_" in name]
    if not params:
        raise ValueError(
            f"no module of the {model.name} denoiser matched lora.target_modules="
            f"{config.target_modules}; the family default is {list(model.default_lora_targets)}"
        )
    for p in params:
        p.requires_grad_(True)
    return params


def lora_parameters(model: FamilyAdapter) -> list[torch.nn.Parameter]:
    """The LoRA parameters of an adapted denoiser."""
    return [p for name, p in model.denoiser.named_parameters() if "lora_" in name]


@contextmanager
def reference_mode(model: FamilyAdapter) -> Iterator[None]:
    """Run the denoiser as the reference model: adapters disabled, no gradients."""
    denoiser = model.denoiser
    denoiser.disable_adapters()
    try:
        with torch.no_grad():
            yield
    finally:
        denoiser.enable_adapters()


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a sharded DTensor (FSDP2) is all-gathered, so every process must call this for
    every DTensor in the same order; a plain tensor is returned as is."""
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def is_sharded(model: FamilyAdapter) -> bool:
    """Whether the denoiser's LoRA parameters are FSDP2 shards (DTensors) rather than whole tensors."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in lora_parameters(model))


def lora_state_dict(model: FamilyAdapter) -> dict[str, torch.Tensor]:
    """The adapter's weights (peft naming, adapter name stripped), whole, detached on the CPU.

    Under FSDP the parameters are shards and this all-gathers them: every process must call it (the
    main process then writes), or the collective never completes."""
    state = get_peft_model_state_dict(model.denoiser, adapter_name=ADAPTER_NAME)
    return {k: full_tensor(v).detach().cpu().contiguous() for k, v in state.items()}


def set_lora_state_dict(model: FamilyAdapter, lora: dict[str, torch.Tensor]) -> None:
    """Load whole LoRA weights (as :func:`lora_state_dict` returns them) into the denoiser.

    Plain parameters go through peft's ``set_peft_model_state_dict``. FSDP2 shards take this process's
    slice of each whole tensor (``distribute_tensor`` with every process holding the same whole tensor,
    so no data moves between processes); a key that matches no LoRA parameter is an error."""
    if not is_sharded(model):
        set_peft_model_state_dict(model.denoiser, lora, adapter_name=ADAPTER_NAME)
        return
    from torch.distributed.tensor import DTensor, distribute_tensor

    # peft strips ".<adapter name>" from parameter names in its state dicts; map them back the same way.
    params = {
        name.replace(f".{ADAPTER_NAME}", ""): p for name, p in model.denoiser.named_parameters() if "lora_" in name
    }
    unknown, missing = sorted(set(lora) - set(params)), sorted(set(params) - set(lora))
    if unknown or missing:
        raise ValueError(
            f"LoRA state does not match the model's adapter: unknown keys {unknown[:3]}, missing keys {missing[:3]}"
        )
    with torch.no_grad():
        for key, param in params.items():
            whole = lora[key].to(dtype=param.dtype, device=param.device)
            if isinstance(param, DTensor):
                whole = distribute_tensor(whole, param.device_mesh, param.placements, src_data_rank=None)
            param.copy_(whole)


def save_lora(model: FamilyAdapter, directory: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Save the LoRA in diffusers format (``pytorch_lora_weights.safetensors`` + adapter metadata).

    ``state``: the weights from :func:`lora_state_dict`, when they were gathered beforehand on every
    process (FSDP) so that only the main process writes."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    metadata = model.denoiser.peft_config[ADAPTER_NAME].to_dict()
    state = lora_state_dict(model) if state is None else state
    model.pipeline_class.save_lora_weights(
        directory, **model.save_lora_kwargs(state, metadata), safe_serialization=True
    )
    return directory


def load_lora(model: FamilyAdapter, directory: str | Path, adapter_name: str = ADAPTER_NAME) -> None:
    """Load a saved LoRA into the model's pipeline with diffusers' own ``load_lora_weights``."""
    from diffusers.utils import logging as diffusers_logging

    folder = Path(directory)
    if not (folder / LORA_WEIGHTS_FILE).is_file():
        where = "does not exist" if not folder.exists() else f"holds no {LORA_WEIGHTS_FILE}"
        raise FileNotFoundError(
            f"LoRA folder {str(folder)!r} {where}; pass the lora/ folder of a run (RUN/lora, written by "
            "imgpref train) or any folder saved with the pipeline's save_lora_weights"
        )

    # imgpref LoRAs adapt the denoiser only; diffusers warns once per text encoder that it found no keys.
    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        model.pipe.load_lora_weights(str(directory), adapter_name=adapter_name)
    finally:
        diffusers_logging.set_verbosity(level)
