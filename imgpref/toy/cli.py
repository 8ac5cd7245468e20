"""``imgpref toy build`` and ``imgpref toy eval``: the built-in toy model and its exact evaluation."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from imgpref.config import HelpFormatter
from imgpref.toy.cache import TOY_SIZES
from imgpref.toy.world import DEFAULT_CFG, DEFAULT_STEPS

BUILD_HELP = "train (or fetch from the cache) the toy FLUX-family model; prints its folder"
EVAL_HELP = "judge a model (optionally with a LoRA) on held-out toy prompts; writes eval.json and a grid"
#: Samples shown in the evaluation grid.
GRID_SAMPLES = 64


def resolve_toy_path(model: str, size: str = "small", seed: int = 0) -> Path:
    """``toy`` → the cached toy model of ``size`` (built when missing); anything else is a local path."""
    from imgpref.models.base import resolve_local_path
    from imgpref.toy.build import ensure_toy_model

    if model == "toy":
        return ensure_toy_model(size, seed)
    return resolve_local_path(model)


def _cmd_build(args: argparse.Namespace) -> int:
    from imgpref.outdir import prepare_out_dir
    from imgpref.toy.build import ensure_toy_model, toy_model_dir

    cached = (toy_model_dir(args.size, args.seed) / "model_index.json").is_file()
    if args.out is not None:
        prepare_out_dir(args.out, "toy build", resumable=False)
    path = ensure_toy_model(args.size, args.seed)
    report = json.loads((path / "toy_build.json").read_text())
    if args.out is not None:
        shutil.copytree(path, args.out, dirs_exist_ok=True)
        path = Path(args.out)
    state = "cached" if cached else f"built in {report['seconds']['total']:.0f} s"
    print(f"toy model ({args.size}, seed {args.seed}, {state}): {path}")
    print(f"  load it with FluxPipeline.from_pretrained({str(path)!r}) or --set model.path={path}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from torchvision.utils import save_image

    from imgpref.models.flux import FluxAdapter
    from imgpref.models.lora import load_lora
    from imgpref.outdir import atomic_write_text, prepare_out_dir
    from imgpref.toy.evaluate import EVAL_KEYS, evaluate

    out, _ = prepare_out_dir(args.out, "toy eval", resumable=False)
    path = resolve_toy_path(args.model, args.size, args.toy_seed)
    model = FluxAdapter.from_pretrained(path, device=args.device)
    if args.lora is not None:
        load_lora(model, args.lora)
    rates, images, prompts = evaluate(
        model, n=args.n, seed=args.seed, cfg_scale=args.cfg, num_steps=args.steps, batch_size=args.batch_size
    )
    settings = {"model": str(path), "lora": args.lora, "seed": args.seed, "cfg": args.cfg, "steps": args.steps}
    atomic_write_text(out / "eval.json", json.dumps({**rates, "settings": settings}, indent=2) + "\n")
    save_image(images[:GRID_SAMPLES], out / "grid.png", nrow=8, padding=1)
    atomic_write_text(out / "prompts.txt", "\n".join(prompts[:GRID_SAMPLES]) + "\n")
    print("  ".join(f"{k}={rates[k]:.3f}" if k != "n" else f"n={rates[k]}" for k in EVAL_KEYS))
    print(f"wrote {out / 'eval.json'} and {out / 'grid.png'} (first {GRID_SAMPLES} samples, prompts.txt)")
    return 0


def add_toy_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``imgpref toy {build,eval}``."""
    toy_help = "the built-in toy world: build its model, evaluate models on it"
    toy = sub.add_parser("toy", help=toy_help, description=toy_help)
    toy_sub = toy.add_subparsers(dest="toy_command", metavar="SUBCOMMAND", title="subcommands", required=True)

    build = toy_sub.add_parser("build", help=BUILD_HELP, description=BUILD_HELP, formatter_class=HelpFormatter)
    build.add_argument("--size", choices=TOY_SIZES, default="small", help="micro: tests (~1.5 min); small: the demo's")
    build.add_argument("--seed", type=int, default=0, help="seed of data, init and training")
    build.add_argument("--out", type=Path, help="also copy the model here (without it: only the cache)")
    build.set_defaults(handler=_cmd_build)

    ev = toy_sub.add_parser("eval", help=EVAL_HELP, description=EVAL_HELP, formatter_class=HelpFormatter)
    ev.add_argument("--model", default="toy", help="pipeline folder, or 'toy' for the cached toy model")
    ev.add_argument("--size", choices=TOY_SIZES, default="small", help="toy size when --model toy")
    ev.add_argument(
        "--toy-seed",
        type=int,
        default=0,
        help="build seed of the toy model when --model toy (0: the model recipes get from model.path=toy)",
    )
    ev.add_argument("--lora", help="LoRA folder saved by imgpref (diffusers format) to load on top")
    ev.add_argument("--n", type=int, default=256, help="number of (prompt, noise seed) samples")
    ev.add_argument("--seed", type=int, default=0, help="evaluation seed: same seed, same prompts and noise")
    ev.add_argument("--cfg", type=float, default=DEFAULT_CFG, help="classifier-free guidance scale")
    ev.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="sampling steps")
    ev.add_argument("--batch-size", type=int, default=64, help="images per generation batch")
    ev.add_argument("--device", default="cpu", help="cpu or cuda (the toy model is small: cpu is enough)")
    ev.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    ev.set_defaults(handler=_cmd_eval)
