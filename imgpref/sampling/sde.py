"""Stochastic sampler steps with Gaussian log-probs, for policy-gradient training of diffusion models.

Each step maps the current latent ``x`` and the network output to a Gaussian ``N(μ, s² I)`` over the next
latent, draws from it (or scores a given ``prev_sample``) and returns ``(x_next, mean, log_prob, std)``:

- ``x_next``, ``mean``: float32, the shape of ``x`` (any rank; dim 0 is the batch);
- ``log_prob`` [B]: the per-element Gaussian log-density averaged over the non-batch dimensions
  (``mean over dims of −(x'−μ)²/(2s²) − log s − ½ log 2π``), as Flow-GRPO and DDPO do: a per-dimension mean,
  which is why GRPO's clip range is small (1e-4…1e-3);
- ``std`` [B]: the per-sample standard deviation ``s`` of that Gaussian.

Everything is computed in float32 whatever the input dtype (bf16 can overflow in the mean, as Flow-GRPO
notes). Keep the float32 ``x_next`` as the trajectory: scoring it again with the same weights and inputs
gives bit-identical log-probs (the policy ratio is exactly 1 on the first update after sampling).

Noise levels ``sigma``, ``sigma_next`` (rectified flow, ``x_σ = (1 − σ) x₀ + σ ε``, 1 = pure noise) and
``alpha_prod_t`` (DDPM ᾱ) are Python floats, 0-dim tensors or per-sample tensors [B].
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from imgpref.schedules import expand_like

CpsLogProbForm = Literal["gaussian", "flow_cps"]
DdimPrediction = Literal["epsilon", "v_prediction"]

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def per_sample_level(value: float | torch.Tensor, x: torch.Tensor, name: str) -> torch.Tensor:
    """A noise level as a float32 tensor [B] on ``x``'s device."""
    batch = x.shape[0]
    t = torch.as_tensor(value, dtype=torch.float32, device=x.device)
    if t.ndim == 0 or t.shape == (1,):
        return t.reshape(()).expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must be a number or a per-sample tensor [{batch}], got shape {tuple(t.shape)}")
    return t


def _flat_mean(values: torch.Tensor) -> torch.Tensor:
    return values.reshape(values.shape[0], -1).mean(dim=1)


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """``mean over non-batch dims of [−(x − μ)²/(2s²) − log s − ½ log 2π]``, float32 [B].

    ``std`` is a number or per-sample [B] and must be > 0 (a deterministic step has no density: keep it
    out of the trained steps). ``sample`` is detached, as in DDPO/Flow-GRPO: the gradient flows
    through ``mean`` only.
    """
    if sample.shape != mean.shape:
        raise ValueError(f"gaussian_log_prob: sample {tuple(sample.shape)} and mean {tuple(mean.shape)} differ")
    mean = mean.float()
    s = per_sample_level(std, mean, "std")
    if bool((s <= 0).any()):
        raise ValueError(
            "gaussian_log_prob: std must be > 0; this step is deterministic (noise level 0, eta 0, or a CPS step "
            "to sigma_next = 0) and has no log-prob; leave it outside the SDE window"
        )
    s = expand_like(s, mean)
    elementwise = -(sample.detach().float() - mean).square() / (2 * s.square()) - torch.log(s) - HALF_LOG_2PI
    return _flat_mean(elementwise)


def gaussian_kl_same_std(mean_p: torch.Tensor, mean_q: torch.Tensor, std: float | torch.Tensor) -> torch.Tensor:
    """KL(N(μ_p, s²I) ‖ N(μ_q, s²I)) per element, averaged over non-batch dims: ``mean ‖μ_p − μ_q‖²/(2s²)``, [B].

    The exact KL sums over dimensions; this is that sum divided by the number of elements, on the same
    per-dimension scale as :func:`gaussian_log_prob`. Pass the step's ``std`` (what the step functions
    return). Flow-GRPO's training code divides by the SDE's ``s_t`` (without the ``sqrt(σ − σ')`` factor),
    i.e. its KL term is this one times ``(σ − σ')``; pass ``std = s_t`` to reproduce it.
    """
    if mean_p.shape != mean_q.shape:
        raise ValueError(f"gaussian_kl_same_std: means differ in shape, {tuple(mean_p.shape)} vs {tuple(mean_q.shape)}")
    mean_p, mean_q = mean_p.float(), mean_q.float()
    s = per_sample_level(std, mean_p, "std")
    if bool((s <= 0).any()):
        raise ValueError("gaussian_kl_same_std: std must be > 0")
    return _flat_mean((mean_p - mean_q).square() / (2 * expand_like(s, mean_p).square()))


