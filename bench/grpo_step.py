"""Benchmark: one GRPO step's rollout throughput and training time (CPU by default).

For each model: a rollout of ``--samples`` images with ``--steps`` sampling steps (the SDE window on
every step but none skipped, log-probs recorded, VAE decode included), then one training pass over it
(re-score every window step under the policy, clipped loss, backward per step; one optimiser step),
timed separately. ``ratio_first_update`` (max |r − 1|, must be 0) is printed as a check.

    python bench/grpo_step.py                      # tiny FLUX and the toy small model, CPU, 1 thread
    python bench/grpo_step.py --models toy-small --samples 64 --steps 10
"""

from __future__ import annotations

import argparse
import time

import torch

from imgpref.config import HelpFormatter
from imgpref.models import load_model
from imgpref.models.base import index_cond
from imgpref.models.lora import attach_lora
from imgpref.models.settings import LoraSettings
from imgpref.toy import world
from imgpref.train.grpo import clipped_policy_loss
from imgpref.train.rollout import StepSampler, rollout, sampling_schedule, step_log_prob, step_noise

#: Image side per benchmarked model (tiny FLUX: 16 px is its smallest; the toy world is 32 px).
MODELS = {"tiny-flux": ("tiny", 16), "toy-small": ("toy-small", 32)}
#: Repetitions; the median is reported (the first one also warms up).
REPEATS = 3


def bench(name: str, samples: int, steps: int, chunk: int) -> dict[str, float]:
    path, size = MODELS[name]
    if path.startswith("toy"):
        from imgpref.toy.build import ensure_toy_model

        path = str(ensure_toy_model("small", progress=False))
    model = load_model("flux", path)
    params = attach_lora(model, LoraSettings(rank=8))
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    prompts = [world.prompt(world.split("train")[i % 8]) for i in range(samples)]
    cond = model.encode_prompts(prompts)
    shape = model.latent_shape(size, size)
    schedule = sampling_schedule(model, steps, size, size)
    sampler = StepSampler("sde")
    window = list(range(steps))
    rollout_s, train_s, first = [], [], 0.0
    for repeat in range(REPEATS):
        noise = torch.randn((samples, *shape), generator=torch.Generator().manual_seed(repeat))
        window_noise = step_noise(list(range(samples)), steps, shape)
        tick = time.perf_counter()
        roll = rollout(model, schedule, cond, noise, window_noise, window, sampler, chunk=chunk)
        rollout_s.append(time.perf_counter() - tick)
        advantages = torch.randn(samples)
        tick = time.perf_counter()
        for start in range(0, samples, chunk):
            rows = slice(start, start + chunk)
            for j, k in enumerate(window):
                lp, _, _ = step_log_prob(
                    model,
                    schedule,
                    k,
                    roll.latents[rows, k],
                    roll.latents[rows, k + 1],
                    index_cond(cond, rows),
                    sampler,
                )
                loss, metrics = clipped_policy_loss(lp, roll.log_prob[rows, j], advantages[rows], 1e-4)
                first = max(first, float((metrics["ratio"] - 1).abs().max()))
                (loss / (steps * (samples // chunk))).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        train_s.append(time.perf_counter() - tick)
        with torch.no_grad():  # undo the step so every repeat starts from the same policy
            for key, p in model.denoiser.named_parameters():
                if "lora_B" in key:
                    p.zero_()
    r, t = sorted(rollout_s)[REPEATS // 2], sorted(train_s)[REPEATS // 2]
    return {"rollout_images_per_s": samples / r, "rollout_s": r, "train_step_s": t, "train_images_per_s": samples / t,
            "ratio_first_update": first}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), help="models to time")
    parser.add_argument("--samples", type=int, default=32, help="images per rollout")
    parser.add_argument("--steps", type=int, default=8, help="sampling steps (all in the SDE window)")
    parser.add_argument("--chunk", type=int, default=16, help="samples per forward (rollout and training alike)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.samples} samples, {args.steps} steps, chunks of {args.chunk}, {args.threads} thread(s)")
    for name in args.models:
        result = bench(name, args.samples, args.steps, args.chunk)
        print(f"{name:10s} " + "  ".join(f"{k} {v:.4g}" for k, v in result.items()))


if __name__ == "__main__":
    main()
