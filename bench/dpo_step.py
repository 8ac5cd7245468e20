"""Benchmark: imgpref's Diffusion-DPO step against a naive step, side by side in one run.

- ours: cached latents and prompt embeddings, winner and loser in one concatenated forward, the
  reference = the same network with the LoRA disabled (no second copy), under no_grad;
- naive: a second full copy of the denoiser as the reference, VAE-encodes the images and the text
  encoders encode the prompts every step, and runs winner and loser in separate forwards (4 forwards).

Both compute the same loss on the same batch. Each variant runs in its own subprocess, so the peak
memory (CPU: peak resident set size; CUDA: ``torch.cuda.max_memory_allocated``) is its own.

    python bench/dpo_step.py                       # tiny FLUX and the toy small model, CPU
    python bench/dpo_step.py --model flux-full --device cuda --size 1024 --batch 1   # GPU, bf16

``flux-wide`` (FLUX width, 2 + 4 blocks) shows the memory of a second reference copy on a CPU.
``flux-full`` is a random-init transformer with the FLUX.1-dev configuration (19 double + 38 single
blocks, 24 heads of 128), LoRA rank 32 on attention; MFU is reported on CUDA from the formula of
DESIGN.md section 7 (forward ≈ 2·P·S + 4·L·S²·d FLOPs; backward ≈ 2× forward).
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time

import torch

from imgpref.config import HelpFormatter

VARIANTS = ("ours", "naive")
#: Dense bf16 peak of an H100/H200 SXM (FLOP/s), for MFU.
PEAK_BF16 = {"H100": 989e12, "H200": 989e12}


def build(model_name: str, device: str, dtype: torch.dtype):
    from imgpref.models import load_model

    if model_name == "tiny":
        return load_model("flux", "tiny", device=device, dtype=dtype)
    if model_name == "toy-small":
        from imgpref.toy.build import ensure_toy_model

        return load_model("flux", str(ensure_toy_model("small")), device=device, dtype=dtype)
    if model_name == "flux-full":
        return _flux_full(device, dtype)
    if model_name == "flux-wide":
        return _flux_full(device, dtype, double_blocks=2, single_blocks=4)
    raise SystemExit(f"unknown --model {model_name!r}")


def _flux_full(device: str, dtype: torch.dtype, double_blocks: int = 19, single_blocks: int = 38):
    """FLUX.1-dev-sized transformer (random init) inside the tiny pipeline's other parts; ``flux-wide``
    keeps FLUX's width (24 heads of 128) with fewer blocks (~1.3 B parameters), to show the reference
    copy's memory on a CPU."""
    from diffusers import FluxTransformer2DModel

    from imgpref.models import load_model

    model = load_model("flux", "tiny", device=device, dtype=dtype)
    text_dim = model.pipe.text_encoder_2.config.d_model
    pooled_dim = model.pipe.text_encoder.config.hidden_size
    with torch.device(device):
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=model.pipe.transformer.config.in_channels,
            num_layers=double_blocks,
            num_single_layers=single_blocks,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=text_dim,
            pooled_projection_dim=pooled_dim,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        ).to(dtype)
    model.pipe.transformer = transformer
    return model


