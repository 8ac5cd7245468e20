"""Forward noising processes and training targets, with one time convention for every family.

Every algorithm in imgpref draws ``t`` in [0, 1] (0 = clean, 1 = pure noise); each family adapter maps
it to the timestep its network expects. Pure tensor math, shape-agnostic: ``t`` has shape [B]
and broadcasts over any number of trailing latent dimensions.

- Rectified flow (FLUX, Qwen-Image, SD3; Liu et al. 2022, arXiv 2209.03003; Esser et al. 2024,
  arXiv 2403.03206): ``x_t = (1 − t) x₀ + t ε``, velocity target ``u = ε − x₀``.
- DDPM ε- and v-prediction (Ho et al. 2020, arXiv 2006.11239; Salimans & Ho 2022, arXiv 2202.00512):
  ``x_t = √ᾱ x₀ + √(1 − ᾱ) ε``; targets ``ε`` or ``v = √ᾱ ε − √(1 − ᾱ) x₀``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

Prediction = Literal["epsilon", "v_prediction", "flow"]


def expand_like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample tensor [B] so it broadcasts against ``x`` [B, ...] of any rank."""
    return t.reshape(t.shape + (1,) * (x.ndim - t.ndim)).to(x.dtype)


@dataclass(frozen=True)
class FlowSchedule:
    """Rectified flow: straight paths from data (t = 0) to noise (t = 1)."""

    prediction: Prediction = "flow"

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = (1 − t) x₀ + t ε``."""
        tt = expand_like(t, x0)
        return (1 - tt) * x0 + tt * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity ``u = ε − x₀`` (independent of ``t``)."""
        return noise - x0


@dataclass(frozen=True)
class DDPMSchedule:
    """Discrete DDPM schedule (SD 1.5 / SDXL) indexed by ``t`` ∈ [0, 1] → step ``min(⌊t·T⌋, T−1)``."""

    alphas_cumprod: torch.Tensor
    prediction: Prediction = "epsilon"

    def __post_init__(self) -> None:
        if self.prediction not in ("epsilon", "v_prediction"):
            raise ValueError(f"DDPMSchedule.prediction must be 'epsilon' or 'v_prediction', got {self.prediction!r}")

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """Integer step index ``min(⌊t·T⌋, T−1)`` in [0, T−1].

        Uniform ``t`` gives every step the same probability, as the official Diffusion-DPO code's
        ``randint(0, T)`` does (``round(t·(T−1))`` would give steps 0 and T−1 half weight), and
        ``t = k/(T−1)`` maps back to exactly ``k``, which the DDIM rollout relies on."""
        total = self.num_train_timesteps
        return torch.floor(t.float() * total).long().clamp(0, total - 1)

    def _alpha_sigma(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        abar = self.alphas_cumprod.to(x.device)[self.model_timestep(t).to(x.device)]
        return expand_like(abar.sqrt(), x), expand_like((1 - abar).sqrt(), x)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x_t = √ᾱ x₀ + √(1 − ᾱ) ε``."""
        alpha, sigma = self._alpha_sigma(x0, t)
        return alpha * x0 + sigma * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``ε`` for ε-prediction, ``v = √ᾱ ε − √(1 − ᾱ) x₀`` for v-prediction."""
        if self.prediction == "epsilon":
            return noise
        alpha, sigma = self._alpha_sigma(x0, t)
        return alpha * noise - sigma * x0


Schedule = FlowSchedule | DDPMSchedule
