"""Validation during training: fixed prompts and seeds, a grid per check, judge rates on the toy world,
and the artifact guard against the base model's images (same prompts and seeds, adapters off).

Every process of a run calls the validator. With several processes (DDP or FSDP, where the sharded
denoiser needs every process in each forward) each makes an equal, contiguous share of the samples
(padded with the last one) and the main process gathers them in order. Each sample has its own noise
seed, so the images do not depend on how they are split."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torchvision.utils import save_image

from imgpref.artifacts.defaults import GuardSettings
from imgpref.artifacts.guard import ArtifactGuard, GuardDecision
from imgpref.models.base import FamilyAdapter
from imgpref.models.lora import reference_mode
from imgpref.toy.evaluate import EVAL_KEYS, eval_set, generate_for, score
from imgpref.train.dpo_config import ValidationSettings

VALIDATION = "validation"
#: Images shown per validation grid.
GRID_IMAGES = 64
#: Noise seeds of listed validation prompts start here (apart from training and evaluation seeds).
SEED_OFFSET = 2_000_000


class Validator:
    """Makes the validation images of a run and judges them. Every process calls :meth:`run` and
    :meth:`base_images`; only the main process gets results back."""

    def __init__(
        self,
        model: FamilyAdapter,
        settings: ValidationSettings,
        guard: GuardSettings,
        *,
        is_toy: bool,
        size: tuple[int, int],
        out: Path,
        accelerator: Any = None,
    ) -> None:
        if settings.every and model.takes_reference_image:
            raise ValueError(
                f"validation images for the reference-conditioned family {model.name!r} are not supported yet; "
                "set validation.every=0 (and guard.every=0)"
            )
        if settings.every and not settings.prompts and not is_toy:
            raise ValueError("validation.prompts is empty: list prompts to sample (only the toy model has defaults)")
        self.model, self.settings, self.out = model, settings, out / VALIDATION
        self.size = settings.size or size[0]
        if settings.prompts:
            self.prompts = [p for p in settings.prompts for _ in range(settings.seeds_per_prompt)]
            self.seeds = [SEED_OFFSET + settings.seed * len(self.prompts) + i for i in range(len(self.prompts))]
            self.judged = False
        else:
            self.prompts, self.seeds = eval_set(settings.num_prompts, settings.seed)
            self.judged = True
        self.guard = ArtifactGuard(guard)
        self._base: torch.Tensor | None = None
        self.accelerator = accelerator
        self.is_main = accelerator is None or accelerator.is_main_process
        self.shared = accelerator is not None and accelerator.num_processes > 1

    def due(self, step: int, last_step: int) -> bool:
        every = self.settings.every
        return bool(every) and (step % every == 0 or step == last_step)

    def _generate(self) -> torch.Tensor:
        prompts, seeds = self.prompts, self.seeds
        if self.shared:  # this process's contiguous share, padded so every process runs the same forwards
            n, world, rank = len(prompts), self.accelerator.num_processes, self.accelerator.process_index
            share = math.ceil(n / world)
            index = [min(rank * share + i, n - 1) for i in range(share)]
            prompts, seeds = [prompts[i] for i in index], [seeds[i] for i in index]
        images = generate_for(
            self.model,
            prompts,
            seeds,
            size=self.size,
            cfg_scale=self.settings.cfg,
            num_steps=self.settings.steps,
            progress=False,
        )
        if self.shared:  # gathered in process order: the first n are the samples in order
            images = self.accelerator.gather(images.to(self.accelerator.device)).cpu()[: len(self.prompts)]
        return images

    def base_images(self) -> torch.Tensor:
        """The base model's validation images (adapters off), made once."""
        if self._base is None:
            with reference_mode(self.model):
                self._base = self._generate()
            if self.is_main:
                self.out.mkdir(parents=True, exist_ok=True)
                save_image(self._base[:GRID_IMAGES], self.out / "base.png", nrow=8, padding=1)
        return self._base

    @torch.no_grad()
    def run(self, step: int) -> tuple[dict[str, float], GuardDecision | None]:
        """Generate, save ``validation/step-XXXXXX.png``, judge (toy) and run the guard when it is due.
        Collective: every process calls it; the others get ``({}, None)``."""
        was_training = self.model.denoiser.training
        self.model.denoiser.eval()
        try:
            images = self._generate()
        finally:
            self.model.denoiser.train(was_training)
        guard_due = step > 0 and self.guard.due(step)  # at step 0 the policy is the base: nothing to compare
        base = self.base_images() if guard_due else None
        if not self.is_main:
            return {}, None
        self.out.mkdir(parents=True, exist_ok=True)
        save_image(images[:GRID_IMAGES], self.out / f"step-{step:06d}.png", nrow=8, padding=1)
        metrics: dict[str, float] = {}
        if self.judged:
            rates = score(images, self.prompts)
            metrics.update({f"val/{k}": float(rates[k]) for k in EVAL_KEYS if k != "n"})
        decision = None
        if guard_due:
            decision = self.guard.check(step, images, base, groups=self.prompts)
            metrics.update(decision.metrics)
        return metrics, decision
