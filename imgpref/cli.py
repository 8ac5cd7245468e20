"""The ``imgpref`` command line: one subcommand per job, heavy imports only inside the job.

This module is the top floor: it may dispatch into ``imgpref``, ``pipelines`` and ``datasets_tools``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from datasets_tools.cli import add_data_commands
from imgpref.artifacts.cli import add_artifacts_commands
from imgpref.sweep.cli import add_sweep_commands
from imgpref.toy.cli import add_toy_commands
from imgpref.train.cli import add_train_commands
from pipelines.demo.cli import add_demo_commands
from pipelines.pairs.cli import add_pairs_commands

EPILOG = """\
Everything runs offline: models load from local folders only (a hub id is refused, never
downloaded). `imgpref COMMAND --help` explains each command and its options.
"""


def _cmd_env(args: argparse.Namespace) -> int:
    from imgpref.env import describe

    print(describe())
    return 0


def _cmd_families(args: argparse.Namespace) -> int:
    from imgpref.models import FAMILIES, get_family

    for name in FAMILIES:
        cls = get_family(name)
        ref = "reference image + prompt" if cls.takes_reference_image else "prompt"
        print(f"{name:16s} {cls.pipeline_class.__name__:30s} conditioned on {ref}")
        print(f"{'':16s} LoRA targets: {', '.join(cls.default_lora_targets)}")
    return 0


#: name → (one-line help, function adding arguments or None, handler).
Command = tuple[str, Callable[[argparse.ArgumentParser], None] | None, Callable[[argparse.Namespace], int]]

COMMANDS: dict[str, Command] = {
    "env": ("print versions of the stack, the device and whether the hub is offline", None, _cmd_env),
    "families": ("list the model families, their pipeline classes and default LoRA targets", None, _cmd_families),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgpref",
        description="Preference-tune diffusion models (FLUX, Qwen-Image, SD) with LoRA: Diffusion-DPO, "
        "GRPO/GDPO, self-play preference data, artifact checks.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    add_demo_commands(sub)
    for name, (help_text, add_args, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if add_args is not None:
            add_args(p)
        p.set_defaults(handler=handler)
    add_toy_commands(sub)
    add_train_commands(sub)
    add_sweep_commands(sub)
    add_artifacts_commands(sub)
    add_data_commands(sub)
    add_pairs_commands(sub)
    return parser


def command_name(args: argparse.Namespace) -> str:
    """The command as typed, subcommand included ("imgpref toy eval"), for one-line messages."""
    sub = getattr(args, f"{args.command}_command", None)
    return " ".join(["imgpref", args.command, *([sub] if sub else [])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 0 if args.command is None else 2
    from imgpref.errors import USER_ERRORS

    try:
        return int(args.handler(args) or 0)
    except USER_ERRORS as err:
        # Problems with the user's input: one clear line, no traceback (IMGPREF_DEBUG=1 shows it).
        if os.environ.get("IMGPREF_DEBUG"):
            raise
        print(f"{command_name(args)}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command_name(args)}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
