"""Rollouts with log-probs for GRPO: G samples per prompt, a few steps, a stochastic window.

A rollout runs the sampler of :func:`sampling_schedule` from the initial noise to the data end. Steps in
the SDE window draw the next latent from the Gaussian of a stochastic step (:mod:`imgpref.sampling.sde`:
Flow-GRPO's SDE or CPS for rectified-flow families, DDIM with η for ``sd``) and record its log-prob;
the others are deterministic (Euler for flow, DDIM η = 0). The recipe re-scores the recorded
``(x_t, x_next)`` of the window steps under the current policy with :func:`step_log_prob`, which runs
the same computation as the rollout: with the same weights and micro-batch it returns bit-identical
log-probs (the policy ratio is exactly 1 on the first update after sampling).

Everything is float32 in the step math; the trajectory is kept in float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from imgpref.models.base import Cond, FamilyAdapter, concat_cond, index_cond
from imgpref.sampling.ode import ddim_deterministic_step, euler_step
from imgpref.sampling.sde import cps_step, ddim_step, sde_step
from imgpref.schedules import DDPMSchedule

StepKind = Literal["flow", "ddim"]
Sampler = Literal["sde", "cps", "ddim"]


@dataclass(frozen=True)
class StepSchedule:
    """The K sampling steps of a rollout: model time, noise level and next noise level per step."""

    kind: StepKind
    """``flow``: levels are σ (x_σ = (1 − σ) x₀ + σ ε); ``ddim``: levels are ᾱ (DDPM)."""
    t: torch.Tensor
    """[K] float32: the time in [0, 1] passed to ``FamilyAdapter.predict`` at each step."""
    level: torch.Tensor
    """[K] float32: σ (flow) or ᾱ_t (ddim) at each step."""
    level_next: torch.Tensor
    """[K] float32: σ' (flow, 0 after the last step) or ᾱ_prev (ddim) after each step."""
    prediction: str = "flow"
    """The network's output: ``flow`` (velocity), ``epsilon`` or ``v_prediction``."""

    @property
    def steps(self) -> int:
        return int(self.t.shape[0])


@dataclass(frozen=True)
class StepSampler:
    """How window steps are drawn."""

    sampler: Sampler
    """``sde``, ``cps`` (flow) or ``ddim`` (DDPM)."""
    noise_level: float = 0.7
    """a of the SDE / CPS."""
    eta: float = 1.0
    """η of the DDIM step."""
    cfg: float = 1.0
    """Classifier-free guidance scale (1 = off)."""


@dataclass
class Rollout:
    """What a rollout returns; tensors on the model's device unless said otherwise."""

    latents: torch.Tensor
    """[N, K + 1, *latent] float32: the whole trajectory, noise first, final latent last."""
    window: list[int]
    """The trained (stochastic) step indices k; step k maps ``latents[:, k]`` to ``latents[:, k + 1]``."""
    log_prob: torch.Tensor
    """[N, S] float32: log π_old(x_next | x_t) of each window step (S = len(window))."""
    images: torch.Tensor | None
    """[N, 3, H, W] float32 in [0, 1] on the CPU (None when not decoded)."""
    schedule: StepSchedule
    """The steps the rollout ran."""

    @property
    def x_t(self) -> torch.Tensor:
        """[N, S, *latent]: the inputs of the window steps."""
        return self.latents[:, self.window]

    @property
    def x_next(self) -> torch.Tensor:
        """[N, S, *latent]: the drawn outputs of the window steps."""
        return self.latents[:, [k + 1 for k in self.window]]

    @property
    def sigma(self) -> torch.Tensor:
        """[S]: the noise level (σ or ᾱ_t) of each window step."""
        return self.schedule.level[self.window]

    @property
    def sigma_next(self) -> torch.Tensor:
        """[S]: the next noise level (σ' or ᾱ_prev) of each window step."""
        return self.schedule.level_next[self.window]


