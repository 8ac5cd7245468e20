"""Image GRPO/GDPO on a LoRA (``imgpref train grpo``): one readable recipe, top to bottom.

Per rollout step (Flow-GRPO, Liu et al. 2025, arXiv 2505.05470; GDPO, arXiv 2601.05242; DESIGN.md
section 4):

1. draw P prompts and the noise of their G samples each (pure functions of seed and step);
2. roll out with the current weights, which are the old policy π_old (no grad): K sampling steps, the
   window steps stochastic with recorded log-probs (:mod:`imgpref.train.rollout`); decode the images;
3. score them with every configured reward; turn rewards into advantages per group
   (:func:`imgpref.advantages.group_advantages`: mean, grpo, global_std or gdpo; clipped to ±adv_clip);
4. for ``inner_epochs`` passes over the batch, in optimiser steps of ``batch_size × grad_accum``
   samples, re-score each recorded window step under the current policy and minimise
   ``−min(r Â, clip(r, 1 − ε, 1 + ε) Â) + β_KL · KL(π_θ ‖ π_ref)`` averaged over samples and window
   steps, accumulating gradients over the steps (one backward per step and micro-batch);
5. the next rollout refreshes π_old.

The ratio r = exp(log π_θ − log π_old) is exactly 1 on the first update after sampling, because the
re-scoring repeats the rollout's forward passes bit for bit (same weights, same micro-batches); the
recipe logs ``ratio_first_update = max |r − 1|`` of that update, which must be 0.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from imgpref.advantages import group_advantages
from imgpref.config import ConfigError
from imgpref.errors import NonFiniteLossError
from imgpref.models.base import Cond, FamilyAdapter, index_cond
from imgpref.models.lora import reference_mode
from imgpref.rewards import MultiReward
from imgpref.sampling.sde import gaussian_kl_same_std
from imgpref.train.draws import stream_indices
from imgpref.train.grpo_config import GRPOConfig, PromptSettings
from imgpref.train.rollout import (
    Rollout,
    StepSampler,
    default_sampler,
    draw_seed,
    rollout,
    sampling_schedule,
    step_log_prob,
    step_noise,
)
from imgpref.train.runtime import (
    Checkpointer,
    StopSignal,
    after_step,
    finish_run,
    load_run_model,
    make_accelerator,
    make_validator,
    open_run,
    start_run,
    train_lora,
)

logger = logging.getLogger(__name__)

COMMAND = "train grpo"
#: Streams of :func:`imgpref.train.rollout.draw_seed`: initial noise shared by a group, initial noise of
#: one sample, and the window steps' noise of one sample.
GROUP_NOISE, SAMPLE_NOISE, WINDOW_NOISE = 0, 1, 2

__all__ = ["COMMAND", "NonFiniteLossError", "clipped_policy_loss", "load_prompts", "step_draws", "train_grpo"]


# ----- the objective (pure tensor math) -----------------------------------------------------------------
def clipped_policy_loss(
    log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate as a loss (Schulman et al. 2017, arXiv 1707.06347; Flow-GRPO eq. 6):
    ``mean_i max(−Â_i r_i, −Â_i clip(r_i, 1 − ε, 1 + ε))`` with ``r = exp(log π − log π_old)``.

    Returns ``(loss, metrics)``; metrics hold the detached ratios [B] and the clipped mask [B]."""
    ratio = torch.exp(log_prob - old_log_prob.detach())
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    return loss, {"ratio": ratio.detach(), "clipped": ((ratio - 1).abs() > clip_range).detach()}


# ----- prompts and draws --------------------------------------------------------------------------------
def load_prompts(settings: PromptSettings) -> list[str]:
    """The prompt pool: the toy world's split, or the non-empty lines of a text file."""
    if settings.source == "toy":
        from imgpref.toy import world

        prompts = [world.prompt(a) for a in world.split(settings.split)]
    else:
        path = Path(settings.source).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"prompts.source {settings.source!r} is not a file; use `toy` or a text file")
        prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ConfigError(f"prompts.source {settings.source!r} holds no prompts (one per line)")
    return prompts[: settings.limit] if settings.limit else prompts