def _draw(
    mean: torch.Tensor,
    std: torch.Tensor,
    noise: torch.Tensor | None,
    generator: torch.Generator | None,
    prev_sample: torch.Tensor | None,
    caller: str,
) -> torch.Tensor:
    """``prev_sample`` (scored, not drawn) or ``mean + std · z`` with z = ``noise`` or fresh N(0, I)."""
    if prev_sample is not None:
        if noise is not None or generator is not None:
            raise ValueError(f"{caller}: give prev_sample (to score it) or noise/generator (to draw), not both")
        if prev_sample.shape != mean.shape:
            raise ValueError(f"{caller}: prev_sample {tuple(prev_sample.shape)} differs from x {tuple(mean.shape)}")
        return prev_sample.float()
    if noise is not None:
        if generator is not None:
            raise ValueError(f"{caller}: give noise or generator, not both")
        if noise.shape != mean.shape:
            raise ValueError(f"{caller}: noise {tuple(noise.shape)} differs from x {tuple(mean.shape)}")
        z = noise.to(device=mean.device, dtype=torch.float32)
    else:
        # Draw on the generator's device (e.g. a CPU generator for device-independent noise), then move.
        where = generator.device if generator is not None else mean.device
        z = torch.randn(mean.shape, generator=generator, device=where, dtype=torch.float32).to(mean.device)
    return mean + expand_like(std, mean) * z


def _check_flow_levels(sigma: torch.Tensor, sigma_next: torch.Tensor, caller: str) -> None:
    if bool(((sigma <= 0) | (sigma > 1)).any()):
        raise ValueError(f"{caller}: sigma must lie in (0, 1], got {sigma.tolist()}")
    if bool(((sigma_next < 0) | (sigma_next >= sigma)).any()):
        raise ValueError(
            f"{caller}: sigma_next must lie in [0, sigma) (sampling runs from noise toward data), got "
            f"sigma={sigma.tolist()}, sigma_next={sigma_next.tolist()}"
        )


