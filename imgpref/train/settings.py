"""Config sections every training recipe shares: optimiser, run length and precision, checkpoints, logging."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from imgpref.config import require_min

#: Learning-rate schedules (diffusers.optimization.get_scheduler names).
LR_SCHEDULES = ("constant", "constant_with_warmup", "linear", "cosine")


@dataclass
class OptimSettings:
    """AdamW on the LoRA parameters (Loshchilov & Hutter 2019, arXiv 1711.05101)."""

    lr: float = 1e-4
    """Peak learning rate."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam moment decay rates (β₁, β₂)."""
    weight_decay: float = 0.0
    """Decoupled weight decay (LoRA is usually trained without)."""
    eps: float = 1e-8
    """Adam denominator epsilon."""
    schedule: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant_with_warmup"
    """Learning-rate schedule after warm-up (diffusers ``get_scheduler`` names)."""
    warmup_steps: int = 0
    """Linear warm-up from 0 to ``lr`` over this many optimiser steps."""
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this value (0 = no clipping; the norm is logged either way)."""

    def __post_init__(self) -> None:
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"optim.betas must be two numbers in [0, 1), got {self.betas!r}")
        require_min("optim", self, 0, "warmup_steps", "max_grad_norm", "weight_decay")


@dataclass
class RunSettings:
    """How long to train, on what batch, in which precision, and how often to save and log."""

    max_steps: int = 1000
    """Optimiser steps to train (a resumed run continues up to this number)."""
    batch_size: int = 8
    """Pairs (DPO) or samples (GRPO) per process per micro-batch."""
    grad_accum: int = 1
    """Micro-batches accumulated into one optimiser step."""
    seed: int = 0
    """Seed of data order, timesteps and noise: step k of a run always sees the same draws."""
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    """accelerate mixed precision for the trained forward (bf16 on recent GPUs; ``no`` on CPU)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30 % slower)."""
    checkpoint_every: int = 250
    """Save a resumable checkpoint every this many steps (0 = only at the end and on SIGTERM)."""
    keep_checkpoints: int = 2
    """Keep this many most recent checkpoints (older ones are deleted after a newer one is complete)."""
    log_every: int = 1
    """Write metrics every this many optimiser steps (averaged over the steps in between)."""
    max_nonfinite_steps: int = 5
    """Abort after this many optimiser steps in a row whose loss is NaN or infinite (each is skipped)."""

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "log_every", "keep_checkpoints", "max_nonfinite_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.checkpoint_every < 0:
            raise ValueError(f"train.checkpoint_every must be >= 0 (0 = only at the end), got {self.checkpoint_every}")
