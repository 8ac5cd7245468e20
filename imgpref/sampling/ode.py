"""Deterministic sampler steps: the steps of a rollout outside its SDE window (no noise, no log-prob).

- rectified flow: Euler ``x' = x + (σ' − σ) v̂`` on ``x_σ = (1 − σ) x₀ + σ ε`` (Liu et al. 2022,
  arXiv 2209.03003; the step of diffusers' ``FlowMatchEulerDiscreteScheduler``);
- DDPM families: DDIM with η = 0 (Song et al. 2020, arXiv 2010.02502, eq. 12):
  ``x' = sqrt(ᾱ_prev) x̂₀ + sqrt(1 − ᾱ_prev) ε̂``.

Float32 like the stochastic steps of :mod:`imgpref.sampling.sde`; levels are Python floats, 0-dim or
per-sample tensors [B].
"""

from __future__ import annotations

import torch

from imgpref.sampling.sde import DdimPrediction, ddim_predictions, per_sample_level
from imgpref.schedules import expand_like


def euler_step(
    x: torch.Tensor, velocity: torch.Tensor, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor
) -> torch.Tensor:
    """Rectified-flow Euler step ``x + (σ' − σ) v̂`` from σ to σ' (σ = 1 is pure noise)."""
    x = x.float()
    step = per_sample_level(sigma_next, x, "sigma_next") - per_sample_level(sigma, x, "sigma")
    return x + expand_like(step, x) * velocity.float()


def ddim_deterministic_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    alpha_prod_t: float | torch.Tensor,
    alpha_prod_t_prev: float | torch.Tensor,
    *,
    prediction: DdimPrediction = "epsilon",
) -> torch.Tensor:
    """DDIM step with η = 0 from ᾱ_t to ᾱ_prev: ``sqrt(ᾱ_prev) x̂₀ + sqrt(1 − ᾱ_prev) ε̂``."""
    x = x.float()
    a_t, a_prev = (
        per_sample_level(alpha_prod_t, x, "alpha_prod_t"),
        per_sample_level(alpha_prod_t_prev, x, "alpha_prod_t_prev"),
    )
    x0_hat, eps_hat = ddim_predictions(x, model_output.float(), a_t, prediction)
    return expand_like(a_prev.sqrt(), x) * x0_hat + expand_like((1 - a_prev).sqrt(), x) * eps_hat
