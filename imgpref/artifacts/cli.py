"""``imgpref artifacts scan DIR [--reference DIR] --out OUT``: score a folder of images for artifacts."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from imgpref.artifacts.defaults import DEFAULT_MAX_SIZE, DEFAULT_PERIODS

SCAN_HELP = "score images for grid/checkerboard textures, darkening and desaturation; writes scan.json and a report"
SCAN_EPILOG = """\
Without --reference each image is scored alone: only grid textures are flagged (a dark picture is not
an artifact by itself). With --reference every image is compared with the reference image at the same
relative path (the base model's image for the same prompt and seed): grids the base also has cancel,
and darkening, desaturation and crushed blacks are flagged too. Unreadable files are listed and
skipped. Thresholds are calibrated (bench/artifacts.md); change one with e.g. --set grid_fold=6.
"""
#: Offenders shown in the report by default.
DEFAULT_TOP = 12


def _cmd_scan(args: argparse.Namespace) -> int:
    from imgpref.artifacts.defaults import ArtifactThresholds
    from imgpref.artifacts.report import write_report
    from imgpref.artifacts.scan import ScanSettings, scan_folder
    from imgpref.config import ConfigError, load_config
    from imgpref.outdir import atomic_write_text, prepare_out_dir

    try:
        thresholds = load_config(ArtifactThresholds, None, args.set)
        settings = ScanSettings(periods=tuple(args.periods), max_size=args.max_size, thresholds=thresholds)
    except ValueError as err:
        raise ConfigError(f"artifacts scan: {err}") from None
    if not args.directory.is_dir():
        raise FileNotFoundError(f"image folder {str(args.directory)!r} not found; pass an existing folder")
    out, _ = prepare_out_dir(args.out, "artifacts scan", resumable=False)

    def progress(i: int, n: int) -> None:
        if sys.stderr.isatty():
            print(f"\rscanning {i + 1}/{n}", end="", file=sys.stderr, flush=True)

    scan = scan_folder(args.directory, args.reference, settings, exclude=out, progress=progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    atomic_write_text(out / "scan.json", json.dumps(scan, indent=1) + "\n")
    md, page = write_report(scan, out, top=args.top)
    summary = scan["summary"]
    by_flag = ", ".join(f"{k}: {v}" for k, v in summary["by_flag"].items()) or "none"
    print(f"scored {summary['images']} images ({summary['skipped']} skipped), {summary['flagged']} flagged ({by_flag})")
    for skipped in scan["skipped"]:
        print(f"  skipped {skipped['file']}: {skipped['error']}")
    print(f"wrote {out / 'scan.json'}, {md} and {page}")
    return 1 if args.strict and summary["flagged"] else 0


def add_artifacts_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``imgpref artifacts scan``."""
    artifacts_help = "detect grid/checkerboard textures, darkening and desaturation"
    artifacts = sub.add_parser("artifacts", help=artifacts_help, description=artifacts_help)
    artifacts_sub = artifacts.add_subparsers(
        dest="artifacts_command", metavar="SUBCOMMAND", title="subcommands", required=True
    )
    scan = artifacts_sub.add_parser(
        "scan",
        help=SCAN_HELP,
        description=SCAN_HELP,
        epilog=SCAN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    scan.add_argument("directory", type=Path, metavar="DIR", help="folder of images (searched recursively)")
    scan.add_argument("--reference", type=Path, metavar="DIR", help="base images with the same relative paths")
    scan.add_argument("--out", type=Path, required=True, help="new or empty folder for scan.json and the report")
    scan.add_argument(
        "--periods",
        type=int,
        nargs="+",
        default=list(DEFAULT_PERIODS),
        metavar="PX",
        help=f"grid periods in pixels (default {' '.join(map(str, DEFAULT_PERIODS))})",
    )
    scan.add_argument(
        "--max-size",
        type=int,
        default=DEFAULT_MAX_SIZE,
        metavar="PX",
        help=f"centre-crop larger images to this side for the grid spectrum (default {DEFAULT_MAX_SIZE})",
    )
    scan.add_argument(
        "--top", type=int, default=DEFAULT_TOP, help=f"offenders shown in the report (default {DEFAULT_TOP})"
    )
    scan.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a threshold (see scan.json 'settings'), e.g. --set grid_fold=6",
    )
    scan.add_argument("--strict", action="store_true", help="exit with status 1 when any image is flagged")
    scan.set_defaults(handler=_cmd_scan)