def flops_per_pair(model, size: int) -> float:
    """Model FLOPs of one DPO pair: policy forward+backward on 2 samples, reference forward on 2."""
    denoiser = model.denoiser
    params = sum(p.numel() for p in denoiser.parameters())
    _, h, w = model.latent_shape(size, size)
    tokens = (h // 2) * (w // 2) + model.max_sequence_length
    cfg = denoiser.config
    layers = cfg.num_layers + cfg.num_single_layers
    d = cfg.num_attention_heads * cfg.attention_head_dim
    forward = 2 * params * tokens + 4 * layers * tokens**2 * d
    return 2 * (forward * 3) + 2 * forward  # per sample: fwd + bwd (2x); two samples; plus reference fwd


def run_variant(args: argparse.Namespace) -> dict:
    from imgpref.losses import diffusion_dpo_loss, per_sample_error
    from imgpref.models.lora import attach_lora
    from imgpref.models.settings import LoraSettings
    from imgpref.train.dpo import Batch, pair_errors, reference_errors

    torch.manual_seed(0)
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model = build(args.model, args.device, dtype)
    b, size = args.batch, args.size
    images_w = torch.rand(b, 3, size, size, device=args.device)
    images_l = torch.rand(b, 3, size, size, device=args.device)
    prompts = ["a red circle at the top left on a white background"] * b
    reference = copy.deepcopy(model.denoiser).requires_grad_(False) if args.variant == "naive" else None
    if args.gradient_checkpointing:
        model.denoiser.enable_gradient_checkpointing()
    params = attach_lora(model, LoraSettings(rank=args.rank, alpha=args.rank))
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    with torch.no_grad():  # ours: encoded once, outside the timed loop (the cache)
        cached = Batch(
            model.encode_images(images_w),
            model.encode_images(images_l),
            torch.full((b,), 0.5, device=args.device),
            torch.randn_like(model.encode_images(images_w)),
            model.encode_prompts(prompts),
        )

    def step_ours() -> None:
        ref_w, ref_l = reference_errors(model, cached)
        err_w, err_l, _, _ = pair_errors(model, cached)
        loss, _ = diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, 2500.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def step_naive() -> None:
        with torch.no_grad():
            x_w, x_l = model.encode_images(images_w), model.encode_images(images_l)
            cond = model.encode_prompts(prompts)
        t, noise = cached.t, cached.noise
        errs = {}
        for name, x0 in (("w", x_w), ("l", x_l)):
            x_t = model.schedule.add_noise(x0, noise, t).to(dtype)
            target = model.schedule.target(x0, noise, t).float()
            model.set_forward_module(reference)
            with torch.no_grad():
                errs[f"ref_{name}"] = per_sample_error(model.predict(x_t, t, cond).float(), target)
            model.set_forward_module(None)
            errs[f"pol_{name}"] = per_sample_error(model.predict(x_t, t, cond).float(), target)
        loss, _ = diffusion_dpo_loss(errs["pol_w"], errs["pol_l"], errs["ref_w"], errs["ref_l"], 2500.0)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step = step_ours if args.variant == "ours" else step_naive
    for _ in range(args.warmup):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    if args.device == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    result = {"variant": args.variant, "pairs_per_s": b / seconds, "step_s": seconds}
    if args.device == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        name = torch.cuda.get_device_name()
        peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
        if peak:
            result["mfu"] = flops_per_pair(model, size) * b / seconds / peak
    else:
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    models = "tiny, toy-small, flux-wide, flux-full"
    parser.add_argument("--model", nargs="+", default=["tiny", "toy-small"], help=models)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in backward")
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)  # one variant (subprocess)
    args = parser.parse_args()
    if args.variant:
        args.model = args.model[0]
        print(json.dumps(run_variant(args)))
        return
    rows = []
    for model_name in args.model:
        results = {}
        for variant in VARIANTS:
            cmd = [sys.executable, __file__, "--variant", variant, "--model", model_name, "--device", args.device]
            cmd += ["--size", str(args.size), "--batch", str(args.batch), "--rank", str(args.rank)]
            cmd += ["--steps", str(args.steps), "--warmup", str(args.warmup)]
            if args.gradient_checkpointing:
                cmd.append("--gradient-checkpointing")
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            results[variant] = json.loads(out)
        ours, naive = results["ours"], results["naive"]
        mem = "peak_mem_gib" if "peak_mem_gib" in ours else "peak_rss_gib"
        row = {
            "model": model_name,
            "ours_pairs_per_s": ours["pairs_per_s"],
            "naive_pairs_per_s": naive["pairs_per_s"],
            "speedup": ours["pairs_per_s"] / naive["pairs_per_s"],
            f"ours_{mem}": ours[mem],
            f"naive_{mem}": naive[mem],
            "memory_ratio": naive[mem] / ours[mem],
        }
        if "mfu" in ours:
            row["ours_mfu"] = ours["mfu"]
        rows.append(row)
        print(json.dumps(row))
    print(f"\n| model | ours pairs/s | naive pairs/s | speed-up | ours peak {mem} | naive peak | memory ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['model']} | {r['ours_pairs_per_s']:.1f} | {r['naive_pairs_per_s']:.1f} | {r['speedup']:.2f}x | "
            f"{r[f'ours_{mem}']:.2f} | {r[f'naive_{mem}']:.2f} | {r['memory_ratio']:.2f}x |"
        )


if __name__ == "__main__":
    main()
