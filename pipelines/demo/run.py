"""``imgpref demo``: the whole loop on the toy world in one command.

1. the toy model (built once and cached);
2. self-play pairs: by default the best against the worst of a few images of the full prompt, ranked
   by the judge (or winner from the full prompt, loser from a corrupted one, same initial noise)
   (:func:`pipelines.pairs.generate.generate_pairs`);
3. Diffusion-DPO on a LoRA (:func:`imgpref.train.dpo.train_dpo`);
4. base and tuned models judged on the same held-out (prompt, noise seed) samples;
5. ``report.md`` / ``report.html`` / ``summary.json`` with grids and training curves.

Every stage resumes: running the demo again on the same folder skips what is finished. The configs
each stage used are written into its folder, so any stage can be rerun by hand with other settings.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.utils import save_image

from imgpref.config import load_config
from imgpref.models.flux import FluxAdapter
from imgpref.models.lora import load_lora
from imgpref.outdir import atomic_write_text, prepare_out_dir
from imgpref.toy.build import ensure_toy_model
from imgpref.toy.evaluate import evaluate
from imgpref.toy.judge import judge_batch
from imgpref.toy.world import DEFAULT_CFG
from imgpref.train.dpo import train_dpo
from imgpref.train.dpo_config import DPOConfig
from imgpref.train.metrics_log import read_metrics
from imgpref.train.plots import plot_dpo_curves
from pipelines.demo.report import paired_test, side_by_side, write_report
from pipelines.demo.settings import DemoSettings
from pipelines.pairs.config import CORRUPTED_STRATEGIES, PairsConfig
from pipelines.pairs.generate import generate_pairs

COMMAND = "demo"


def _corruptions(s: DemoSettings) -> list[dict[str, Any]]:
    """The loser corruptions the chosen strategy uses (none for ranked pairs)."""
    return s.corruptions if s.strategy in CORRUPTED_STRATEGIES else []


def _pairs_config(s: DemoSettings, model_path: str) -> PairsConfig:
    overrides = [
        "model.family=flux",
        f"model.path={model_path}",
        f"prompts.n_pairs={s.pairs}",
        f"prompts.seed={s.seed}",
        f"generation.seed={s.seed}",
        "generation.batch_size=64",
        f"generation.cfg={s.pair_cfg}",
        f"generation.candidates={s.candidates}",
        f"strategy={s.strategy}",
        f"report.filter_not_better={str(s.filter_not_better).lower()}",
        f"corruptions={json.dumps(_corruptions(s))}",
    ]
    return load_config(PairsConfig, None, overrides)


def _dpo_config(s: DemoSettings, model_path: str, pairs_dir: Path) -> DPOConfig:
    overrides = [
        "model.family=flux",
        f"model.path={model_path}",
        "model.device=cpu",
        f"data.path={pairs_dir}",
        # The demo's pairs are its own: keep their encoded latents with them, not in the shared cache.
        f"data.cache_dir={pairs_dir.parent / 'latent_cache'}",
        f"dpo.beta={s.beta}",
        f"dpo.sft_weight={s.sft_weight}",
        "dpo.convention=diffusers",
        f"optim.lr={s.lr}",
        f"lora.rank={s.rank}",
        f"lora.alpha={s.rank}",
        f"train.max_steps={s.steps}",
        f"train.batch_size={s.batch_size}",
        f"train.seed={s.seed}",
        f"train.checkpoint_every={max(1, s.steps // 4)}",
        f"validation.every={max(1, s.steps // 4)}",
        f"validation.num_prompts={s.validation_prompts}",
    ]
    return load_config(DPOConfig, None, overrides)


def _evaluate(
    model: FluxAdapter, out: Path, name: str, s: DemoSettings, cfg: float
) -> tuple[dict, torch.Tensor, list[str]]:
    """Judge rates of one model at one guidance scale, cached in ``evaluation/`` so a rerun skips it."""
    folder = out / "evaluation"
    rates_file, images_file = folder / f"{name}_cfg{cfg:g}.json", folder / f"{name}_cfg{cfg:g}.pt"
    if rates_file.is_file() and images_file.is_file():
        saved = json.loads(rates_file.read_text())
        return saved, torch.load(images_file, weights_only=True)["images"], saved["prompts"]
    rates, images, prompts = evaluate(model, n=s.n_eval, seed=s.seed, cfg_scale=cfg, desc=f"{name}, CFG {cfg:g}")
    folder.mkdir(exist_ok=True)
    torch.save({"images": images}, images_file)
    atomic_write_text(rates_file, json.dumps({**rates, "prompts": prompts}, indent=1) + "\n")
    return {**rates, "prompts": prompts}, images, prompts


def _judge_all(model: FluxAdapter, out: Path, name: str, s: DemoSettings) -> dict[float, tuple]:
    return {cfg: _evaluate(model, out, name, s, cfg) for cfg in dict.fromkeys((DEFAULT_CFG, *s.extra_cfgs))}


def _correct(result: tuple) -> np.ndarray:
    _, images, prompts = result
    return judge_batch(images, prompts)["all_correct"]


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None) -> dict[str, Any]:
    """Run (or resume) the demo into ``out_dir``; returns the summary also written to ``summary.json``."""
    s = settings or DemoSettings()
    out, _ = prepare_out_dir(out_dir, COMMAND, resumable=True)
    seconds: dict[str, float] = {}
    start = time.perf_counter()

    print(f"[1/4] toy model ({s.toy_size}): built once, then cached")
    model_path = str(ensure_toy_model(s.toy_size))  # one toy model; --seed varies pairs, training, evaluation
    seconds["toy_model"] = time.perf_counter() - start

    how = {
        "ranked_generated": f"best against worst of {s.candidates} images of the full prompt, ranked by the judge",
        "generated_vs_corrupted": "winner = full prompt, loser = corrupted prompt, same noise",
    }.get(s.strategy, s.strategy)
    print(f"[2/4] {s.pairs} self-play pairs at CFG {s.pair_cfg:g}: {how}")
    tick = time.perf_counter()
    pairs_dir = out / "pairs"
    pair_summary = generate_pairs(_pairs_config(s, model_path), pairs_dir)
    seconds["pairs"] = time.perf_counter() - tick

    print(f"[3/4] Diffusion-DPO on a LoRA: beta {s.beta:g}, {s.steps} steps of {s.batch_size} pairs")
    tick = time.perf_counter()
    dpo_dir = out / "dpo"
    config = _dpo_config(s, model_path, pairs_dir)
    train_dpo(config, dpo_dir)
    seconds["dpo"] = time.perf_counter() - tick

    print(f"[4/4] judging base and tuned on the same {s.n_eval} held-out prompts and noise seeds")
    tick = time.perf_counter()
    model = FluxAdapter.from_pretrained(model_path)
    base_all = _judge_all(model, out, "base", s)
    load_lora(model, dpo_dir / "lora")
    tuned_all = _judge_all(model, out, "tuned", s)
    seconds["evaluation"] = time.perf_counter() - tick
    seconds["total"] = time.perf_counter() - start

    (base, base_images, _), (tuned, tuned_images, _) = base_all[DEFAULT_CFG], tuned_all[DEFAULT_CFG]
    by_cfg = {
        f"{cfg:g}": {
            "base": base_all[cfg][0]["all_correct"],
            "tuned": tuned_all[cfg][0]["all_correct"],
            "test": paired_test(_correct(base_all[cfg]), _correct(tuned_all[cfg])),
        }
        for cfg in base_all
    }
    side_by_side(base_images, tuned_images, out / "samples_base_vs_tuned.png")
    save_image(tuned_images[:64], out / "tuned_grid.png", nrow=8, padding=1)
    plot_dpo_curves(read_metrics(dpo_dir), out / "dpo_curves.png", title=f"DPO on toy {s.toy_size}, beta {s.beta:g}")
    strip = {k: v for k, v in base.items() if k != "prompts"}, {k: v for k, v in tuned.items() if k != "prompts"}
    summary = {
        "base": strip[0],
        "tuned": strip[1],
        "all_correct_test": by_cfg[f"{DEFAULT_CFG:g}"]["test"],
        "all_correct_by_cfg": by_cfg,
        "pairs": {k: v for k, v in pair_summary.items() if isinstance(v, (int, float, str))},
        "settings": {
            "toy_size": s.toy_size,
            "model": model_path,
            "pairs": s.pairs,
            "strategy": s.strategy,
            "candidates": s.candidates,
            "pair_cfg": s.pair_cfg,
            "corruptions": _corruptions(s),
            "filter_not_better": s.filter_not_better,
            "beta": s.beta,
            "sft_weight": s.sft_weight,
            "convention": config.dpo.convention,
            "steps": s.steps,
            "batch_size": s.batch_size,
            "lr": s.lr,
            "rank": s.rank,
            "seed": s.seed,
            "eval_cfg": DEFAULT_CFG,
            "pairs_dir": str(pairs_dir),
            "dpo_dir": str(dpo_dir),
        },
        "seconds": seconds,
    }
    write_report(out, summary)
    return summary
