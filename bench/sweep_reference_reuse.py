"""Benchmark: a β sweep with the reference errors computed once and reused, against recomputing them in
every run (the same K runs, same draws, same results), side by side in one process.

Per step a run does one reference forward (no_grad, LoRA off) and one policy forward + backward; the
reference forward does not depend on β, so a sweep of K runs needs it once per micro-batch instead of
K times. Validation is off so only training is timed; the latent cache and the model are warmed first.

    OMP_NUM_THREADS=1 python bench/sweep_reference_reuse.py                     # toy micro, 4 runs
    OMP_NUM_THREADS=1 python bench/sweep_reference_reuse.py --model tiny --steps 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from pair_folders import make_pair_folder

from imgpref.config import HelpFormatter, load_config
from imgpref.sweep.config import SweepConfig
from imgpref.sweep.run import run_sweep

#: ``--model`` choices → ``model.path``.
MODELS = {"tiny": "tiny", "toy-micro": "toy-micro", "toy-small": "toy"}


def sweep(args: argparse.Namespace, root: Path, reuse: bool, betas: list[float]) -> SweepConfig:
    overrides = [
        f"base.data.path={root / 'pairs'}",
        f"base.data.cache_dir={root / 'cache'}",
        f"base.model.path={MODELS[args.model]}",
        f"base.model.device={args.device}",
        f"base.train.batch_size={args.batch}",
        f"base.train.max_steps={args.steps}",
        "base.train.checkpoint_every=0",
        "base.lora.rank=8",
        f"grid={{dpo.beta: {betas}}}",
        f"reuse_reference={str(reuse).lower()}",
    ]
    return load_config(SweepConfig, None, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="toy-micro", help="model of every run")
    parser.add_argument("--runs", type=int, default=4, help="K: runs in the sweep (betas 10, 100, 1000, ...)")
    parser.add_argument("--steps", type=int, default=30, help="steps per run")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--pairs", type=int, default=64, help="pairs in the synthetic pair folder")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    betas = [float(10 ** (1 + i)) for i in range(args.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_pair_folder(root / "pairs", args.pairs)
        warm = sweep(args, root, True, betas[:1])
        warm.base["train"]["max_steps"] = 1
        run_sweep(warm, root / "warm", progress=False)  # builds the model, fills the latent cache
        seconds = {}
        for reuse in (True, False):
            tick = time.perf_counter()
            summary = run_sweep(sweep(args, root, reuse, betas), root / f"reuse-{reuse}", progress=False)
            seconds[reuse] = time.perf_counter() - tick
            if reuse:
                reference_s = summary["reference"]["seconds"]
    saved = seconds[False] - seconds[True]
    print(
        f"\n{args.model}: {args.runs} runs x {args.steps} steps x {args.batch} pairs, {args.device}, "
        f"{args.threads} thread(s)\n"
        f"| reuse (reference once) | recompute per run | saving | reference once |\n|---|---|---|---|\n"
        f"| {seconds[True]:.1f} s | {seconds[False]:.1f} s | {saved:.1f} s ({saved / seconds[False]:.0%}), "
        f"{seconds[False] / seconds[True]:.2f}x | {reference_s:.1f} s |"
    )


if __name__ == "__main__":
    main()
