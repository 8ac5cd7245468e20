"""``imgpref demo``: the README's main command."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from imgpref.config import HelpFormatter

DEMO_HELP = (
    "toy model -> self-play pairs -> Diffusion-DPO LoRA -> before/after report "
    "(2 CPU cores: ~4 min, ~9 with the first toy build)"
)
DEMO_DESCRIPTION = f"""{DEMO_HELP}.

Builds (once) the toy FLUX-family model, generates preference pairs (the best against the worst of 4
of its own images of each prompt, ranked by the toy judge), trains a DPO LoRA, judges base and tuned
models on the same held-out prompts and noise seeds, and writes OUT/report.md, OUT/report.html and
OUT/summary.json.
Running it again on the same --out resumes where it stopped.
"""


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo.run import run_demo
    from pipelines.demo.settings import DemoSettings

    settings = DemoSettings(
        toy_size=args.size,
        pairs=args.pairs,
        beta=args.beta,
        steps=args.steps,
        lr=args.lr,
        n_eval=args.n_eval,
        seed=args.seed,
    )
    summary = run_demo(args.out, settings)
    base, tuned, test = summary["base"], summary["tuned"], summary["all_correct_test"]
    print(
        f"all_correct {base['all_correct']:.3f} -> {tuned['all_correct']:.3f} "
        f"(shape {base['shape_acc']:.3f} -> {tuned['shape_acc']:.3f}; paired test p = {test['p_value']:.2g}); "
        f"{summary['seconds']['total']:.0f} s"
    )
    print(f"report: {Path(args.out) / 'report.html'} (and report.md, summary.json)")
    return 0


def add_demo_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``imgpref demo``."""
    from pipelines.demo.settings import DemoSettings

    d = DemoSettings()
    defaults = {f.name: getattr(d, f.name) for f in dataclasses.fields(d)}
    demo = sub.add_parser("demo", help=DEMO_HELP, description=DEMO_DESCRIPTION, formatter_class=HelpFormatter)
    demo.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder")
    demo.add_argument("--size", choices=("small", "micro"), default=defaults["toy_size"], help="toy model size")
    demo.add_argument("--pairs", type=int, default=defaults["pairs"], help="preference pairs to generate")
    demo.add_argument("--beta", type=float, default=defaults["beta"], help="DPO beta (diffusers convention)")
    demo.add_argument("--steps", type=int, default=defaults["steps"], help="DPO optimiser steps")
    demo.add_argument("--lr", type=float, default=defaults["lr"], help="LoRA learning rate")
    demo.add_argument("--n-eval", type=int, default=defaults["n_eval"], help="held-out samples judged")
    demo.add_argument("--seed", type=int, default=defaults["seed"], help="seed of pairs, training and evaluation")
    demo.set_defaults(handler=_cmd_demo)
