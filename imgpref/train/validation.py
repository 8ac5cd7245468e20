"""Validation during training: fixed prompts and seeds, a grid per check, judge rates on the toy world,
and the artifact guard against the base model's images (same prompts and seeds, adapters off)."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.utils import save_image

from imgpref.artifacts.guard import ArtifactGuard, GuardDecision, GuardSettings
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
    """Makes the validation images of a run and judges them (only on the main process)."""

    def __init__(
        self,
        model: FamilyAdapter,
        settings: ValidationSettings,
        guard: GuardSettings,
        *,
        is_toy: bool,
        size: tuple[int, int],
        out: Path,
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

    def due(self, step: int, last_step: int) -> bool:
        every = self.settings.every
        return bool(every) and (step % every == 0 or step == last_step)

    def _generate(self) -> torch.Tensor:
        return generate_for(
            self.model,
            self.prompts,
            self.seeds,
            size=self.size,
            cfg_scale=self.settings.cfg,
            num_steps=self.settings.steps,
            progress=False,
        )

    def base_images(self) -> torch.Tensor:
        """The base model's validation images (adapters off), made once."""
        if self._base is None:
            with reference_mode(self.model):
                self._base = self._generate()
            self.out.mkdir(parents=True, exist_ok=True)
            save_image(self._base[:GRID_IMAGES], self.out / "base.png", nrow=8, padding=1)
        return self._base

    @torch.no_grad()
    def run(self, step: int) -> tuple[dict[str, float], GuardDecision | None]:
        """Generate, save ``validation/step-XXXXXX.png``, judge (toy) and run the guard when it is due."""
        was_training = self.model.denoiser.training
        self.model.denoiser.eval()
        try:
            images = self._generate()
        finally:
            self.model.denoiser.train(was_training)
        self.out.mkdir(parents=True, exist_ok=True)
        save_image(images[:GRID_IMAGES], self.out / f"step-{step:06d}.png", nrow=8, padding=1)
        metrics: dict[str, float] = {}
        if self.judged:
            rates = score(images, self.prompts)
            metrics.update({f"val/{k}": float(rates[k]) for k in EVAL_KEYS if k != "n"})
        decision = None
        if step > 0 and self.guard.due(step):  # at step 0 the policy is the base: nothing to compare
            decision = self.guard.check(step, images, self.base_images(), groups=self.prompts)
            metrics.update(decision.metrics)
        return metrics, decision
