"""Train the toy model from scratch on the world's renders and cache it (``imgpref toy build``).

Two phases, both rectified-flow standard practice at toy scale:

1. the autoencoder learns to reconstruct renders (MSE + ½·L1, posterior mean, no KL: the latents are
   normalised afterwards and the shift/scale stored in the VAE config so the pipeline decodes them);
2. the FLUX transformer learns rectified flow on those latents with logit-normal t (Esser et al.
   2024, arXiv 2403.03206) and 10 % empty prompts, so classifier-free guidance works at sampling.

The text encoders stay frozen at their random init (a learned embedding was not needed). Everything
is a function of the seed and the CPU kernels, which :mod:`imgpref.toy.kernels` pins by building in a
child process; the result is saved with ``save_pretrained`` into the cache atomically.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from imgpref.models.flux import FluxAdapter
from imgpref.toy import world
from imgpref.toy.cache import cache_root
from imgpref.toy.kernels import current_settings, kernels_pinned, pinned_settings
from imgpref.toy.model import SIZES, ToySize, build_untrained_pipeline

logger = logging.getLogger(__name__)

#: Image side of the toy world in pixels.
IMAGE_SIZE = 32
#: Share of training prompts replaced by the empty prompt (needed for classifier-free guidance).
EMPTY_PROMPT_RATE = 0.1
#: Optimiser settings measured on this world: 4e-3 for the transformer learned colour and shape clearly
#: faster than 2e-3 at the same step budget (the autoencoder's rate is per size: ToySize.vae_lr).
TRANSFORMER_LR = 4e-3
ADAM_BETAS, WEIGHT_DECAY, GRAD_CLIP, WARMUP_STEPS = (0.9, 0.99), 0.01, 1.0, 50
#: Weight of the L1 term of the autoencoder loss (sharper edges than MSE alone).
L1_WEIGHT = 0.5
#: Batch size when encoding the training set to latents.
ENCODE_BATCH = 256


def toy_size(size: str) -> ToySize:
    """The spec of a toy size by name, or an error listing the sizes."""
    if size not in SIZES:
        raise ValueError(f"unknown toy size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]


def toy_model_dir(size: str = "small", seed: int = 0) -> Path:
    """Cache folder of a toy model: keyed by the size's version, the size and the seed."""
    return cache_root() / f"toy-v{toy_size(size).version}-{size}-seed{seed}"


def ensure_toy_model(size: str = "small", seed: int = 0, *, progress: bool = True) -> Path:
    """The cached toy model's folder, building it first if it is not there (in a child process with the
    pinned CPU kernels of :mod:`imgpref.toy.kernels`, unless this process already runs with them)."""
    path = toy_model_dir(size, seed)
    if (path / "model_index.json").is_file():
        _warn_if_other_kernels(path)
        return path
    if kernels_pinned():
        build_toy_model(size, seed, path, progress=progress)
        return path
    toy_size(size)  # an unknown size fails here, with its message, not in the child
    cmd = [sys.executable, "-m", "imgpref.toy.build", "--size", size, "--seed", str(seed)]
    child = subprocess.run([*cmd, *([] if progress else ["--quiet"])], env={**os.environ, **pinned_settings()})
    if child.returncode != 0 or not (path / "model_index.json").is_file():
        raise RuntimeError(f"the toy {size} build (seed {seed}) failed with exit code {child.returncode}; see above")
    return path


def recorded_kernels(path: Path) -> dict[str, str]:
    """The kernel settings a toy model folder was built with (empty when not recorded)."""
    report = path / "toy_build.json"
    return json.loads(report.read_text()).get("cpu_kernels", {}) if report.is_file() else {}


def _warn_if_other_kernels(path: Path) -> None:
    """A cached model built before the kernels were pinned (or with others) is kept, with a warning."""
    used = recorded_kernels(path)
    if used != pinned_settings():
        logger.warning(
            "the cached toy model %s was built with other CPU kernels (%s), so it may differ from the model "
            "other machines build from this seed; delete the folder to rebuild it",
            path,
            used or "not recorded",
        )


def render_dataset(n: int, seed: int) -> tuple[torch.Tensor, list[str]]:
    """``n`` renders (uint8 N×3×H×W) of uniformly drawn attributes, with their prompts."""
    rng = np.random.default_rng(seed)
    attrs = [world.sample_attributes(rng) for _ in range(n)]
    images = np.stack([world.render(a, rng, size=IMAGE_SIZE) for a in attrs])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), [world.prompt(a) for a in attrs]


