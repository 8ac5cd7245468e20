"""Judge a model on held-out toy prompts and noise seeds (``imgpref toy eval``).

The evaluation set is a pure function of (n, seed): prompts cycle through the world's held-out
combinations in a seeded order and each sample has its own noise seed, so base and tuned models are
compared on exactly the same (prompt, initial noise) pairs, whatever the batch size.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from imgpref.models.base import FamilyAdapter
from imgpref.toy import world
from imgpref.toy.judge import judge_batch
from imgpref.toy.world import DEFAULT_CFG, DEFAULT_STEPS

#: Keys of ``eval.json`` (and of the ``base``/``tuned`` objects of the demo's summary).
EVAL_KEYS = ("n", "color_acc", "shape_acc", "position_acc", "background_acc", "all_correct", "mean_luma")
#: Offset separating evaluation noise seeds from any seed used to make training data.
EVAL_SEED_OFFSET = 1_000_000


def eval_set(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` held-out prompts (seeded order, cycling) and one noise seed per sample."""
    heldout = world.split("heldout")
    order = np.random.default_rng(seed).permutation(len(heldout))
    prompts = [world.prompt(heldout[order[i % len(heldout)]]) for i in range(n)]
    return prompts, [EVAL_SEED_OFFSET + seed * n + i for i in range(n)]


def sample_noise(model: FamilyAdapter, seeds: Sequence[int], height: int, width: int) -> torch.Tensor:
    """Initial noise with one seed per sample (independent of batching)."""
    return torch.cat([model.initial_noise(1, height, width, s) for s in seeds])


def generate_for(
    model: FamilyAdapter,
    prompts: Sequence[str],
    seeds: Sequence[int],
    *,
    size: int = world.REFERENCE_SIZE,
    cfg_scale: float = DEFAULT_CFG,
    num_steps: int = DEFAULT_STEPS,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "generating",
) -> torch.Tensor:
    """Images (N×3×H×W in [0, 1], on the CPU) for each (prompt, noise seed)."""
    out = []
    for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress, unit="batch"):
        batch_prompts = prompts[start : start + batch_size]
        noise = sample_noise(model, seeds[start : start + batch_size], size, size)
        images = model.generate(
            batch_prompts, height=size, width=size, num_steps=num_steps, cfg_scale=cfg_scale, noise=noise
        )
        out.append(images.cpu())
    return torch.cat(out)


def score(images: torch.Tensor, prompts: Sequence[str]) -> dict[str, float]:
    """The judge's rates over a batch, with the keys of :data:`EVAL_KEYS`."""
    verdict = judge_batch(images, list(prompts))
    return {
        "n": len(prompts),
        "color_acc": float(verdict["color"].mean()),
        "shape_acc": float(verdict["shape"].mean()),
        "position_acc": float(verdict["position"].mean()),
        "background_acc": float(verdict["background"].mean()),
        "all_correct": float(verdict["all_correct"].mean()),
        "mean_luma": float(verdict["mean_luma"].mean()),
    }


def evaluate(
    model: FamilyAdapter,
    n: int = 256,
    seed: int = 0,
    *,
    cfg_scale: float = DEFAULT_CFG,
    num_steps: int = DEFAULT_STEPS,
    batch_size: int = 64,
    progress: bool = True,
    desc: str = "generating",
) -> tuple[dict[str, float], torch.Tensor, list[str]]:
    """Generate the evaluation set and judge it: (rates, images, prompts)."""
    prompts, seeds = eval_set(n, seed)
    images = generate_for(
        model,
        prompts,
        seeds,
        cfg_scale=cfg_scale,
        num_steps=num_steps,
        batch_size=batch_size,
        progress=progress,
        desc=desc,
    )
    return score(images, prompts), images, prompts
