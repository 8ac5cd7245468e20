"""The Diffusion-DPO recipe's config: one dataclass tree, one docstring per field (``imgpref train dpo``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from imgpref.artifacts.defaults import GuardSettings
from imgpref.config import require_min
from imgpref.models.settings import LoraSettings, ModelSettings
from imgpref.train.settings import OptimSettings, RunSettings


@dataclass
class PairDataSettings:
    """The preference pairs: a folder with ``metadata.jsonl`` (``imgpref pairs generate`` writes one)."""

    path: str = ""
    """Folder holding ``metadata.jsonl`` and the images it names (relative paths inside the folder)."""
    resolution: int = 0
    """Train at this square side: images are resized (shorter side) and centre-cropped. 0 = use the images'
    own size, which must then be the same for every image."""
    cache_dir: str = ""
    """Where encoded latents and prompt embeddings are cached (keyed by model and data); empty =
    ``$IMGPREF_CACHE/latents``."""
    encode_batch_size: int = 32
    """Images per VAE / text-encoder call while filling the cache."""
    limit: int = 0
    """Use only the first N pairs (0 = all); handy for smoke runs."""

    def __post_init__(self) -> None:
        require_min("data", self, 0, "resolution", "limit")
        require_min("data", self, 1, "encode_batch_size")


@dataclass
class DPOSettings:
    """Diffusion-DPO (Wallace et al. 2023, arXiv 2311.12908); DESIGN.md section 4."""

    beta: float = 2500.0
    """β of the loss; the effective factor depends on ``convention`` (logged as ``beta_eff``)."""
    convention: Literal["official", "diffusers", "sum"] = "diffusers"
    """``official``: β_eff = β/2 (SalesforceAIResearch/DiffusionDPO); ``diffusers``: β_eff = β (diffusers
    research example); ``sum``: β_eff = β × latent elements per sample (code that sums errors)."""
    loss_type: Literal["sigmoid", "hinge", "ipo"] = "sigmoid"
    """``sigmoid`` (DPO), ``hinge`` (SLiC) or ``ipo``."""
    loser_weight: float = 1.0
    """Scale of the gradient through the loser's error (< 1 damps the both-down pathology)."""
    sft_weight: float = 0.0
    """Weight of a plain denoising loss on winners added to the DPO loss."""
    timesteps: Literal["uniform", "logit_normal"] = "uniform"
    """Training-time distribution of t ∈ (0, 1)."""
    logit_mean: float = 0.0
    """μ of logit-normal t (> 0 shifts toward noise)."""
    logit_std: float = 1.0
    """s of logit-normal t."""
    timestep_buckets: int = 4
    """Implicit accuracy is also logged per bucket of t: [0, 1/n), ..., [(n-1)/n, 1]."""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"dpo.beta must be > 0 (typical: 10 to 5000), got {self.beta}")
        require_min("dpo", self, 0, "loser_weight", "sft_weight")
        require_min("dpo", self, 0, "logit_std", strict=True)
        require_min("dpo", self, 1, "timestep_buckets")


@dataclass
class ValidationSettings:
    """Images made during training with fixed prompts and seeds (also the artifact guard's input)."""

    every: int = 0
    """Generate validation images every this many steps, and at step 0 and the end (0 = never)."""
    prompts: list[str] = field(default_factory=list)
    """Prompts to sample; empty = held-out toy-world prompts when the model is the toy model."""
    num_prompts: int = 64
    """With toy prompts: how many (prompt, seed) samples; judged exactly and logged as ``val/*``."""
    seeds_per_prompt: int = 1
    """Noise seeds per listed prompt (≥ 2 lets the guard measure diversity)."""
    size: int = 0
    """Image side (0 = the training resolution)."""
    steps: int = 16
    """Sampling steps."""
    cfg: float = 3.0
    """Classifier-free guidance scale (1 = off)."""
    seed: int = 0
    """Seed of the validation noise (same in every run, so runs compare image by image)."""

    def __post_init__(self) -> None:
        require_min("validation", self, 0, "every", "size")
        require_min("validation", self, 1, "num_prompts", "seeds_per_prompt", "steps")


@dataclass
class DPOConfig:
    """``imgpref train dpo``: Diffusion-DPO on a LoRA of the model's denoiser."""

    model: ModelSettings = field(default_factory=ModelSettings)
    """The base model (frozen; the reference is this model with the LoRA disabled)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """The trained adapter."""
    data: PairDataSettings = field(default_factory=PairDataSettings)
    """The preference pairs."""
    dpo: DPOSettings = field(default_factory=DPOSettings)
    """The loss."""
    optim: OptimSettings = field(default_factory=OptimSettings)
    """The optimiser."""
    train: RunSettings = field(default_factory=RunSettings)
    """Steps, batch, precision, checkpoints, logging."""
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    """Validation images and (toy) judge rates during training."""
    guard: GuardSettings = field(default_factory=lambda: GuardSettings(every=0))
    """Artifact guard on the validation images (runs at validation steps when ``guard.every`` > 0)."""

    def __post_init__(self) -> None:
        if not self.data.path:
            raise ValueError("data.path is required: the pair folder (e.g. --set data.path=runs/pairs)")
        if self.guard.every and not self.validation.every:
            raise ValueError("guard.every > 0 needs validation images: set validation.every too")
        if self.guard.every and self.validation.every and self.guard.every % self.validation.every:
            raise ValueError(
                f"guard.every ({self.guard.every}) must be a multiple of validation.every ({self.validation.every})"
            )