def sde_step(
    x: torch.Tensor,
    v: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_next: float | torch.Tensor,
    *,
    noise_level: float = 0.7,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    prev_sample: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flow-GRPO SDE step (Liu et al. 2025, arXiv 2505.05470) for a velocity ``v`` ≈ ε − x₀.

    With Δ = σ' − σ < 0 and a = ``noise_level``::

        s_t = a · sqrt(σ / (1 − σ))                     (σ = 1: the denominator uses σ' instead)
        μ   = x · (1 + s_t²/(2σ) · Δ) + v · (1 + s_t² (1 − σ)/(2σ)) · Δ
        s   = s_t · sqrt(−Δ),   x' = μ + s · z,   z ~ N(0, I)

    At σ = 1 (pure noise) ``1 − σ`` would divide by zero; like Flow-GRPO (which uses the schedule's
    second value, the next level of the first step), the denominator of s_t takes σ' there; the ``(1 − σ)``
    in μ stays 0. Requires 0 < σ ≤ 1 and 0 ≤ σ' < σ.

    ``noise`` fixes z; ``generator`` seeds a fresh z; ``prev_sample`` scores a given x' instead of drawing
    (for the policy-ratio recomputation). Returns ``(x_next, mean, log_prob, std)``, see the module docstring.
    """
    if not (math.isfinite(noise_level) and noise_level > 0):
        raise ValueError(f"sde_step: noise_level must be finite and > 0, got {noise_level!r}")
    if v.shape != x.shape:
        raise ValueError(f"sde_step: v {tuple(v.shape)} differs from x {tuple(x.shape)}")
    x, v = x.float(), v.float()
    sig, sig_next = per_sample_level(sigma, x, "sigma"), per_sample_level(sigma_next, x, "sigma_next")
    _check_flow_levels(sig, sig_next, "sde_step")

    dt = sig_next - sig
    denominator = 1 - torch.where(sig == 1, sig_next, sig)
    s_t = noise_level * torch.sqrt(sig / denominator)
    std = s_t * torch.sqrt(-dt)
    s_t2, s_, d_, one_minus = (expand_like(a, x) for a in (s_t.square(), sig, dt, 1 - sig))
    mean = x * (1 + s_t2 / (2 * s_) * d_) + v * (1 + s_t2 * one_minus / (2 * s_)) * d_
    x_next = _draw(mean, std, noise, generator, prev_sample, "sde_step")
    return x_next, mean, gaussian_log_prob(x_next, mean, std), std


def cps_step(
    x: torch.Tensor,
    v: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_next: float | torch.Tensor,
    *,
    noise_level: float = 0.7,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    prev_sample: torch.Tensor | None = None,
    log_prob_form: CpsLogProbForm = "gaussian",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coefficients-preserving sampling step (Flow-CPS; Wang & Yu 2025, arXiv 2509.05952).

    Flow-GRPO's SDE adds more noise than the schedule removes at low σ; CPS keeps the coefficients of the
    next level exact: the next latent is ``(1 − σ') x̂₀ + σ' · (noise)`` with the noise part split between
    the predicted noise and fresh noise. With a = ``noise_level`` ∈ (0, 1]::

        x̂₀ = x − σ v,   x̂₁ = x + (1 − σ) v                 (predicted data and noise)
        s  = σ' · sin(a π/2)
        μ  = (1 − σ') x̂₀ + sqrt(σ'² − s²) · x̂₁             (sqrt(σ'² − s²) = σ' cos(a π/2))
        x' = μ + s · z

    as in the authors' implementation (IamCreateAI/FlowCPS, ``sd3_sde_with_logprob.py``).
    ``log_prob_form="gaussian"`` returns the Gaussian log-density like :func:`sde_step` (undefined for a
    step to σ' = 0, where s = 0: an error); ``"flow_cps"`` returns what that implementation uses instead,
    ``−mean((x' − μ)²)`` with constants and the 1/(2s²) factor dropped, which changes the scale of the
    policy ratio per step (and is defined at σ' = 0). Returns ``(x_next, mean, log_prob, std)``.
    """
    if not (math.isfinite(noise_level) and 0 < noise_level <= 1):
        raise ValueError(f"cps_step: noise_level must lie in (0, 1], got {noise_level!r}")
    if log_prob_form not in ("gaussian", "flow_cps"):
        raise ValueError(f"cps_step: log_prob_form must be 'gaussian' or 'flow_cps', got {log_prob_form!r}")
    if v.shape != x.shape:
        raise ValueError(f"cps_step: v {tuple(v.shape)} differs from x {tuple(x.shape)}")
    x, v = x.float(), v.float()
    sig, sig_next = per_sample_level(sigma, x, "sigma"), per_sample_level(sigma_next, x, "sigma_next")
    _check_flow_levels(sig, sig_next, "cps_step")

    angle = noise_level * math.pi / 2
    std = sig_next * math.sin(angle)
    s_, n_ = expand_like(sig, x), expand_like(sig_next, x)
    x0_hat = x - s_ * v
    x1_hat = x + (1 - s_) * v
    mean = (1 - n_) * x0_hat + n_ * math.cos(angle) * x1_hat
    x_next = _draw(mean, std, noise, generator, prev_sample, "cps_step")
    if log_prob_form == "flow_cps":
        log_prob = -_flat_mean((x_next.detach() - mean).square())
    else:
        log_prob = gaussian_log_prob(x_next, mean, std)
    return x_next, mean, log_prob, std


def ddim_predictions(
    x: torch.Tensor, model_output: torch.Tensor, alpha_prod_t: torch.Tensor, prediction: DdimPrediction
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂₀, ε̂) from an ε- or v-prediction at ᾱ_t (float32 inputs; ``alpha_prod_t`` per sample [B])::

    ε:  x̂₀ = (x − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t)
    v:  x̂₀ = sqrt(ᾱ_t) x − sqrt(1 − ᾱ_t) v̂,   ε̂ = sqrt(ᾱ_t) v̂ + sqrt(1 − ᾱ_t) x   (arXiv 2202.00512)
    """
    sa_t, sb_t = expand_like(alpha_prod_t.sqrt(), x), expand_like((1 - alpha_prod_t).sqrt(), x)
    if prediction == "epsilon":
        return (x - sb_t * model_output) / sa_t, model_output
    return sa_t * x - sb_t * model_output, sa_t * model_output + sb_t * x


def ddim_step(
    x: torch.Tensor,
    model_output: torch.Tensor,
    alpha_prod_t: float | torch.Tensor,
    alpha_prod_t_prev: float | torch.Tensor,
    *,
    prediction: DdimPrediction = "epsilon",
    eta: float = 1.0,
    noise: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    prev_sample: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """DDIM step with noise η (Song et al. 2020, arXiv 2010.02502, eqs. 12 and 16) and its log-prob, as DDPO
    (Black et al. 2023, arXiv 2305.13301; kvablack/ddpo-pytorch ``ddim_with_logprob.py``).

    ``alpha_prod_t`` = ᾱ_t at the current step, ``alpha_prod_t_prev`` = ᾱ at the next (less noisy) step;
    the caller picks it from its schedule (at the last step the scheduler's ``final_alpha_cumprod``).
    Requires 0 < ᾱ_t < ᾱ_prev ≤ 1 and 0 < η ≤ 1 (η = 1 is DDPM's posterior variance; η > 1 would make
    the direction coefficient imaginary). For ``"epsilon"`` the output is ε̂; for ``"v_prediction"`` it is
    v̂ (Salimans & Ho 2022, arXiv 2202.00512)::

        ε:  x̂₀ = (x − sqrt(1 − ᾱ_t) ε̂) / sqrt(ᾱ_t)
        v:  x̂₀ = sqrt(ᾱ_t) x − sqrt(1 − ᾱ_t) v̂,   ε̂ = sqrt(ᾱ_t) v̂ + sqrt(1 − ᾱ_t) x
        s  = η · sqrt((1 − ᾱ_prev)/(1 − ᾱ_t) · (1 − ᾱ_t/ᾱ_prev))
        μ  = sqrt(ᾱ_prev) x̂₀ + sqrt(1 − ᾱ_prev − s²) ε̂,   x' = μ + s · z

    No clipping or thresholding of x̂₀ (the SD schedulers have it off). A step to ᾱ_prev = 1 has s = 0 and
    no log-prob (an error). Returns ``(x_next, mean, log_prob, std)``.
    """
    if prediction not in ("epsilon", "v_prediction"):
        raise ValueError(f"ddim_step: prediction must be 'epsilon' or 'v_prediction', got {prediction!r}")
    if not (math.isfinite(eta) and 0 < eta <= 1):
        raise ValueError(f"ddim_step: eta must lie in (0, 1] for a stochastic step with a log-prob, got {eta!r}")
    if model_output.shape != x.shape:
        raise ValueError(f"ddim_step: model_output {tuple(model_output.shape)} differs from x {tuple(x.shape)}")
    x, out = x.float(), model_output.float()
    a_t, a_prev = (
        per_sample_level(alpha_prod_t, x, "alpha_prod_t"),
        per_sample_level(alpha_prod_t_prev, x, "alpha_prod_t_prev"),
    )
    if bool(((a_t <= 0) | (a_t >= a_prev) | (a_prev > 1)).any()):
        raise ValueError(
            f"ddim_step: need 0 < alpha_prod_t < alpha_prod_t_prev <= 1, got {a_t.tolist()} and {a_prev.tolist()}"
        )

    variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
    std = eta * variance.sqrt()
    x0_hat, eps_hat = ddim_predictions(x, out, a_t, prediction)
    # 1 − ᾱ_prev − s² ≥ 0 for η ≤ 1 in exact arithmetic; the clamp only absorbs rounding.
    direction = (1 - a_prev - std.square()).clamp(min=0).sqrt()
    mean = expand_like(a_prev.sqrt(), x) * x0_hat + expand_like(direction, x) * eps_hat
    x_next = _draw(mean, std, noise, generator, prev_sample, "ddim_step")
    return x_next, mean, gaussian_log_prob(x_next, mean, std), std