def _optimizer(params, lr: float, steps: int):
    opt = torch.optim.AdamW(params, lr=lr, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY)

    def factor(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < WARMUP_STEPS:
            return (step + 1) / WARMUP_STEPS
        return max(0.0, (steps - step) / max(1, steps - WARMUP_STEPS))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _update(opt, sched, module: torch.nn.Module, loss: torch.Tensor) -> float:
    """One optimiser step with gradient clipping and the lr schedule; returns the loss value."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), GRAD_CLIP)
    opt.step()
    sched.step()
    return loss.item()


def _signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 renders to the autoencoder's input range [-1, 1]."""
    return images.float() / 255 * 2 - 1


def train_autoencoder(adapter: FluxAdapter, images: torch.Tensor, size: ToySize, seed: int, progress: bool) -> float:
    """Fit the VAE to reconstruct renders; returns the final loss."""
    vae = adapter.pipe.vae.train().requires_grad_(True)
    opt, sched = _optimizer(vae.parameters(), size.vae_lr, size.vae_steps)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(size.vae_steps), desc="toy build: autoencoder", disable=not progress, unit="step")
    for _ in bar:
        idx = torch.randint(len(images), (size.vae_batch,), generator=gen)
        x = _signed(images[idx])
        recon = vae.decode(vae.encode(x).latent_dist.mode()).sample
        loss = F.mse_loss(recon, x) + L1_WEIGHT * F.l1_loss(recon, x)
        last = _update(opt, sched, vae, loss)
        bar.set_postfix(loss=f"{last:.4f}")
    vae.eval().requires_grad_(False)
    return last


@torch.no_grad()
def encode_dataset(adapter: FluxAdapter, images: torch.Tensor) -> torch.Tensor:
    """Encode all renders and store the latent shift/scale in the VAE config; returns normalised latents."""
    vae = adapter.pipe.vae
    raw = torch.cat(
        [
            vae.encode(_signed(images[i : i + ENCODE_BATCH])).latent_dist.mode()
            for i in range(0, len(images), ENCODE_BATCH)
        ]
    )
    shift, scale = raw.mean().item(), 1.0 / raw.std().item()
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    return (raw - shift) * scale


def train_transformer(
    adapter: FluxAdapter, latents: torch.Tensor, prompts: list[str], size: ToySize, seed: int, progress: bool
) -> float:
    """Rectified-flow training of the transformer on cached latents and prompt embeddings."""
    unique = [*sorted(set(prompts)), ""]
    table = adapter.encode_prompts(unique)  # every prompt of the world, encoded once
    index = {p: i for i, p in enumerate(unique)}
    prompt_ids = torch.tensor([index[p] for p in prompts])
    empty_id = index[""]

    transformer = adapter.denoiser.train().requires_grad_(True)
    opt, sched = _optimizer(transformer.parameters(), TRANSFORMER_LR, size.transformer_steps)
    gen = torch.Generator().manual_seed(seed)
    bar = tqdm(range(size.transformer_steps), desc="toy build: transformer", disable=not progress, unit="step")
    for _ in bar:
        idx = torch.randint(len(latents), (size.batch,), generator=gen)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(size.batch, generator=gen))  # logit-normal(0, 1)
        ids = torch.where(torch.rand(size.batch, generator=gen) < EMPTY_PROMPT_RATE, empty_id, prompt_ids[idx])
        cond = {k: v[ids] for k, v in table.items()}
        pred = adapter.predict(adapter.schedule.add_noise(x0, noise, t), t, cond)
        loss = F.mse_loss(pred, adapter.schedule.target(x0, noise, t))
        last = _update(opt, sched, transformer, loss)
        bar.set_postfix(loss=f"{last:.4f}")
    transformer.eval().requires_grad_(False)
    return last


def build_toy_model(size: str, seed: int, dest: str | Path, *, progress: bool = True) -> dict:
    """Train a toy model and save it to ``dest`` (written aside, then renamed: never half-written)."""
    spec, dest = toy_size(size), Path(dest)
    times: dict[str, float] = {}
    start = time.perf_counter()
    adapter = FluxAdapter(build_untrained_pipeline(spec, seed))

    images, prompts = render_dataset(spec.renders, seed)
    times["render_s"] = time.perf_counter() - start
    vae_loss = train_autoencoder(adapter, images, spec, seed, progress)
    times["autoencoder_s"] = time.perf_counter() - start - sum(times.values())
    latents = encode_dataset(adapter, images)
    times["encode_s"] = time.perf_counter() - start - sum(times.values())
    flow_loss = train_transformer(adapter, latents, prompts, spec, seed, progress)
    times["transformer_s"] = time.perf_counter() - start - sum(times.values())

    report = {
        "version": spec.version,
        "size": size,
        "seed": seed,
        "image_size": IMAGE_SIZE,
        "autoencoder_loss": vae_loss,
        "flow_loss": flow_loss,
        "parameters": {
            "transformer": sum(p.numel() for p in adapter.denoiser.parameters()),
            "vae": sum(p.numel() for p in adapter.pipe.vae.parameters()),
        },
        "seconds": {k: round(v, 1) for k, v in times.items()},
        "cpu_kernels": current_settings(),
    }
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    adapter.pipe.save_pretrained(tmp)
    report["seconds"]["total"] = round(time.perf_counter() - start, 1)
    (tmp / "toy_build.json").write_text(json.dumps(report, indent=2) + "\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():  # another process finished the same build first: keep theirs
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, dest)
    return report


def main(argv: list[str] | None = None) -> None:
    """``python -m imgpref.toy.build``: the child process of :func:`ensure_toy_model` (users run
    ``imgpref toy build``)."""
    parser = argparse.ArgumentParser(prog="python -m imgpref.toy.build", description=main.__doc__)
    parser.add_argument("--size", required=True, help="toy size (micro or small)")
    parser.add_argument("--seed", type=int, required=True, help="seed of data, init and training")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    build_toy_model(args.size, args.seed, toy_model_dir(args.size, args.seed), progress=not args.quiet)


if __name__ == "__main__":
    main()
