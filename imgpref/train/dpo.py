"""Diffusion-DPO on a LoRA (``imgpref train dpo``): one readable recipe, top to bottom.

Per optimiser step, for each pair (winner w, loser l) of the batch (Wallace et al. 2023,
arXiv 2311.12908; DESIGN.md section 4):

1. take cached latents x₀ʷ, x₀ˡ and the cached conditioning (no VAE or text encoder at train time);
2. draw one t and one ε per pair (functions of seed and stream position, :mod:`imgpref.train.draws`)
   and noise winner and loser with the same (t, ε);
3. run winner and loser in one concatenated forward of the reference (the same network, LoRA
   disabled, no_grad) and one of the policy (LoRA on);
4. per-sample errors against the family's target, then :func:`imgpref.losses.diffusion_dpo_loss`.

accelerate handles devices, processes, mixed precision and gradient accumulation; the denoiser is
prepared by accelerate (DDP/FSDP wrapper) and :meth:`FamilyAdapter.predict` runs through it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from imgpref.errors import NonFiniteLossError
from imgpref.losses import bucket_accuracy, diffusion_dpo_loss, implicit_correct, per_sample_error
from imgpref.models.base import FamilyAdapter, concat_cond
from imgpref.models.lora import reference_mode
from imgpref.train.diagnostics import WinnerErrorMonitor
from imgpref.train.dpo_config import DPOConfig
from imgpref.train.draws import stream_indices, stream_noise, stream_start
from imgpref.train.latent_cache import EncodedPairs, encode_pairs
from imgpref.train.pair_data import check_images, read_pairs
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

COMMAND = "train dpo"
#: Window (optimiser steps) over which the both-down warning averages Δ_w, and the least number of steps
#: between two such warnings (the metric ``warn_winner_error_up`` is logged at every step regardless).
BOTH_DOWN_WINDOW, BOTH_DOWN_REPEAT = 20, 200


@dataclass
class Batch:
    """One micro-batch of pairs on the device: latents, shared (t, ε), conditioning."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor
    cond: dict[str, torch.Tensor]


#: ``(stream position, batch) -> (reference errors of winners, of losers)``, each [B] float32.
ReferenceErrors = Callable[[int, "Batch"], tuple[torch.Tensor, torch.Tensor]]


def make_batch(
    data: EncodedPairs, config: DPOConfig, start: int, model: FamilyAdapter, count: int | None = None
) -> Batch:
    """The micro-batch at stream position ``start`` (pure function of the data, seed and position)."""
    count = count or config.train.batch_size
    idx = stream_indices(start, count, len(data), config.train.seed)
    t, noise = stream_noise(
        start,
        count,
        tuple(data.chosen.shape[1:]),
        config.train.seed,
        kind=config.dpo.timesteps,
        mu=config.dpo.logit_mean,
        sigma=config.dpo.logit_std,
    )
    dev, dt = model.device, model.dtype
    return Batch(
        data.chosen[idx].to(dev),
        data.rejected[idx].to(dev),
        t.to(dev),
        noise.to(dev),
        {k: v.to(dev, dt) if v.is_floating_point() else v.to(dev) for k, v in data.batch_cond(idx).items()},
    )