def step_draws(
    config: GRPOConfig, n_prompts: int, step: int, rank: int = 0, world: int = 1
) -> tuple[list[int], torch.Tensor, list[int], list[int]]:
    """This process's draws at ``step``: prompt index per sample, group id per sample (global within the
    step), initial-noise seed per sample and window-noise seed per sample. Pure functions of
    (train.seed, step, sample): a resumed run and a run on more processes see the same samples."""
    r, seed = config.rollout, config.train.seed
    local = r.prompts_per_step // world
    first = rank * local
    picks = stream_indices(step * r.prompts_per_step + first, local, n_prompts, seed).tolist()
    prompt_idx, groups, init_seeds, window_seeds = [], [], [], []
    for j, p in enumerate(picks):
        group = first + j
        for i in range(r.group_size):
            sample = group * r.group_size + i
            prompt_idx.append(int(p))
            groups.append(group)
            init_seeds.append(
                draw_seed(seed, step, group, GROUP_NOISE)
                if r.shared_noise
                else draw_seed(seed, step, sample, SAMPLE_NOISE)
            )
            window_seeds.append(draw_seed(seed, step, sample, WINDOW_NOISE))
    return prompt_idx, torch.tensor(groups), init_seeds, window_seeds


def initial_noise(seeds: list[int], latent_shape: tuple[int, ...]) -> torch.Tensor:
    """[N, *latent] float32 CPU: one unit-variance draw per seed."""
    return torch.stack([torch.randn(latent_shape, generator=torch.Generator("cpu").manual_seed(s)) for s in seeds])


