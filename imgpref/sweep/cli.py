"""``imgpref sweep``: a grid of Diffusion-DPO runs (β and any dotted config key) with a comparison report."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "grid of DPO runs (beta and any dotted config key) with shared reference errors and a report"
DESCRIPTION = f"""{HELP}.

The config is a YAML file (presets in configs/sweeps/) plus --set overrides of the sweep config,
e.g. --set base.data.path=runs/pairs_toy --set 'grid={{dpo.beta: [10, 1000]}}' --set parallel=2.
Every run trains in OUT/runs/<name>/ (e.g. OUT/runs/dpo.beta=1000/) with the same data order, draws
and validation prompts; the reference model's errors are computed once (OUT/reference/) and reused.
OUT/report.md, OUT/report.html, OUT/summary.json and OUT/plots/ compare the runs. Running the same
command on the same --out resumes: finished runs are skipped, an interrupted run resumes from its checkpoint.
"""


def _cmd_sweep(args: argparse.Namespace) -> int:
    from imgpref.config import load_config
    from imgpref.sweep.config import SweepConfig
    from imgpref.sweep.grid import expand_grid

    config = load_config(SweepConfig, args.config, args.set)
    expand_grid(config)  # every run's DPO config is checked before torch and diffusers load
    from imgpref.sweep.run import run_sweep

    summary = run_sweep(config, args.out, progress=not args.quiet)
    print(f"sweep: best run {summary['best']}; report in {Path(args.out) / 'report.html'}")
    return 0


def add_sweep_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``imgpref sweep``."""
    parser = sub.add_parser(
        "sweep", help=HELP, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="YAML sweep config (presets: configs/sweeps/*.yaml)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a sweep config key (repeatable)"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (new, or an earlier sweep to resume)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.set_defaults(handler=_cmd_sweep)
