"""The image GRPO/GDPO recipe's config (``imgpref train grpo``): one dataclass tree, one docstring per field."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from imgpref.artifacts.defaults import GuardSettings
from imgpref.config import require_min
from imgpref.models.settings import LoraSettings, ModelSettings
from imgpref.rewards import RewardSpec
from imgpref.train.dpo_config import ValidationSettings
from imgpref.train.settings import OptimSettings, RunSettings

#: Image side of the toy model's world (imgpref.toy.world.REFERENCE_SIZE), the default rollout size on it.
TOY_RESOLUTION = 32


@dataclass
class PromptSettings:
    """Where the rollout prompts come from."""

    source: str = "toy"
    """``toy`` = the toy world's prompts (split below), or a text file with one prompt per line."""
    split: Literal["train", "heldout"] = "train"
    """Toy split to train on (held-out prompts are what evaluation and validation use)."""
    limit: int = 0
    """Use only the first N prompts (0 = all)."""

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("prompts.source is empty: use `toy` or a text file with one prompt per line")
        if self.limit < 0:
            raise ValueError(f"prompts.limit must be >= 0 (0 = all), got {self.limit}")


@dataclass
class RolloutSettings:
    """Sampling with log-probs: G samples per prompt, a few steps, a stochastic window (Flow-GRPO)."""

    prompts_per_step: int = 8
    """Prompts per rollout (over all processes); each gets ``group_size`` samples."""
    group_size: int = 8
    """G: samples per prompt, the group whose rewards form the baseline."""
    shared_noise: bool = True
    """Samples of one group start from the same initial noise (they differ by the SDE noise only);
    false = independent initial noise per sample."""
    steps: int = 10
    """Sampling steps of a rollout (fewer than evaluation's; Flow-GRPO trains with 10 and evaluates with 40)."""
    window_start: int = 0
    """First sampling step of the SDE window (0 = the first, noisiest step)."""
    window_size: int = 0
    """Steps in the SDE window; only these are stochastic and trained, the others are deterministic
    Euler (flow) or DDIM η = 0 steps (0 = every step from window_start to the end)."""
    sampler: Literal["auto", "sde", "cps", "ddim"] = "auto"
    """Stochastic step: ``sde`` (Flow-GRPO, arXiv 2505.05470), ``cps`` (coefficient-preserving, arXiv
    2509.05952) for rectified-flow families, ``ddim`` (DDPO's DDIM with η) for ``sd``; auto = sde or ddim."""
    noise_level: float = 0.7
    """a of the SDE (s_t = a·sqrt(σ/(1−σ)); Flow-GRPO uses 0.7) or of CPS (in (0, 1])."""
    eta: float = 1.0
    """η of the DDIM step (``sd`` family): 1 = DDPM posterior variance (DDPO's default)."""
    cfg: float = 1.0
    """Classifier-free guidance during rollout and training (1 = off; > 1 doubles every forward)."""
    resolution: int = 0
    """Square image side of the rollouts (0 = 32 on the toy model; required otherwise)."""

    def __post_init__(self) -> None:
        for name in ("prompts_per_step", "group_size", "steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"rollout.{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError("rollout.group_size must be >= 2: a one-sample group has no baseline (advantage 0)")
        if not 0 <= self.window_start < self.steps or self.window_size < 0:
            raise ValueError(
                f"rollout.window_start must lie in [0, steps={self.steps}) and window_size >= 0, got "
                f"{self.window_start}, {self.window_size}"
            )
        if self.window_start + self.window_size > self.steps:
            raise ValueError(
                f"the SDE window [{self.window_start}, {self.window_start + self.window_size}) ends after the last "
                f"of rollout.steps={self.steps}; shrink rollout.window_size"
            )
        if not (math.isfinite(self.noise_level) and self.noise_level > 0):
            raise ValueError(f"rollout.noise_level must be > 0 (0.7 is Flow-GRPO's), got {self.noise_level}")
        if self.sampler == "cps" and self.noise_level > 1:
            raise ValueError(f"rollout.noise_level must lie in (0, 1] for the cps sampler, got {self.noise_level}")
        if not 0 < self.eta <= 1:
            raise ValueError(f"rollout.eta must lie in (0, 1] (a stochastic DDIM step), got {self.eta}")
        require_min("rollout", self, 1, "cfg", note="1 = no guidance")
        require_min("rollout", self, 0, "resolution", note="0 = 32 on the toy model")

    @property
    def samples(self) -> int:
        """Samples per rollout over all processes."""
        return self.prompts_per_step * self.group_size

    def window(self) -> list[int]:
        """The trained (stochastic) sampling steps."""
        end = self.window_start + self.window_size if self.window_size else self.steps
        return list(range(self.window_start, end))


@dataclass
class GRPOSettings:
    """The objective (DESIGN.md section 4): ``mean_i,t min(r Â, clip(r, 1−ε, 1+ε) Â) − β_KL KL``."""

    advantage: Literal["mean", "grpo", "global_std", "gdpo"] = "grpo"
    """How rewards become advantages (imgpref.advantages): mean, grpo, global_std or gdpo."""
    adv_clip: float = 5.0
    """Advantages are clipped to ±adv_clip (Flow-GRPO: 5)."""
    adv_eps: float = 1e-6
    """Added to every standard deviation of the advantage normalisation."""
    clip_range: float = 1e-4
    """ε of the ratio clip; small because the log-prob is a per-dimension mean (Flow-GRPO: 1e-4)."""
    kl_beta: float = 0.0
    """β_KL of the KL to the reference (the base, adapters disabled); 0 = no reference forward.
    Flow-GRPO uses 0.04 on a KL divided by s_t² instead of the step variance s_t²·(σ − σ'), so this
    recipe's KL is 1/(σ − σ') (about K for K uniform steps) times larger: scale β_KL down accordingly
    (see :func:`imgpref.sampling.sde.gaussian_kl_same_std`)."""
    inner_epochs: int = 1
    """Passes over each rollout batch; the old policy is refreshed by the next rollout."""

    def __post_init__(self) -> None:
        require_min("grpo", self, 0, "adv_clip", "adv_eps", strict=True)
        if not 0 < self.clip_range < 1:
            raise ValueError(f"grpo.clip_range must lie in (0, 1) (Flow-GRPO: 1e-4), got {self.clip_range}")
        require_min("grpo", self, 0, "kl_beta", note="0 = no KL term")
        require_min("grpo", self, 1, "inner_epochs")


@dataclass
class GRPOConfig:
    """``imgpref train grpo``: online RL (GRPO/GDPO) of a LoRA on the model's denoiser."""

    model: ModelSettings = field(default_factory=ModelSettings)
    """The base model (frozen; the reference is this model with the LoRA disabled)."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """The trained adapter (dropout must stay 0: the old and new policy must be the same function)."""
    prompts: PromptSettings = field(default_factory=PromptSettings)
    """Rollout prompts."""
    rollout: RolloutSettings = field(default_factory=RolloutSettings)
    """Sampling with log-probs."""
    rewards: list[RewardSpec] = field(default_factory=lambda: [RewardSpec("toy_all_correct")])
    """Rewards: a list of {name, weight, params, label} (imgpref.rewards.REWARDS)."""
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    """Advantages and the clipped objective."""
    optim: OptimSettings = field(default_factory=lambda: OptimSettings(lr=3e-4))
    """The optimiser (Flow-GRPO: lr 3e-4 on LoRA)."""
    train: RunSettings = field(default_factory=lambda: RunSettings(max_steps=100, batch_size=8, checkpoint_every=25))
    """Rollout steps (``max_steps``), micro-batch of samples (``batch_size``), micro-batches per optimiser
    step (``grad_accum``), precision, checkpoints, logging."""
    validation: ValidationSettings = field(default_factory=ValidationSettings)
    """Validation images and (toy) judge rates during training."""
    guard: GuardSettings = field(default_factory=lambda: GuardSettings(every=0))
    """Artifact guard on the validation images (runs at validation steps when ``guard.every`` > 0)."""

    def __post_init__(self) -> None:
        if self.lora.dropout:
            raise ValueError(
                "lora.dropout must be 0 for GRPO: with dropout the policy that scores a sample differs from the one "
                "that drew it, and the ratio on the first update is no longer 1"
            )
        per_update = self.train.batch_size * self.train.grad_accum
        if self.rollout.samples % per_update:
            raise ValueError(
                f"rollout.prompts_per_step × rollout.group_size = {self.rollout.samples} samples must divide into "
                f"optimiser steps of train.batch_size × train.grad_accum = {per_update}; change one of them"
            )
        if not self.rewards:
            raise ValueError("rewards is empty: give at least one {name, weight, params}")
        if self.guard.every and not self.validation.every:
            raise ValueError("guard.every > 0 needs validation images: set validation.every too")
        if self.guard.every and self.guard.every % self.validation.every:
            raise ValueError(
                f"guard.every ({self.guard.every}) must be a multiple of validation.every ({self.validation.every})"
            )
        if self.rollout.resolution == 0 and not self.model.is_toy:
            raise ValueError("rollout.resolution is required for models other than the toy one (e.g. 512)")

    @property
    def resolution(self) -> int:
        return self.rollout.resolution or TOY_RESOLUTION

    @property
    def updates_per_rollout(self) -> int:
        """Optimiser steps per rollout step (one process; multiply rollout.samples by 1/processes)."""
        return self.grpo.inner_epochs * self.rollout.samples // (self.train.batch_size * self.train.grad_accum)