# ----- the recipe -------------------------------------------------------------------------------------
def train_grpo(
    config: GRPOConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_at_step: int | None = None,
) -> dict[str, Any]:
    """Run (or resume) GRPO/GDPO and return a summary. ``stop_at_step`` behaves like a SIGTERM arriving
    during that step (save and exit), for tests of exact resume."""
    device_is_cpu = config.model.device == "cpu" or not torch.cuda.is_available()
    accelerator = make_accelerator(mixed_precision=config.train.mixed_precision, cpu=device_is_cpu)
    main = accelerator.is_main_process
    world, rank = accelerator.num_processes, accelerator.process_index
    r = config.rollout
    if r.prompts_per_step % world:
        raise ConfigError(f"rollout.prompts_per_step={r.prompts_per_step} must divide by the {world} processes")
    local_samples = r.samples // world
    per_update = config.train.batch_size * config.train.grad_accum
    if local_samples % per_update:
        raise ConfigError(
            f"{local_samples} samples per process must divide into optimiser steps of train.batch_size × "
            f"train.grad_accum = {per_update}"
        )
    updates_per_epoch = local_samples // per_update
    out, resumed, say = open_run(out_dir, COMMAND, config, accelerator)

    # ----- prompts, rewards, model -----------------------------------------------------------------
    prompts = load_prompts(config.prompts)
    rewards = MultiReward(config.rewards)
    model = load_run_model(config, accelerator)
    if model.takes_reference_image:
        raise ConfigError(f"GRPO on the reference-conditioned family {model.name!r} is not supported yet")
    size = config.resolution
    latent_shape = model.latent_shape(size, size)
    schedule = sampling_schedule(model, r.steps, size, size)
    sampler = StepSampler(default_sampler(model, r.sampler), r.noise_level, r.eta, r.cfg)
    window = r.window()
    uncond = model.encode_prompts([""]) if r.cfg > 1 else None

    params, optimizer, scheduler, wrapped = train_lora(
        model, config, accelerator, config.train.max_steps * config.grpo.inner_epochs * updates_per_epoch
    )
    say(
        f"rollout: {r.prompts_per_step} prompts x {r.group_size} samples = {r.samples} per step over {world} "
        f"process(es); {r.steps} sampling steps, window {window[0]}..{window[-1]} ({sampler.sampler}); "
        f"{config.grpo.inner_epochs} epoch(s) x {updates_per_epoch} update(s) of {config.train.batch_size} x "
        f"{config.train.grad_accum} samples; advantage {config.grpo.advantage}; rewards "
        + ", ".join(f"{k} x {w:g}" for k, w in rewards.weights.items())
    )

    validator = make_validator(config, model, accelerator, out, (size, size))

    # ----- resume ----------------------------------------------------------------------------------
    ckpts = Checkpointer(
        out, model, optimizer, scheduler, accelerator, validator=validator, keep=config.train.keep_checkpoints
    )
    start_step, log = start_run(out, config, ckpts, validator, accelerator, resumed=resumed, say=say)

    # ----- the loop -------------------------------------------------------------------------------
    last = config.train.max_steps
    stop_reason = None
    nonfinite_run = 0
    rows: list[dict[str, float]] = []
    done = start_step
    bar = tqdm(total=last, initial=start_step, desc="GRPO", unit="step", disable=not (progress and main))
    with StopSignal() as stop:
        for step in range(start_step, last):
            # 1-2. draws and rollout with the old policy
            tick = time.perf_counter()
            prompt_idx, group_ids, init_seeds, window_seeds = step_draws(config, len(prompts), step, rank, world)
            sample_prompts = [prompts[i] for i in prompt_idx]
            cond = model.encode_prompts(sample_prompts)
            with accelerator.autocast():
                roll = rollout(
                    model,
                    schedule,
                    cond,
                    initial_noise(init_seeds, latent_shape),
                    step_noise(window_seeds, len(window), latent_shape),
                    window,
                    sampler,
                    uncond=uncond,
                    chunk=config.train.batch_size,
                )
            rollout_s = time.perf_counter() - tick

            # 3. rewards and advantages over all processes' samples
            tick = time.perf_counter()
            meta = [
                {"step": step, "group": int(g), "prompt_index": i} for g, i in zip(group_ids, prompt_idx, strict=True)
            ]
            scores = rewards(roll.images, sample_prompts, meta)
            gathered = {k: accelerator.gather(v.to(accelerator.device)).cpu() for k, v in scores.items()}
            all_groups = accelerator.gather(group_ids.to(accelerator.device)).cpu()
            advantages, adv_metrics = group_advantages(
                gathered,
                all_groups,
                mode=config.grpo.advantage,
                weights=rewards.weights,
                eps=config.grpo.adv_eps,
                clip=config.grpo.adv_clip,
            )
            local_adv = advantages[rank * local_samples : (rank + 1) * local_samples].to(accelerator.device)
            reward_s = time.perf_counter() - tick

            # 4. inner updates
            tick = time.perf_counter()
            train_metrics, skipped = _train_on_rollout(
                config, model, wrapped, accelerator, optimizer, scheduler, params,
                roll, cond, uncond, sampler, local_adv, updates_per_epoch,
            )  # fmt: skip
            train_s = time.perf_counter() - tick

            for bad in skipped:  # consecutive skipped optimiser steps, across rollout steps
                nonfinite_run = nonfinite_run + 1 if bad else 0
            if any(skipped):
                count = sum(skipped)
                say(f"step {step + 1}: {count} update(s) with a non-finite loss skipped ({nonfinite_run} in a row)")
                if nonfinite_run >= config.train.max_nonfinite_steps:
                    ckpts.save(step)
                    raise NonFiniteLossError(
                        f"the loss was NaN/inf for {nonfinite_run} optimiser steps in a row (up to rollout step "
                        f"{step + 1}); lower optim.lr or grpo.clip_range, or use train.mixed_precision=no/bf16. "
                        f"The last saved state is in {out / 'checkpoints'}"
                    )
            done = step + 1
            bar.update(1)

            row = {f"reward/{k}": float(v.mean()) for k, v in gathered.items()}
            row["reward/total"] = float(sum(rewards.weights[k] * v for k, v in gathered.items()).mean())
            row.update({k if k != "clip_fraction" else "adv_clip_fraction": v for k, v in adv_metrics.items()})
            row.update(train_metrics)
            row["rollout_images_per_s"] = r.samples / max(rollout_s, 1e-9)
            row["train_images_per_s"] = r.samples * config.grpo.inner_epochs / max(train_s, 1e-9)
            row["reward_s"] = reward_s
            rows.append(row)
            if done % config.train.log_every == 0 or done == last:
                common = set.intersection(*(set(x) for x in rows))
                logged = {k: sum(x[k] for x in rows) / len(rows) for k in sorted(common)}
                log.log(done, logged)
                bar.set_postfix(reward=f"{logged['reward/total']:.3f}", ratio=f"{logged.get('ratio_max', 1):.4f}")
                rows = []

            stop_reason = after_step(
                done,
                last,
                accelerator=accelerator,
                validator=validator,
                log=log,
                checkpoints=ckpts,
                model=model,
                say=say,
                stop_requested=stop.requested or (stop_at_step is not None and done >= stop_at_step),
                checkpoint_every=config.train.checkpoint_every,
            )
            if stop_reason:
                break
    bar.close()
    log.close()
    model.set_forward_module(None)

    summary = {"steps": done, "stopped": stop_reason, "out": str(out), "prompts": len(prompts)}
    return finish_run(summary, model=model, accelerator=accelerator, checkpoints=ckpts, say=say)