# ----- the schedule: one function for every family ----------------------------------------------------
def sampling_schedule(model: FamilyAdapter, steps: int, height: int, width: int) -> StepSchedule:
    """The rollout's K = ``steps`` sampling steps for this model at this image size.

    Rectified flow (FLUX, Qwen-Image, SD3, the toy): σ from 1 down to 1/K linearly, then 0, passed
    through the pipeline's own FlowMatchEulerDiscreteScheduler (``set_timesteps(sigmas, mu)``) so that
    its shift applies: static (SD3) or resolution-dependent (FLUX/Qwen's ``use_dynamic_shifting`` with
    μ from the image's token count, as their pipelines compute it). With shift 1 (the toy) σ stays
    linear 1 → 0. DDPM (``sd``): the DDIM scheduler's K timesteps from the pipeline's scheduler config,
    with ᾱ of each and of the next (the scheduler's ``final_alpha_cumprod`` after the last).
    """
    if steps < 1:
        raise ValueError(f"sampling_schedule: steps must be >= 1, got {steps}")
    if isinstance(model.schedule, DDPMSchedule):
        return _ddim_schedule(model, steps)
    from diffusers import FlowMatchEulerDiscreteScheduler

    config = model.pipe.scheduler.config
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    mu = None
    if config.get("use_dynamic_shifting", False):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        _, h, w = model.latent_shape(height, width)
        tokens = (h // 2) * (w // 2)  # 2×2-packed latent tokens, as the FLUX and Qwen-Image pipelines count
        mu = calculate_shift(
            tokens,
            config.get("base_image_seq_len", 256),
            config.get("max_image_seq_len", 4096),
            config.get("base_shift", 0.5),
            config.get("max_shift", 1.15),
        )
    scheduler.set_timesteps(sigmas=sigmas, mu=mu)
    levels = scheduler.sigmas.to(torch.float32)  # K + 1 values, the last one 0
    return StepSchedule("flow", levels[:-1].clone(), levels[:-1].clone(), levels[1:].clone(), "flow")


def _ddim_schedule(model: FamilyAdapter, steps: int) -> StepSchedule:
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(model.pipe.scheduler.config)
    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps.long()
    total = scheduler.config.num_train_timesteps
    alphas = scheduler.alphas_cumprod.to(torch.float32)
    previous = timesteps - total // steps
    final = torch.as_tensor(scheduler.final_alpha_cumprod, dtype=torch.float32)
    level_next = torch.where(previous >= 0, alphas[previous.clamp(min=0)], final)
    # predict() maps t = k/(T − 1) back to exactly the integer timestep k (DDPMSchedule.model_timestep).
    t = timesteps.to(torch.float32) / (total - 1)
    return StepSchedule("ddim", t, alphas[timesteps].clone(), level_next, model.schedule.prediction)


def default_sampler(model: FamilyAdapter, sampler: str) -> Sampler:
    """``auto`` → ``ddim`` for DDPM families, ``sde`` for rectified flow; a mismatch is an error."""
    ddpm = isinstance(model.schedule, DDPMSchedule)
    if sampler == "auto":
        return "ddim" if ddpm else "sde"
    if ddpm != (sampler == "ddim"):
        kind = "DDPM (sd)" if ddpm else "rectified-flow"
        allowed = "ddim" if ddpm else "sde or cps"
        raise ValueError(f"rollout.sampler={sampler!r} does not fit the {kind} family {model.name!r}; use {allowed}")
    return sampler  # type: ignore[return-value]


# ----- one step ---------------------------------------------------------------------------------------
def model_output(
    model: FamilyAdapter, x: torch.Tensor, t: torch.Tensor, cond: Cond, uncond: Cond | None, cfg: float
) -> torch.Tensor:
    """The denoiser's float32 output at time ``t`` (0-dim), with classifier-free guidance when cfg > 1."""
    b = x.shape[0]
    tt = t.to(x.device, torch.float32).reshape(()).expand(b)
    if cfg <= 1 or uncond is None:
        return model.predict(x.to(model.dtype), tt, cond).float()
    if all(cond[k].shape[1:] == uncond[k].shape[1:] for k in cond):
        both = model.predict(torch.cat([x, x]).to(model.dtype), torch.cat([tt, tt]), concat_cond(cond, uncond))
        conditional, unconditional = both.float().chunk(2)
    else:  # e.g. prompt masks of different lengths: two calls
        conditional = model.predict(x.to(model.dtype), tt, cond).float()
        unconditional = model.predict(x.to(model.dtype), tt, uncond).float()
    return unconditional + cfg * (conditional - unconditional)


def deterministic_step(schedule: StepSchedule, k: int, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """Step ``k`` outside the window: Euler (flow) or DDIM with η = 0 (:mod:`imgpref.sampling.ode`)."""
    level, level_next = schedule.level[k].to(x.device), schedule.level_next[k].to(x.device)
    if schedule.kind == "flow":
        return euler_step(x, out, level, level_next)
    return ddim_deterministic_step(x, out, level, level_next, prediction=schedule.prediction)


def stochastic_step(
    schedule: StepSchedule,
    k: int,
    x: torch.Tensor,
    out: torch.Tensor,
    sampler: StepSampler,
    *,
    noise: torch.Tensor | None = None,
    prev_sample: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A window step: ``(x_next, mean, log_prob, std)`` drawing with ``noise`` or scoring ``prev_sample``."""
    level, level_next = schedule.level[k], schedule.level_next[k]
    kwargs = {"noise": noise, "prev_sample": prev_sample}
    if sampler.sampler == "ddim":
        return ddim_step(x, out, level, level_next, prediction=schedule.prediction, eta=sampler.eta, **kwargs)
    step = sde_step if sampler.sampler == "sde" else cps_step
    return step(x, out, level, level_next, noise_level=sampler.noise_level, **kwargs)


def check_window(schedule: StepSchedule, window: Sequence[int], sampler: StepSampler) -> None:
    """Refuse window steps without a density (CPS to σ' = 0, DDIM to ᾱ' = 1) before any compute is spent."""
    for k in window:
        if not 0 <= k < schedule.steps:
            raise ValueError(f"window step {k} is outside the {schedule.steps} sampling steps")
        if sampler.sampler == "ddim" and float(schedule.level_next[k]) >= 1:
            raise ValueError(
                f"the ddim step {k} goes to ᾱ' = 1 (the scheduler's set_alpha_to_one) and has no noise, so no "
                "log-prob; end the SDE window before the last step (rollout.window_size)"
            )
        if sampler.sampler == "cps" and float(schedule.level_next[k]) == 0:
            raise ValueError(
                f"the cps step {k} goes to σ' = 0 and has no log-prob; end the SDE window before the last step "
                "(rollout.window_size)"
            )


# ----- noise draws ------------------------------------------------------------------------------------
def draw_seed(*keys: int) -> int:
    """A 63-bit generator seed from integer keys (seed, step, index, stream), without collisions in practice."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, dtype=np.uint64)[0] >> 1)


def step_noise(seeds: Sequence[int], count: int, latent_shape: tuple[int, ...]) -> torch.Tensor:
    """[N, count, *latent] float32 CPU: the window steps' noise, one generator per sample seed."""
    out = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(seed)
        out.append(torch.randn((count, *latent_shape), generator=generator))
    return torch.stack(out)


# ----- the rollout ------------------------------------------------------------------------------------
@torch.no_grad()
def rollout(
    model: FamilyAdapter,
    schedule: StepSchedule,
    cond: Cond,
    initial_noise: torch.Tensor,
    window_noise: torch.Tensor,
    window: Sequence[int],
    sampler: StepSampler,
    *,
    uncond: Cond | None = None,
    chunk: int = 8,
    decode: bool = True,
) -> Rollout:
    """Sample N latents (and images) with log-probs of the window steps.

    ``cond``: N samples' conditioning (each prompt repeated G times); ``initial_noise`` [N, *latent]
    (unit variance); ``window_noise`` [N, S, *latent]; ``uncond``: the empty prompt's conditioning
    (batch 1, expanded) for cfg > 1. Samples go through in chunks of ``chunk``: the recipe re-scores
    with the same chunks, so that the forward passes (and log-probs) repeat bit for bit.
    """
    window = list(window)
    check_window(schedule, window, sampler)
    n = initial_noise.shape[0]
    if window_noise.shape[:2] != (n, len(window)):
        raise ValueError(f"window_noise must be [N={n}, S={len(window)}, ...], got {tuple(window_noise.shape)}")
    device = model.device
    trajectories, log_probs, images = [], [], []
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        c = index_cond(cond, rows)
        u = _expand_uncond(uncond, rows.stop - rows.start)
        # Unit-variance x_T for both kinds: DDIM starts from N(0, I) (its init_noise_sigma is 1), whatever
        # scheduler the pipeline ships (SDXL's Euler scheduler would scale it by sqrt(sigma_max^2 + 1)).
        x = initial_noise[rows].to(device, torch.float32)
        path, lps = [x], []
        for k in range(schedule.steps):
            out = model_output(model, x, schedule.t[k], c, u, sampler.cfg)
            if k in window:
                z = window_noise[rows, window.index(k)].to(device, torch.float32)
                x, _, lp, _ = stochastic_step(schedule, k, x, out, sampler, noise=z)
                lps.append(lp)
            else:
                x = deterministic_step(schedule, k, x, out)
            path.append(x)
        trajectories.append(torch.stack(path, dim=1))
        log_probs.append(torch.stack(lps, dim=1) if lps else x.new_zeros(x.shape[0], 0))
        if decode:
            images.append(model.decode_latents(x.to(model.dtype)).float().cpu())
    return Rollout(
        latents=torch.cat(trajectories),
        window=window,
        log_prob=torch.cat(log_probs),
        images=torch.cat(images) if decode else None,
        schedule=schedule,
    )


def step_log_prob(
    model: FamilyAdapter,
    schedule: StepSchedule,
    k: int,
    x_t: torch.Tensor,
    x_next: torch.Tensor,
    cond: Cond,
    sampler: StepSampler,
    *,
    uncond: Cond | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log_prob [B], mean, std [B])`` of the recorded ``x_next`` given ``x_t`` at step k under the
    current weights (with gradients when enabled): the rollout's computation with ``prev_sample``."""
    u = _expand_uncond(uncond, x_t.shape[0])
    out = model_output(model, x_t.float(), schedule.t[k], cond, u, sampler.cfg)
    _, mean, log_prob, std = stochastic_step(schedule, k, x_t.float(), out, sampler, prev_sample=x_next)
    return log_prob, mean, std


def _expand_uncond(uncond: Cond | None, batch: int) -> Cond | None:
    if uncond is None:
        return None
    return {key: value[:1].expand(batch, *value.shape[1:]) for key, value in uncond.items()}


__all__ = [
    "Rollout",
    "StepSampler",
    "StepSchedule",
    "check_window",
    "default_sampler",
    "deterministic_step",
    "draw_seed",
    "model_output",
    "rollout",
    "sampling_schedule",
    "step_log_prob",
    "step_noise",
    "stochastic_step",
]
