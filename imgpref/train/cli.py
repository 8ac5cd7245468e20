"""``imgpref train dpo`` and ``imgpref train grpo``: the training recipes on the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

from imgpref.config import PRINT_CONFIG_HELP, load_cli_config

DPO_HELP = "Diffusion-DPO on a LoRA from a preference-pair folder (metadata.jsonl + images)"
DPO_DESCRIPTION = f"""{DPO_HELP}.

The config is a YAML file (presets in configs/dpo/) plus any number of --set section.key=value
overrides, e.g. --set dpo.beta=5000 --set train.max_steps=500. The output folder gets config.yaml,
metrics.jsonl, TensorBoard events (tensorboard --logdir OUT/tensorboard), checkpoints/ and lora/
(diffusers format). Running the same command on the same --out resumes from the last checkpoint;
SIGTERM (or Ctrl-C once) saves a checkpoint and exits.

Several processes or GPUs: accelerate launch --config_file configs/accelerate/ddp.yaml -m imgpref.cli train ...
"""


#: What a recipe's --out folder is (named when it is missing).
OUT_ROLE = "the run's output folder (new, or an earlier run to resume)"


def _cmd_dpo(args: argparse.Namespace) -> int:
    from imgpref.train.dpo_config import DPOConfig

    config = load_cli_config(DPOConfig, args, OUT_ROLE)
    if config is None:
        return 0
    from imgpref.train.dpo import train_dpo

    summary = train_dpo(config, args.out, progress=not args.quiet)
    return 0 if summary["stopped"] != "interrupted" else 143


GRPO_HELP = "image GRPO/GDPO on a LoRA: SDE rollouts with log-probs, rewards, group advantages"
GRPO_DESCRIPTION = f"""{GRPO_HELP}.

The config is a YAML file (presets in configs/grpo/) plus any number of --set section.key=value
overrides, e.g. --set grpo.advantage=gdpo --set rollout.group_size=16; rewards are a list,
e.g. --set 'rewards=[{{name: toy_all_correct}}, {{name: luma_band, weight: 0.5}}]'. The output folder
gets config.yaml, metrics.jsonl, TensorBoard events, checkpoints/ and lora/ (diffusers format).
Running the same command on the same --out resumes from the last checkpoint; SIGTERM (or Ctrl-C
once) saves a checkpoint and exits.
"""


def _cmd_grpo(args: argparse.Namespace) -> int:
    from imgpref.train.grpo_config import GRPOConfig

    config = load_cli_config(GRPOConfig, args, OUT_ROLE)
    if config is None:
        return 0
    from imgpref.train.grpo import train_grpo

    summary = train_grpo(config, args.out, progress=not args.quiet)
    return 0 if summary["stopped"] != "interrupted" else 143


def _recipe_arguments(parser: argparse.ArgumentParser, presets: str) -> None:
    parser.add_argument("--config", type=Path, help=f"YAML config (presets: {presets})")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)"
    )
    parser.add_argument("--out", type=Path, help="output folder (new, or an earlier run to resume); required to train")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--print-config", action="store_true", help=PRINT_CONFIG_HELP)


def add_train_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``imgpref train dpo`` and ``imgpref train grpo``."""
    train_help = "training recipes: Diffusion-DPO (dpo) and image GRPO/GDPO (grpo) on a LoRA"
    train = sub.add_parser("train", help=train_help, description=train_help)
    train_sub = train.add_subparsers(dest="train_command", metavar="RECIPE", title="recipes", required=True)
    dpo = train_sub.add_parser(
        "dpo", help=DPO_HELP, description=DPO_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _recipe_arguments(dpo, "configs/dpo/*.yaml")
    dpo.set_defaults(handler=_cmd_dpo)
    grpo = train_sub.add_parser(
        "grpo", help=GRPO_HELP, description=GRPO_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _recipe_arguments(grpo, "configs/grpo/*.yaml")
    grpo.set_defaults(handler=_cmd_grpo)
