"""``imgpref pairs generate``: write a preference dataset of (winner, loser) pairs from a base model.

Register with ``add_pairs_commands(subparsers)`` from the top-level CLI.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imgpref.config import PRINT_CONFIG_HELP, load_cli_config

GENERATE_HELP = "generate a preference dataset (winner/loser image pairs + metadata.jsonl) with a base model"
STRATEGIES_TEXT = """\
strategies (strategy=...):
  generated_vs_corrupted  both sides generated from the same initial noise; the loser with the corrupted
                          conditioning (default; the base model already prefers the winner)
  gt_vs_generated         winner = ground truth (toy renderer or subject manifest image), loser = the
                          model's image with the full conditioning
  gt_vs_corrupted         winner = ground truth, loser generated with the corrupted conditioning
  ranked_generated        generation.candidates images of the full conditioning from independent noise,
                          ranked by the verdict (toy judge or CLIP): best = winner, worst = loser
"""
OUTPUT_TEXT = """\
output (--out, resumable: re-run the same command to finish an interrupted run):
  metadata.jsonl     one pair per line: prompt, chosen_file_name, rejected_file_name, seed, strategy,
                     corruption [{name, params}], model, guidance, steps, reference_file_name,
                     winner_better, verdict, margin, base_error (ranked_generated: ranking with every
                     candidate's seed and score)
  images/            000123_chosen.png, 000123_rejected.png (and _reference.png)
  pair_quality.json  per strategy and corruption: winner-better rate, ties, base-model margin e_l - e_w
  pair_quality.md    (distribution, share already right); filtered.jsonl with report.filter_not_better
  pairs_config.yaml  the resolved config
Load it with datasets.load_dataset("imagefolder", data_dir=OUT) (columns chosen, rejected).
Several processes: accelerate launch (or torchrun --nproc_per_node P) -m imgpref.cli pairs generate ...
(process i takes pairs i, i+P, ...; process 0 merges). A larger prompts.n_pairs on an existing --out
adds pairs; other config changes are refused.

examples:
  imgpref pairs generate --config configs/pairs/toy_generic_prompt.yaml --out runs/pairs
  imgpref pairs generate --config configs/pairs/toy_generic_prompt.yaml --set prompts.n_pairs=64 \\
      --set 'corruptions=[{name: low_guidance, params: {scale: 1.0}}]' --out runs/pairs_lowcfg
"""


def _epilog() -> str:
    from pipelines.pairs.corruptions import describe

    return (
        "config sections: model, prompts, strategy, corruptions, generation, report (see configs/pairs/).\n\n"
        + STRATEGIES_TEXT
        + "\ncorruptions (corruptions=[{name: ..., params: {...}}], applied in order):\n"
        + describe()
        + "\n\n"
        + OUTPUT_TEXT
    )


def _cmd_generate(args: argparse.Namespace) -> int:
    from imgpref.outdir import prepare_out_dir
    from pipelines.pairs.config import PairsConfig
    from pipelines.pairs.errors import PairsError

    config = load_cli_config(PairsConfig, args, "the dataset folder (new, empty, or an earlier run to resume)")
    if config is None:
        return 0
    from pipelines.pairs.generate import generate_pairs, process_state  # torch and diffusers: after the config

    state = process_state(config)
    out = Path(args.out)
    try:
        # One process claims the folder; the others wait so they never see it half-claimed.
        if state.is_main_process:
            out, resumed = prepare_out_dir(args.out, "pairs generate", resumable=True)
            if resumed:
                print(f"resuming in {out}", file=sys.stderr)
        state.wait_for_everyone()
        summary = generate_pairs(config, out, progress=not args.no_progress)
    except PairsError as err:
        print(f"imgpref pairs generate: error: {err}", file=sys.stderr)
        return 2
    if summary["rank"] != 0:
        return 0
    rate = summary["pairs_per_second"]
    split = f" (sampling {summary['generation_seconds']:.1f} s, quality {summary['quality_seconds']:.1f} s)"
    print(
        f"{summary['generated']} pairs generated, {summary['resumed']} already there"
        + (f", {rate:.2f} pairs/s{split}" if rate else "")
        + f"; metadata.jsonl holds {summary['kept']} pairs"
        + (f" ({summary['filtered']} filtered to filtered.jsonl)" if summary["filtered"] else "")
    )
    for row in summary["quality"]["groups"]:
        margin = row["margin"] or {}
        better = row.get("winner_better")
        text = f"  {row['strategy']} / {row['corruption']}: n={row['n']}"
        if better is not None:
            text += f", winner better {better:.3f} (tie {row['tie']:.3f}, {row['verdict_source']})"
        if margin:
            text += f", margin mean {margin['mean']:.4g}, already right {margin['already_right']:.3f}"
        print(text)
    print(f"wrote {out / 'metadata.jsonl'}, images/, pair_quality.md")
    return 0


def add_pairs_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``imgpref pairs generate``."""
    pairs_help = "self-play preference pairs for Diffusion-DPO"
    pairs = sub.add_parser("pairs", help=pairs_help, description=pairs_help)
    pairs_sub = pairs.add_subparsers(dest="pairs_command", metavar="SUBCOMMAND", title="subcommands", required=True)
    gen = pairs_sub.add_parser(
        "generate",
        help=GENERATE_HELP,
        description=GENERATE_HELP,
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("--config", type=Path, help="YAML config (presets in configs/pairs/); defaults without it")
    gen.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set prompts.n_pairs=64 --set model.path=DIR (repeatable)",
    )
    gen.add_argument(
        "--out", type=Path, help="dataset folder (new, empty, or an earlier run to resume); required to generate"
    )
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    gen.add_argument("--print-config", action="store_true", help=PRINT_CONFIG_HELP)
    gen.set_defaults(handler=_cmd_generate)