def pair_errors(model: FamilyAdapter, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Errors of winners and losers in one concatenated forward, for the current mode of the LoRA:
    returns (err_w, err_l, noisy input, target) so a caller can reuse the inputs."""
    x0 = torch.cat([batch.chosen, batch.rejected])
    noise = torch.cat([batch.noise, batch.noise])  # one ε per pair, shared by its two sides
    t = torch.cat([batch.t, batch.t])  # one t per pair, shared
    x_t = model.schedule.add_noise(x0, noise, t)
    target = model.schedule.target(x0, noise, t)
    pred = model.predict(x_t.to(model.dtype), t, concat_cond(batch.cond, batch.cond))
    err = per_sample_error(pred.float(), target.float())
    b = batch.chosen.shape[0]
    return err[:b], err[b:], x_t, target


def reference_errors(model: FamilyAdapter, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference model's errors (adapters disabled, no_grad) on a batch."""
    with reference_mode(model):
        err_w, err_l, _, _ = pair_errors(model, batch)
    return err_w, err_l


#: Metrics of an optimiser step, recorded on the micro-batch that synchronises the gradients.
STEP_METRICS = ("grad_norm", "lr")


def _mean_metrics(rows: list[dict[str, torch.Tensor]], accelerator: Accelerator) -> dict[str, float]:
    """Average metric tensors over micro-batches, steps and processes."""
    keys = rows[0].keys()
    stacked = torch.stack([torch.stack([r[k].float() for k in keys]) for r in rows]).mean(0)
    stacked = accelerator.reduce(stacked.to(accelerator.device), reduction="mean")
    return {k: float(v) for k, v in zip(keys, stacked.tolist(), strict=True)}


def load_model_and_pairs(
    config: DPOConfig, accelerator: Accelerator, *, progress: bool
) -> tuple[FamilyAdapter, EncodedPairs, tuple[int, int], Path, bool]:
    """Check the pair data (errors name the metadata line), load the model and encode the pairs once (or
    read them from the latent cache): (model, encoded pairs, image size, cache entry, cache hit).
    The main process resolves the model first (it builds the toy model on first use) and encodes first."""
    pairs = read_pairs(config.data.path, config.data.limit)
    size = check_images(Path(config.data.path), pairs, config.data.resolution)
    model = load_run_model(config, accelerator)
    with accelerator.main_process_first():
        data, cache_entry, hit = encode_pairs(
            model,
            config.model.resolve_path(),
            pairs,
            size,
            cache_dir=config.data.cache_dir or None,
            batch_size=config.data.encode_batch_size,
            progress=progress,
        )
    return model, data, size, cache_entry, hit


def train_dpo(
    config: DPOConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_at_step: int | None = None,
    reference: ReferenceErrors | None = None,
) -> dict[str, Any]:
    """Run (or resume) Diffusion-DPO and return a summary. ``stop_at_step`` behaves like a SIGTERM
    arriving during that step (save and exit), for tests of exact resume.

    ``reference(start, batch)`` returns the reference model's errors (err_w, err_l) of the micro-batch
    at stream position ``start``; by default they are computed each step with the LoRA disabled. They do
    not depend on β or the optimiser, so a sweep computes them once for its draws and passes them here."""
    device_is_cpu = config.model.device == "cpu" or not torch.cuda.is_available()
    accelerator = make_accelerator(
        mixed_precision=config.train.mixed_precision, grad_accum=config.train.grad_accum, cpu=device_is_cpu
    )
    main = accelerator.is_main_process
    out, resumed, say = open_run(out_dir, COMMAND, config, accelerator)

    # ----- data and model -------------------------------------------------------------------------
    model, data, size, cache_entry, hit = load_model_and_pairs(config, accelerator, progress=progress and main)
    device = model.device
    state = "cached" if hit else "encoded"
    say(f"pairs: {len(data)} from {config.data.path} at {size[1]}x{size[0]}; latents {state} in {cache_entry}")
    # The encoders are never needed again during training: free their memory on the device.
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        if getattr(model.pipe, name, None) is not None and device.type == "cuda":
            getattr(model.pipe, name).to("cpu")

    params, optimizer, scheduler, wrapped = train_lora(model, config, accelerator, config.train.max_steps)

    world, rank = accelerator.num_processes, accelerator.process_index
    per_step = config.train.batch_size * config.train.grad_accum * world
    say(
        f"batch: {config.train.batch_size} pairs x {config.train.grad_accum} accumulation x {world} process(es) = "
        f"{per_step} pairs per step; {config.train.max_steps} steps = "
        f"{config.train.max_steps * per_step / len(data):.1f} epochs; beta_eff = {_beta_eff(config, data):g} "
        f"({config.dpo.convention} convention, beta {config.dpo.beta:g})"
    )

    validator = make_validator(config, model, accelerator, out, size)

    # ----- resume ----------------------------------------------------------------------------------
    ckpts = Checkpointer(
        out, model, optimizer, scheduler, accelerator, validator=validator, keep=config.train.keep_checkpoints
    )
    start_step, log = start_run(out, config, ckpts, validator, accelerator, resumed=resumed, say=say)

    # ----- the loop -------------------------------------------------------------------------------
    last = config.train.max_steps
    stop_reason = None
    nonfinite_run = 0
    window: list[dict[str, torch.Tensor]] = []
    t_window: list[torch.Tensor] = []
    correct_window: list[torch.Tensor] = []
    monitor = WinnerErrorMonitor(BOTH_DOWN_WINDOW, BOTH_DOWN_REPEAT)
    tick = time.perf_counter()
    bar = tqdm(total=last, initial=start_step, desc="DPO", unit="step", disable=not (progress and main))
    b, accum = config.train.batch_size, config.train.grad_accum
    with StopSignal() as stop:
        for step in range(start_step, last):
            skipped = False
            for micro in range(config.train.grad_accum):
                start = stream_start(step, micro, rank, batch_size=b, grad_accum=accum, world_size=world)
                batch = make_batch(data, config, start, model)
                ref_w, ref_l = reference(start, batch) if reference else reference_errors(model, batch)
                with accelerator.accumulate(wrapped):
                    err_w, err_l, _, _ = pair_errors(model, batch)
                    loss, metrics = diffusion_dpo_loss(
                        err_w,
                        err_l,
                        ref_w,
                        ref_l,
                        config.dpo.beta,
                        convention=config.dpo.convention,
                        num_elements=_num_elements(config, batch.chosen[0]),
                        loss_type=config.dpo.loss_type,
                        loser_weight=config.dpo.loser_weight,
                        sft_weight=config.dpo.sft_weight,
                    )
                    bad = accelerator.reduce(torch.tensor(float(not torch.isfinite(loss)), device=accelerator.device))
                    if bad.item() > 0 or skipped:
                        skipped = True  # every process skips the whole step together
                        continue
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        max_norm = config.optim.max_grad_norm or math.inf
                        metrics["grad_norm"] = accelerator.clip_grad_norm_(params, max_norm).detach().float()
                        metrics["lr"] = torch.tensor(scheduler.get_last_lr()[0])
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window.append({k: v.to(accelerator.device) for k, v in metrics.items()})
                t_window.append(batch.t.detach())
                correct_window.append(implicit_correct(err_w.detach(), err_l.detach(), ref_w, ref_l))
            if skipped:
                optimizer.zero_grad(set_to_none=True)
                nonfinite_run += 1
                say(f"step {step + 1}: non-finite loss, step skipped ({nonfinite_run} in a row)")
                if nonfinite_run >= config.train.max_nonfinite_steps:
                    ckpts.save(step)
                    raise NonFiniteLossError(
                        f"the loss was NaN/inf for {nonfinite_run} optimiser steps in a row (up to step {step + 1}); "
                        "lower optim.lr or dpo.beta, or use train.mixed_precision=no/bf16 instead of fp16. "
                        f"The last finite state is saved in {out / 'checkpoints'}"
                    )
            else:
                nonfinite_run = 0
            scheduler.step()
            done = step + 1
            bar.update(1)

            if window and (done % config.train.log_every == 0 or done == last):
                # Pair metrics over every micro-batch; grad norm and lr from the micro-batches that stepped.
                common = set.intersection(*(set(r) for r in window)) - set(STEP_METRICS)
                logged = _mean_metrics([{k: r[k] for k in sorted(common)} for r in window], accelerator)
                stepped = [{k: r[k] for k in STEP_METRICS} for r in window if STEP_METRICS[0] in r]
                if stepped:  # the same micro-batches on every process (non-finite steps are skipped by all)
                    logged.update(_mean_metrics(stepped, accelerator))
                elapsed = time.perf_counter() - tick
                logged["pairs_per_s"] = per_step * len(window) / config.train.grad_accum / max(elapsed, 1e-9)
                acc, counts = bucket_accuracy(
                    accelerator.gather(torch.cat(t_window)),
                    accelerator.gather(torch.cat(correct_window)),
                    config.dpo.timestep_buckets,
                )
                for k in range(config.dpo.timestep_buckets):
                    if counts[k] > 0:
                        logged[f"accuracy_t{k}"] = float(acc[k])
                flag, warning = monitor.update(done, logged["delta_w"])
                logged["warn_winner_error_up"] = float(flag)
                if warning:
                    say(warning)
                log.log(done, logged)
                bar.set_postfix(loss=f"{logged['loss']:.4f}", acc=f"{logged['implicit_accuracy']:.2f}")
                window, t_window, correct_window = [], [], []
                tick = time.perf_counter()

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

    final_step = done if last > start_step else start_step
    summary = {"steps": final_step, "stopped": stop_reason, "out": str(out), "pairs": len(data)}
    return finish_run(summary, model=model, accelerator=accelerator, checkpoints=ckpts, say=say)


def _beta_eff(config: DPOConfig, data: EncodedPairs) -> float:
    from imgpref.losses import effective_beta

    return effective_beta(config.dpo.beta, config.dpo.convention, _num_elements(config, data.chosen[0]))


def _num_elements(config: DPOConfig, latent: torch.Tensor) -> int | None:
    """Latent elements per sample, which only the ``sum`` convention uses."""
    return int(latent.numel()) if config.dpo.convention == "sum" else None
