"""Calibrate ``imgpref data scan``: inject each defect into clean synthetic subject photos, scan, score.

Builds a subject folder from procedural photos (:mod:`datasets_tools.synthetic`): clean shots (half PNG,
half JPEG at camera-like qualities 80-95, a third of them rendered larger and downscaled, as camera and
web photos are) and, from *other* shots so that the only duplicates are the intended ones:

- padding: letterbox / pillarbox / one side / frame, 3-20 % wide, black, white, grey, near-black, random;
- upscaled: shrunk and enlarged back by a factor drawn from [2, 4] (bilinear, bicubic, Lanczos);
- blur: Gaussian (sigma 1.5-3.5 px), defocus disc (radius 2-4 px) or motion (6-12 px), half of them with
  sensor noise added after the blur, as a camera would;
- duplicates: a clean shot copied with two or three small edits (crop, resize, tone, rotation, recompression);
- wrong subject: shots of one subject filed under another;
- low JPEG quality (20-60) and unreadable files (truncated, random bytes, empty).

Then it runs the scan at default settings (one process, one thread) and prints per-defect precision and
recall, a confusion table, breakdowns and the throughput. Precision of a detector counts every image it
flags that does not carry its defect, whatever else is wrong with it (so a blurry-looking upscale counts
against ``blur``); the "soft" row scores blur and upscaling together.

    OMP_NUM_THREADS=1 .venv/bin/python bench/data_calibration.py [--subjects 12] [--shots 10] [--size 512]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import io
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from datasets_tools import defects, synthetic
from datasets_tools.config import ScanConfig
from datasets_tools.scan import scan_folder
from imgpref.config import HelpFormatter

PAD_COLORS = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "near-black": (16, 16, 16)}
PAD_WIDTHS = (0.03, 0.06, 0.12, 0.2)
#: Share of clean shots rendered larger and downscaled (like camera and web photos).
DOWNSCALED_FRACTION = 1 / 3
CAMERA_QUALITY = (80, 96)
LOW_QUALITY = (20, 61)
DETECTORS = ("padding", "upscaled", "blur", "low_jpeg_quality", "unreadable", "outlier")


def encode(array: np.ndarray, quality: int | None) -> bytes:
    buffer = io.BytesIO()
    if quality is None:
        Image.fromarray(array).save(buffer, format="PNG")
    else:
        Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
    return buffer.getvalue()


class Builder:
    """Writes the calibration folder and remembers the ground truth of every file."""

    def __init__(self, root: Path, rng: np.random.Generator, size: int) -> None:
        self.root, self.rng, self.size = root, rng, size
        self.truth: dict[str, dict] = {}

    def shot(self, spec: synthetic.SubjectSpec) -> np.ndarray:
        width, height = synthetic.random_size(self.rng, self.size)
        if self.rng.random() < DOWNSCALED_FRACTION:
            factor = self.rng.uniform(1.2, 1.6)
            big = synthetic.render_shot(spec, self.rng, int(width * factor), int(height * factor))
            method = self.rng.choice([Image.LANCZOS, Image.BICUBIC, Image.BILINEAR, Image.BOX])
            return np.asarray(Image.fromarray(big).resize((width, height), method))
        return synthetic.render_shot(spec, self.rng, width, height)

    def codec(self) -> int | None:
        return None if self.rng.random() < 0.5 else int(self.rng.integers(*CAMERA_QUALITY))

    def write(self, subject: str, name: str, data: bytes, **truth) -> str:
        folder = self.root / subject
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        rel = f"{subject}/{name}"
        self.truth[rel] = {"subject": subject, **truth}
        return rel

    def image(self, subject: str, stem: str, array: np.ndarray, quality: int | None, **truth) -> str:
        suffix = ".png" if quality is None else ".jpg"
        return self.write(subject, stem + suffix, encode(array, quality), quality=quality, **truth)


def build(root: Path, n_subjects: int, shots: int, size: int, seed: int) -> Builder:
    rng = np.random.default_rng(seed)
    b = Builder(root, rng, size)
    specs = [synthetic.make_subject(rng, f"subject{i:02d}") for i in range(n_subjects)]
    for spec in specs:
        (root / spec.name).mkdir(parents=True)
        (root / spec.name / "subject.json").write_text(json.dumps({"class_word": spec.class_word}))
    clean = []
    for spec in specs:
        for k in range(shots):
            q = b.codec()
            arr = b.shot(spec)
            clean.append((b.image(spec.name, f"clean{k:02d}", arr, q, defect="clean"), arr, q))
    per = max(1, n_subjects * shots // 2)  # images per injected defect
    for i in range(per):  # padding
        spec = specs[i % n_subjects]
        layout = list(defects.PAD_LAYOUTS)[i % len(defects.PAD_LAYOUTS)]
        width = PAD_WIDTHS[(i // len(defects.PAD_LAYOUTS)) % len(PAD_WIDTHS)]
        names = [*PAD_COLORS, "random"]
        color_name = names[i % len(names)]
        color = PAD_COLORS.get(color_name) or tuple(int(c) for c in rng.integers(0, 256, 3))
        padded, box = defects.add_padding(b.shot(spec), defects.PAD_LAYOUTS[layout], width, color)
        b.image(spec.name, f"pad{i:03d}", padded, b.codec(), defect="padding", box=list(box), pad=color_name)
    for i in range(per):  # upscaling
        spec = specs[i % n_subjects]
        factor, method = float(rng.uniform(2, 4)), str(rng.choice(list(defects.UPSCALE_FILTERS)))
        arr = defects.downscale_upscale(b.shot(spec), factor, method)
        b.image(spec.name, f"up{i:03d}", arr, b.codec(), defect="upscaled", factor=factor, method=method)
    for i in range(per):  # blur
        spec = specs[i % n_subjects]
        arr, kind = b.shot(spec), ("gaussian", "gaussian", "defocus", "motion")[i % 4]
        if kind == "gaussian":
            arr = defects.gaussian_blur(arr, float(rng.uniform(1.5, 3.5)))
        elif kind == "defocus":
            arr = defects.defocus_blur(arr, float(rng.uniform(2, 4)))
        else:
            arr = defects.motion_blur(arr, int(rng.integers(6, 13)), float(rng.uniform(0, 180)))
        noisy = bool((i // 4) % 2)
        if noisy:
            arr = defects.add_noise(arr, float(rng.uniform(*synthetic.NOISE_RANGE)), rng)
        b.image(spec.name, f"blur{i:03d}", arr, b.codec(), defect="blur", kind=kind + (" + noise" if noisy else ""))
    order = rng.permutation(len(clean))
    for i in range(per // 2):  # near-duplicates of clean shots
        original, arr, _ = clean[order[i]]
        copy, edits = defects.near_duplicate(arr, rng)
        subject = b.truth[original]["subject"]
        b.image(subject, f"dup{i:03d}", copy, b.codec(), defect="duplicate", of=original, edits=edits)
    for i in range(max(2, n_subjects)):  # shots filed under the wrong subject
        spec, home = specs[i % n_subjects], specs[(i + 1 + i // n_subjects) % n_subjects]
        b.image(home.name, f"misfiled{i:03d}", b.shot(spec), b.codec(), defect="misfiled", really=spec.name)
    for i in range(max(3, per // 4)):  # low JPEG quality
        spec = specs[i % n_subjects]
        q = int(rng.integers(*LOW_QUALITY))
        b.image(spec.name, f"lowq{i:03d}", b.shot(spec), q, defect="low_jpeg_quality")
    for i in range(max(3, per // 8)):  # unreadable
        spec = specs[i % n_subjects]
        kind = ("truncated", "random bytes", "empty")[i % 3]
        if kind == "truncated":
            data = defects.truncate(encode(b.shot(spec), b.codec() or 90), float(rng.uniform(0.3, 0.9)))
        elif kind == "random bytes":
            data = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
        else:
            data = b""
        b.write(spec.name, f"broken{i:03d}.jpg", data, defect="unreadable", kind=kind)
    return b


DEFECT_OF_ISSUE = {
    "padding": "padding",
    "upscaled": "upscaled",
    "blur": "blur",
    "low_jpeg_quality": "low_jpeg_quality",
    "unreadable": "unreadable",
    "outlier": "misfiled",
}


def pr(tp: int, fp: int, fn: int) -> tuple[float, float]:
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    return precision, recall


def score(truth: dict[str, dict], records: list[dict]) -> dict:
    by_file = {r["file"]: r for r in records}
    rows = {}
    for issue, defect in DEFECT_OF_ISSUE.items():
        tp = sum(1 for f, t in truth.items() if t["defect"] == defect and issue in by_file[f]["issues"])
        fn = sum(1 for f, t in truth.items() if t["defect"] == defect and issue not in by_file[f]["issues"])
        fp = sum(1 for f, t in truth.items() if t["defect"] != defect and issue in by_file[f]["issues"])
        rows[issue] = (tp, fp, fn)
    soft = {"blur", "upscaled"}
    tp = sum(1 for f, t in truth.items() if t["defect"] in soft and soft & set(by_file[f]["issues"]))
    fn = sum(1 for f, t in truth.items() if t["defect"] in soft and not soft & set(by_file[f]["issues"]))
    fp = sum(1 for f, t in truth.items() if t["defect"] not in soft and soft & set(by_file[f]["issues"]))
    rows["soft (blur or upscaled)"] = (tp, fp, fn)
    # Duplicates, scored on pairs: a true pair is (original, edited copy); a found pair is two files of one group.
    true_pairs = {frozenset((t["of"], f)) for f, t in truth.items() if t["defect"] == "duplicate"}
    found = set()
    for record in records:
        if "duplicate_of" in record:
            found.add(frozenset((record["file"], record["duplicate_of"])))
    groups = [set(g) for g in _groups(records)]
    found_any = {p for p in true_pairs if any(p <= g for g in groups)}
    false_pairs = {p for p in found if not any(p == q for q in true_pairs)}
    rows["duplicate (pairs)"] = (len(found_any), len(false_pairs), len(true_pairs) - len(found_any))
    return rows


def _groups(records: list[dict]) -> list[list[str]]:
    groups = defaultdict(set)
    for r in records:
        if "duplicate_of" in r:
            groups[r["duplicate_of"]].update((r["file"], r["duplicate_of"]))
    return [sorted(g) for g in groups.values()]


def confusion(truth: dict[str, dict], records: list[dict]) -> list[str]:
    by_file = {r["file"]: r for r in records}
    issues = ["padding", "upscaled", "blur", "low_jpeg_quality", "duplicate", "outlier", "unreadable"]
    kinds = ["clean", "padding", "upscaled", "blur", "duplicate", "misfiled", "low_jpeg_quality", "unreadable"]
    lines = ["| injected \\ flagged | n | " + " | ".join(issues) + " |", "|---|---:|" + "---:|" * len(issues)]
    for kind in kinds:
        files = [f for f, t in truth.items() if t["defect"] == kind]
        cells = [f"{sum(i in by_file[f]['issues'] for f in files) / len(files):.0%}" for i in issues]
        lines.append(f"| {kind} | {len(files)} | " + " | ".join(cells) + " |")
    return lines


def breakdown(truth: dict[str, dict], records: list[dict]) -> list[str]:
    by_file = {r["file"]: r for r in records}
    lines = ["| defect | condition | n | detected |", "|---|---|---:|---:|"]

    def row(defect: str, issue: str, label: str, keep) -> None:
        files = [f for f, t in truth.items() if t["defect"] == defect and keep(t)]
        if files:
            hit = sum(issue in by_file[f]["issues"] for f in files)
            lines.append(f"| {defect} | {label} | {len(files)} | {hit / len(files):.0%} |")

    for codec, is_png in (("PNG", True), ("JPEG 80-95", False)):
        row("upscaled", "upscaled", codec, lambda t, p=is_png: (t["quality"] is None) == p)
        for method in defects.UPSCALE_FILTERS:
            row(
                "upscaled",
                "upscaled",
                f"{codec}, {method}",
                lambda t, p=is_png, m=method: (t["quality"] is None) == p and t["method"] == m,
            )
    row("upscaled", "blur", "flagged blur instead (JPEG)", lambda t: t["quality"] is not None)
    by_soft_trace = [
        f for f, t in truth.items() if "soft, with a resampling" in by_file[f]["issues"].get("upscaled", "")
    ]
    for defect in ("upscaled", "blur", "clean"):
        n = sum(truth[f]["defect"] == defect for f in by_soft_trace)
        lines.append(f"| {defect} | flagged upscaled by a resampling peak on a soft image (any hf_ratio) | {n} | - |")
    by_shape = [f for f, t in truth.items() if "pass-band" in by_file[f]["issues"].get("upscaled", "")]
    for defect in ("upscaled", "blur", "clean"):
        n = sum(truth[f]["defect"] == defect for f in by_shape)
        lines.append(f"| {defect} | flagged upscaled by the pass-band shape (soft, no trace) | {n} | - |")
    by_direction = [f for f, t in truth.items() if "motion blur" in by_file[f]["issues"].get("blur", "")]
    for defect in ("blur", "upscaled", "clean", "padding"):
        n = sum(truth[f]["defect"] == defect for f in by_direction)
        lines.append(f"| {defect} | flagged blur by the directional (motion) test | {n} | - |")
    for kind in ("gaussian", "gaussian + noise", "defocus", "defocus + noise", "motion", "motion + noise"):
        row("blur", "blur", kind, lambda t, k=kind: t["kind"] == k)
    for color in [*PAD_COLORS, "random"]:
        row("padding", "padding", f"{color} bars", lambda t, c=color: t["pad"] == c)
    row("padding", "padding", "JPEG", lambda t: t["quality"] is not None)
    row("clean", "upscaled", "clean, downscaled or not: flagged upscaled", lambda t: True)
    row("clean", "blur", "clean: flagged blur", lambda t: True)
    row("clean", "padding", "clean: flagged padding", lambda t: True)
    return lines


def crop_accuracy(truth: dict[str, dict], records: list[dict]) -> str:
    by_file = {r["file"]: r for r in records}
    errors = []
    for f, t in truth.items():
        if t["defect"] == "padding" and "padding" in by_file[f]["issues"]:
            errors.append(max(abs(a - b) for a, b in zip(by_file[f]["crop_box"], t["box"], strict=True)))
    errors = np.array(errors)
    return (
        f"crop box of found padding: {np.mean(errors == 0):.0%} exact, {np.mean(errors <= 2):.0%} within 2 px, "
        f"worst {errors.max()} px (n={errors.size})"
    )


def jpeg_accuracy(truth: dict[str, dict], records: list[dict]) -> str:
    by_file = {r["file"]: r for r in records}
    exact = [
        by_file[f]["jpeg_quality"]["quality"] == t["quality"]
        for f, t in truth.items()
        if t.get("quality") is not None and by_file[f].get("jpeg_quality")
    ]
    return f"JPEG quality estimate exact on {np.mean(exact):.0%} of {len(exact)} PIL-written JPEGs"


def throughput(short_sides: list[int], n: int, seed: int) -> list[str]:
    """Images/s of the per-image checks on one core for JPEG photos (q 90, 4:3) of the given short sides."""
    from datasets_tools.layout import ImageEntry
    from datasets_tools.scan import analyze_image

    rng = np.random.default_rng(seed)
    spec = synthetic.make_subject(rng, "timing")
    lines = ["| photo size | megapixels | images/s (one core) |", "|---|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "timing").mkdir()
        for short in short_sides:
            width, height = round(short * 4 / 3), short
            # Rendering is slow at large sizes and the timing only needs realistic content: render at
            # most 768 px and enlarge (the checks' cost does not depend on what the pixels show).
            base = synthetic.render_shot(spec, rng, min(width, 1024), min(height, 768))
            array = np.asarray(Image.fromarray(base).resize((width, height), Image.BICUBIC))
            entries = []
            for i in range(n):
                name = f"{short}_{i}.jpg"
                (root / "timing" / name).write_bytes(encode(array, 90))
                entries.append(ImageEntry(file=f"timing/{name}", subject="timing"))
            cfg = ScanConfig()
            analyze_image(root, entries[0], cfg)  # warm-up (imports, caches)
            start = time.perf_counter()
            for entry in entries:
                analyze_image(root, entry, cfg)
            rate = n / (time.perf_counter() - start)
            lines.append(f"| {width}x{height} | {width * height / 1e6:.1f} | {rate:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--subjects", type=int, default=12, help="synthetic subjects")
    parser.add_argument("--shots", type=int, default=10, help="clean shots per subject")
    parser.add_argument("--size", type=int, default=512, help="short side of the photos")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic photo set")
    parser.add_argument(
        "--keep", type=Path, help="also keep the generated folder and scan records here (with --rescan: the records)"
    )
    parser.add_argument(
        "--rescan",
        type=Path,
        help="instead of generating, scan a folder kept by --keep (subjects/, truth.json) with the current code",
    )
    parser.add_argument(
        "--throughput", default="512,1024,3024", help="short sides (comma-separated) to time the checks at; '' skips"
    )
    args = parser.parse_args()

    if args.rescan:
        truth_file = args.rescan / "truth.json"
        if not truth_file.is_file():
            raise SystemExit(f"--rescan {args.rescan}: no truth.json there (make the folder with --keep)")
        truth, made = json.loads(truth_file.read_text()), 0.0
        result = scan_folder(args.rescan / "subjects", ScanConfig())
        records = result.records
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            (args.keep / "scan.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "subjects"
            start = time.perf_counter()
            builder = build(root, args.subjects, args.shots, args.size, args.seed)
            made = time.perf_counter() - start
            result = scan_folder(root, ScanConfig())
            records = result.records
            if args.keep:
                import shutil

                shutil.copytree(root, args.keep / "subjects", dirs_exist_ok=True)
                (args.keep / "scan.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
                (args.keep / "truth.json").write_text(json.dumps(builder.truth, indent=1))
        truth = builder.truth
    n = len(records)
    rate = n / result.seconds["per_image_checks"]
    print(
        f"{n} images ({args.subjects} subjects, short side {args.size} px) generated in {made:.0f} s; "
        f"scan {result.seconds['total']:.1f} s: {rate:.1f} images/s for the per-image checks on one core, "
        f"{n / result.seconds['total']:.1f} images/s including duplicates and outliers\n"
    )
    print("| defect | images with it | TP | FP | FN | precision | recall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (tp, fp, fn) in score(truth, records).items():
        p, r = pr(tp, fp, fn)
        print(f"| {name} | {tp + fn} | {tp} | {fp} | {fn} | {p:.1%} | {r:.1%} |")
    print()
    print(crop_accuracy(truth, records) + "; " + jpeg_accuracy(truth, records) + "\n")
    print("\n".join(confusion(truth, records)) + "\n")
    print("\n".join(breakdown(truth, records)))
    if args.throughput:
        print()
        print("\n".join(throughput([int(v) for v in args.throughput.split(",")], 5, args.seed)))


if __name__ == "__main__":
    main()