def _train_on_rollout(
    config: GRPOConfig,
    model: FamilyAdapter,
    wrapped: torch.nn.Module,
    accelerator: Accelerator,
    optimizer: Any,
    scheduler: Any,
    params: list[torch.nn.Parameter],
    roll: Rollout,
    cond: Cond,
    uncond: Cond | None,
    sampler: StepSampler,
    advantages: torch.Tensor,
    updates_per_epoch: int,
) -> tuple[dict[str, float], list[bool]]:
    """The inner updates on one rollout batch; returns (metrics, whether each optimiser step was skipped)."""
    b, accum, g = config.train.batch_size, config.train.grad_accum, config.grpo
    window, schedule = roll.window, roll.schedule
    n_steps = len(window)
    ratios: dict[int, list[torch.Tensor]] = {k: [] for k in window}
    clipped: dict[int, list[torch.Tensor]] = {k: [] for k in window}
    losses, kls, grad_norms = [], [], []
    first_update_dev = torch.zeros((), device=accelerator.device)
    skipped: list[bool] = []
    for epoch in range(g.inner_epochs):
        for update in range(updates_per_epoch):
            bad = False
            for micro in range(accum):
                start = (update * accum + micro) * b
                rows = slice(start, start + b)
                c = index_cond(cond, rows)
                adv = advantages[rows]
                for j, k in enumerate(window):
                    x_t, x_next = roll.latents[rows, k], roll.latents[rows, k + 1]
                    with accelerator.autocast():
                        log_prob, mean, std = step_log_prob(model, schedule, k, x_t, x_next, c, sampler, uncond=uncond)
                    loss, m = clipped_policy_loss(log_prob, roll.log_prob[rows, j], adv, g.clip_range)
                    if g.kl_beta > 0:
                        with reference_mode(model), accelerator.autocast():
                            _, mean_ref, _ = step_log_prob(model, schedule, k, x_t, x_next, c, sampler, uncond=uncond)
                        kl = gaussian_kl_same_std(mean, mean_ref, std).mean()
                        loss = loss + g.kl_beta * kl
                        kls.append(kl.detach())
                    nonfinite = torch.tensor(float(not torch.isfinite(loss)), device=accelerator.device)
                    if accelerator.reduce(nonfinite).item() > 0 or bad:
                        bad = True  # every process skips the whole update together
                        continue
                    final = micro == accum - 1 and j == n_steps - 1
                    sync = contextlib.nullcontext() if final else accelerator.no_sync(wrapped)
                    with sync:
                        accelerator.backward(loss / (accum * n_steps))
                    losses.append(loss.detach())
                    ratios[k].append(m["ratio"])
                    clipped[k].append(m["clipped"])
                    if epoch == 0 and update == 0:
                        first_update_dev = torch.maximum(first_update_dev, (m["ratio"] - 1).abs().max())
            skipped.append(bad)
            if bad:
                optimizer.zero_grad(set_to_none=True)
            else:
                max_norm = config.optim.max_grad_norm or math.inf
                grad_norms.append(accelerator.clip_grad_norm_(params, max_norm).detach().float())
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            scheduler.step()
    metrics: dict[str, float] = {"updates": float(skipped.count(False)), "skipped_updates": float(sum(skipped))}
    metrics["ratio_first_update"] = float(accelerator.gather(first_update_dev.reshape(1)).max())
    metrics["lr"] = float(scheduler.get_last_lr()[0])
    if losses:
        metrics["loss"] = float(torch.stack(losses).mean())
        all_ratios = torch.cat([torch.cat(v) for v in ratios.values() if v])
        all_clipped = torch.cat([torch.cat(v) for v in clipped.values() if v])
        metrics.update(_ratio_stats(all_ratios, all_clipped, ""))
        for k in window:
            if ratios[k]:
                metrics.update(_ratio_stats(torch.cat(ratios[k]), torch.cat(clipped[k]), f"/t{k}"))
    if grad_norms:
        metrics["grad_norm"] = float(torch.stack(grad_norms).mean())
    if kls:
        metrics["kl"] = float(torch.stack(kls).mean())
    return metrics, skipped


def _ratio_stats(ratio: torch.Tensor, clipped: torch.Tensor, suffix: str) -> dict[str, float]:
    return {
        f"ratio_mean{suffix}": float(ratio.mean()),
        f"ratio_min{suffix}": float(ratio.min()),
        f"ratio_max{suffix}": float(ratio.max()),
        f"clip_frac{suffix}": float(clipped.float().mean()),
    }
