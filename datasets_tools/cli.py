"""``imgpref data scan`` and ``imgpref data build``: clean a folder of subject photos into a manifest.

Register with ``add_data_commands(subparsers)`` from the top-level CLI.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

SCAN_HELP = "check a folder of subject photos: unreadable, small, padded, blurry, upscaled, duplicates, misfiled"
BUILD_HELP = "write a clean subject manifest (kept images, crops, prompts; rejects with reasons) from a scan"
LAYOUT = """\
input layout (one folder per subject; the folder name is the subject id):

  DIR/dog1/subject.json   optional: {"class_word": "dog", "token": "sks", "prompts": ["a photo of sks dog"]}
  DIR/dog1/*.jpg          the subject's photos (jpg, png, webp, bmp, tif, gif; sub-folders too)
  DIR/mug/...

or a DIR/subjects.jsonl listing the images instead, one JSON object per line:
  {"file_name": "photos/IMG_1.jpg", "subject": "dog1", "class_word": "dog"}

The input folder is only read, never modified.
"""
SCAN_EPILOG = (
    LAYOUT
    + """
output (--out): scan.jsonl (one record per file), summary.json (counts, settings, timing),
report.md and report.html (thumbnails grouped by problem), thumbs/.

settings: --config YAML and --set section.key=value, e.g. --set min_side=768
--set blur.max_edge_width_px=1.2 --set duplicates.max_distance=10 (sections: padding, blur, motion, upscale,
passband, jpeg, duplicates, outliers; defaults calibrated in bench/data.md).
"""
)
BUILD_EPILOG = """\
output (--out): manifest.jsonl (one line per kept image: file_name, subject, class_word, token,
prompts, crop_box, width, height, source, source_sha256), rejected.jsonl (file, subject, reasons),
manifest_info.json, report.md and images/<subject>/ with copies of the kept images. Read it with
datasets_tools.manifest.load_subject_manifest(DIR).

Rejected by default: unreadable, too_small, upscaled, blur, low_jpeg_quality, duplicate, outlier
(use --keep ISSUE to keep images with that issue). Padding is cropped (--crops apply) or recorded as
crop_box for the loader (--crops record).
"""
#: Print progress every this many images.
PROGRESS_EVERY = 100


def _data_errors() -> tuple[type[Exception], ...]:
    from datasets_tools.descriptors import DescriptorError
    from datasets_tools.layout import LayoutError
    from datasets_tools.manifest import ManifestError

    return (LayoutError, ManifestError, DescriptorError)


def _fail(command: str, err: Exception) -> int:
    print(f"imgpref data {command}: error: {err}", file=sys.stderr)
    return 2


def _cmd_scan(args: argparse.Namespace) -> int:
    from datasets_tools.config import ScanConfig
    from datasets_tools.report import write_scan
    from datasets_tools.scan import ISSUES, scan_folder
    from imgpref.config import load_config
    from imgpref.outdir import prepare_out_dir

    overrides = list(args.set or [])
    if args.clip_checkpoint:
        overrides.append(f"outliers.clip_checkpoint={args.clip_checkpoint}")
    if args.clip_model:
        overrides.append(f"outliers.clip_model={args.clip_model}")
    if args.workers:
        overrides.append(f"workers={args.workers}")
    cfg = load_config(ScanConfig, args.config, overrides)
    if not Path(args.dir).is_dir():
        raise FileNotFoundError(
            f"input folder {args.dir!r} not found; pass the folder holding one sub-folder per subject"
        )
    out, _ = prepare_out_dir(args.out, "data scan", resumable=False)
    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if done % PROGRESS_EVERY == 0 or done == total:
            rate = done / max(time.perf_counter() - start, 1e-9)
            print(f"  {done}/{total} images ({rate:.1f}/s)", file=sys.stderr)

    try:
        result = scan_folder(args.dir, cfg, progress=progress)
    except _data_errors() as err:
        return _fail("scan", err)
    summary = write_scan(result, out)
    counts = summary["counts"]
    print(f"{summary['images']} images in {len(result.subjects)} subjects, {summary['images_per_second']:.1f} images/s")
    for name, (title, rejects) in ISSUES.items():
        if counts[name]:
            print(f"  {counts[name]:6d}  {title}{'' if rejects else ' (cropped by data build)'}")
    print(f"  {counts['clean']:6d}  no problem")
    print(f"wrote {out / 'report.html'}, report.md, scan.jsonl, summary.json")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    from datasets_tools.manifest import build_manifest, read_scan
    from imgpref.outdir import prepare_out_dir

    try:
        read_scan(args.scan)  # fail on a wrong --scan before creating --out
    except _data_errors() as err:
        return _fail("build", err)
    out, _ = prepare_out_dir(args.out, "data build", resumable=False)
    try:
        result = build_manifest(
            args.scan,
            out,
            source=args.source,
            class_word=args.class_word,
            token=args.token,
            prompts=args.prompt,
            crops=args.crops,
            keep=tuple(args.keep or ()),
        )
    except _data_errors() as err:
        return _fail("build", err)
    print(f"kept {result.kept} images, rejected {result.rejected}")
    for sid, tally in sorted(result.per_subject.items()):
        print(f"  {sid}: {tally['kept']} kept, {tally['rejected']} rejected")
    if result.reasons:
        print("  rejected for: " + ", ".join(f"{k} {v}" for k, v in sorted(result.reasons.items())))
    print(f"wrote {out / 'manifest.jsonl'} (load with datasets_tools.manifest.load_subject_manifest)")
    return 0


def add_data_commands(sub: argparse._SubParsersAction) -> None:
    """Register ``imgpref data {scan,build}``."""
    data_help = "subject photo folders: scan for problems, build a clean manifest"
    data = sub.add_parser("data", help=data_help, description=data_help)
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", title="subcommands", required=True)
    formatter = argparse.RawDescriptionHelpFormatter

    scan = data_sub.add_parser(
        "scan", help=SCAN_HELP, description=SCAN_HELP, epilog=SCAN_EPILOG, formatter_class=formatter
    )
    scan.add_argument("dir", metavar="DIR", help="folder of subject photos (layout below)")
    scan.add_argument("--out", type=Path, required=True, help="output folder (new or empty)")
    scan.add_argument("--config", help="YAML file with scan settings")
    scan.add_argument("--set", action="append", metavar="KEY=VALUE", help="override one setting (repeatable)")
    scan.add_argument("--clip-checkpoint", help="local open_clip weights (file or folder) for subject grouping")
    scan.add_argument("--clip-model", help="open_clip architecture of a checkpoint file (default ViT-B-32)")
    scan.add_argument("--workers", type=int, help="processes analysing images in parallel (default 1)")
    scan.set_defaults(handler=_cmd_scan)

    build = data_sub.add_parser(
        "build", help=BUILD_HELP, description=BUILD_HELP, epilog=BUILD_EPILOG, formatter_class=formatter
    )
    build.add_argument("--scan", required=True, help="the --out folder of `imgpref data scan`")
    build.add_argument("--out", type=Path, required=True, help="manifest folder to write (new or empty)")
    build.add_argument("--source", help="the scanned folder, if it moved since the scan (default: as recorded)")
    build.add_argument("--class-word", help="class word for subjects whose subject.json sets none (e.g. dog)")
    build.add_argument("--token", help="identifier word for subjects that set none (default sks)")
    build.add_argument(
        "--prompt",
        action="append",
        help="prompt template for subjects that list none; {token}, {class_word}, {subject} are filled "
        "(repeatable; default 'a photo of {token} {class_word}')",
    )
    build.add_argument("--crops", choices=("apply", "record"), default="apply", help="crop padding now or record it")
    build.add_argument("--keep", action="append", metavar="ISSUE", help="keep images with this issue (repeatable)")
    build.set_defaults(handler=_cmd_build)
