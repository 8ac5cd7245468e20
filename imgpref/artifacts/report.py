"""The scanner's readable report: ``report.md`` and ``report.html`` next to ``scan.json``.

At a glance: how many images were scanned, skipped and flagged (per detector), the thresholds, the worst
offenders with thumbnails (whole image, and a 1:1 centre crop magnified with nearest-neighbour so that
pixel-scale grids stay visible; the reference beside it when there is one), the spectrum of the worst
grid-flagged image with its lattice points marked, and the skipped files with their errors. Images are
written under ``thumbs/`` and linked relative to the report, so the folder can be moved as a whole.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgpref.artifacts.defaults import ArtifactThresholds
from imgpref.artifacts.grid import grid_scores, lattice_points, windowed_residual
from imgpref.artifacts.measure import grid_periods
from imgpref.artifacts.scan import read_image
from imgpref.outdir import atomic_write_text

#: Longest side of a thumbnail (px).
THUMB_SIDE = 256
#: Side of the centre crop shown at 1:1 (px) and its nearest-neighbour magnification.
DETAIL_SIDE = 96
DETAIL_ZOOM = 3
SPECTRUM_CAPTION = (
    "log |FFT| of the high-passed, windowed luma, zero frequency in the centre. Circles: the lattice points "
    "of the grid periods, red where the peak stands out of its neighbours by grid_ratio or more; "
    "a grid shows as bright dots on the circles."
)
#: Score columns of the offenders table, in order, when present.
_TONE_COLUMNS = ("mean_luma_change", "saturation_change", "crushed_black_change", "mean_luma", "colorfulness")


def severity(entry: dict, thresholds: ArtifactThresholds) -> tuple[int, float]:
    """Sort key, worst first: number of flags, then the largest grid score relative to its threshold."""
    scores = entry["scores"]
    differential = "mean_luma_change" in scores
    worst = 0.0
    for p in grid_periods(scores):
        key = f"grid_p{p}_excess" if differential else f"grid_p{p}_fold"
        value = scores.get(key)
        limit = thresholds.grid_excess_ratio if differential else thresholds.grid_fold
        if value is not None:
            worst = max(worst, value / limit)
    return len(entry["flags"]), worst


def _thumbnail(pixels: np.ndarray, path: Path) -> None:
    image = Image.fromarray(pixels)
    image.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.LANCZOS)
    image.save(path)


def _detail(pixels: np.ndarray, path: Path) -> None:
    h, w = pixels.shape[:2]
    side = min(DETAIL_SIDE, h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(pixels[top : top + side, left : left + side])
    crop.resize((side * DETAIL_ZOOM, side * DETAIL_ZOOM), Image.NEAREST).save(path)


def spectrum_figure(
    pixels: np.ndarray, periods: tuple[int, ...], max_size: int, min_ratio: float, title: str, path: Path
) -> None:
    """Plot log10 |FFT| of the high-passed, windowed luma (zero frequency in the centre) with every
    lattice point circled: red where its peak ratio reaches ``min_ratio``, faint otherwise."""
    from matplotlib.figure import Figure  # no pyplot: leaves the caller's backend alone

    residual = windowed_residual(pixels, periods, max_size)
    height, width = residual.shape
    shown = np.fft.fftshift(np.log10(np.abs(np.fft.fft2(residual)) + np.finfo(np.float32).tiny))
    ratios = grid_scores(pixels, periods, max_size).ratios
    fig = Figure(figsize=(6.4, 6.4 * height / width + 0.6), dpi=100)
    ax = fig.subplots()
    low, high = np.percentile(shown, [5, 99.9])
    extent = (-width / 2 - 0.5, width / 2 - 0.5, height / 2 - 0.5, -height / 2 - 0.5)
    ax.imshow(shown, cmap="gray", vmin=low, vmax=high, extent=extent)
    for tripped in (False, True):
        xs, ys = [], []
        for point in lattice_points(tuple(periods)):
            if (ratios.get(point.key, 0.0) >= min_ratio) != tripped:
                continue
            for sign in (1, -1):  # the point and its conjugate
                xs.append(sign * point.b * width / point.period)
                ys.append(sign * point.a * height / point.period)
        style = {"edgecolors": "red", "linewidths": 1.2} if tripped else {"edgecolors": "#4da3ff", "alpha": 0.35}
        label = f"peak ratio >= {min_ratio}" if tripped else f"lattice points (periods {', '.join(map(str, periods))})"
        ax.scatter(xs, ys, s=40, facecolors="none", label=label, **style)
    ax.set_xlabel("horizontal frequency (FFT bins)")
    ax.set_ylabel("vertical frequency (FFT bins)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
    fig.tight_layout()
    fig.savefig(path)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _score_columns(entries: list[dict]) -> list[str]:
    if not entries:
        return []
    scores = entries[0]["scores"]
    differential = "mean_luma_change" in scores
    cols = []
    for p in grid_periods(scores):
        cols += (
            [f"grid_p{p}_excess", f"grid_p{p}_excess_rms"] if differential else [f"grid_p{p}_fold", f"grid_p{p}_rms"]
        )
    cols += [c for c in _TONE_COLUMNS if c in scores][:3]
    return cols


def write_report(scan: dict, out: Path, top: int = 12) -> tuple[Path, Path]:
    """Write thumbnails, ``spectrum.png``, ``report.md`` and ``report.html`` into ``out``; return both paths."""
    out = Path(out)
    thresholds = ArtifactThresholds(**scan["settings"]["thresholds"])
    periods = tuple(scan["settings"]["periods"])
    directory = Path(scan["directory"])
    reference = Path(scan["reference"]) if scan["reference"] else None
    ranked = sorted(scan["images"], key=lambda e: severity(e, thresholds), reverse=True)
    flagged = [e for e in ranked if e["flags"]]
    shown = (flagged or ranked)[:top]
    thumbs = out / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)

    rows = []
    for i, entry in enumerate(shown):
        pixels, _ = read_image(directory / entry["file"])
        pictures = {"image": f"thumbs/{i:03d}.png", "detail": f"thumbs/{i:03d}_detail.png"}
        _thumbnail(pixels, out / pictures["image"])
        _detail(pixels, out / pictures["detail"])
        if reference is not None and entry["reference"]:
            ref_pixels, _ = read_image(reference / entry["reference"])
            pictures["reference"] = f"thumbs/{i:03d}_ref.png"
            pictures["reference_detail"] = f"thumbs/{i:03d}_ref_detail.png"
            _thumbnail(ref_pixels, out / pictures["reference"])
            _detail(ref_pixels, out / pictures["reference_detail"])
        rows.append((entry, pictures))

    spectrum = None
    grid_flagged = [e for e in flagged if any(f.startswith("grid_") for f in e["flags"])]
    if grid_flagged:
        entry = grid_flagged[0]
        pixels, _ = read_image(directory / entry["file"])
        title = f"{entry['file']}: " + ", ".join(entry["flags"])
        max_size = scan["settings"]["max_size"]
        spectrum_figure(pixels, periods, max_size, thresholds.grid_ratio, title, out / "spectrum.png")
        spectrum = (entry, "spectrum.png")

    columns = _score_columns(shown)
    md = _markdown(scan, rows, columns, spectrum, bool(flagged), top)
    page = _html(scan, rows, columns, spectrum, bool(flagged), top)
    return atomic_write_text(out / "report.md", md), atomic_write_text(out / "report.html", page)


def _summary_lines(scan: dict) -> list[tuple[str, str]]:
    s = scan["summary"]
    mode = f"against references in {scan['reference']}" if scan["reference"] else "single images (no reference)"
    lines = [
        ("folder", scan["directory"]),
        ("mode", mode),
        ("images scored", str(s["images"])),
        ("skipped (unreadable)", str(s["skipped"])),
        ("flagged", f"{s['flagged']} of {s['images']}"),
    ]
    if scan["reference"]:
        lines.append(("without a readable reference (scored alone)", str(len(scan["unmatched"]))))
    for flag, count in s["by_flag"].items():
        lines.append((f"flag {flag}", str(count)))
    return lines


def _markdown(scan, rows, columns, spectrum, any_flagged, top) -> str:
    lines = ["# Artifact scan", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in _summary_lines(scan)]
    lines += ["", "Thresholds: " + ", ".join(f"`{k}={v}`" for k, v in scan["settings"]["thresholds"].items()), ""]
    heading = (
        f"## Worst offenders (top {top})" if any_flagged else f"## Nothing flagged: highest grid scores (top {top})"
    )
    lines += [heading, ""]
    header = ["image", "1:1 centre"] + (["reference", "reference 1:1"] if scan["reference"] else [])
    header += ["file", "flags", *columns]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry, pics in rows:
        cells = [f"![]({pics['image']})", f"![]({pics['detail']})"]
        if scan["reference"]:
            cells += [f"![]({pics['reference']})" if "reference" in pics else "–"]
            cells += [f"![]({pics['reference_detail']})" if "reference_detail" in pics else "–"]
        cells += [f"`{entry['file']}`", ", ".join(entry["flags"]) or "–"]
        cells += [_fmt(entry["scores"].get(c)) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    if spectrum is not None:
        entry, path = spectrum
        lines += [
            "",
            f"## Spectrum of `{entry['file']}`",
            "",
            SPECTRUM_CAPTION,
            "",
            f"![spectrum]({path})",
        ]
    if scan["skipped"]:
        lines += ["", "## Skipped files", "", "| file | error |", "|---|---|"]
        lines += [f"| `{s['file']}` | {s['error']} |" for s in scan["skipped"]]
    return "\n".join(lines) + "\n"


def _html(scan, rows, columns, spectrum, any_flagged, top) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Artifact scan</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}",
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;vertical-align:top}",
        "img{image-rendering:pixelated;display:block}.flag{color:#b00;font-weight:600}",
        "</style></head><body><h1>Artifact scan</h1><table>",
    ]
    parts += [f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary_lines(scan)]
    parts.append(
        "</table><p>Thresholds: "
        + ", ".join(f"<code>{e(k)}={e(str(v))}</code>" for k, v in scan["settings"]["thresholds"].items())
        + "</p>"
    )
    heading = f"Worst offenders (top {top})" if any_flagged else f"Nothing flagged: highest grid scores (top {top})"
    parts.append(f"<h2>{heading}</h2><table><tr>")
    header = ["image", "1:1 centre"] + (["reference", "reference 1:1"] if scan["reference"] else [])
    header += ["file", "flags", *columns]
    parts += [f"<th>{e(h)}</th>" for h in header]
    parts.append("</tr>")
    for entry, pics in rows:
        cells = [f"<img src='{e(pics['image'])}'>", f"<img src='{e(pics['detail'])}'>"]
        if scan["reference"]:
            for key in ("reference", "reference_detail"):
                cells.append(f"<img src='{e(pics[key])}'>" if key in pics else "–")
        cells += [
            f"<code>{e(entry['file'])}</code>",
            f"<span class='flag'>{e(', '.join(entry['flags']) or '–')}</span>",
        ]
        cells += [e(_fmt(entry["scores"].get(c))) for c in columns]
        parts.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    parts.append("</table>")
    if spectrum is not None:
        entry, path = spectrum
        parts.append(
            f"<h2>Spectrum of <code>{e(entry['file'])}</code></h2><p>{e(SPECTRUM_CAPTION)}</p><img src='{e(path)}'>"
        )
    if scan["skipped"]:
        parts.append("<h2>Skipped files</h2><table><tr><th>file</th><th>error</th></tr>")
        parts += [f"<tr><td><code>{e(s['file'])}</code></td><td>{e(s['error'])}</td></tr>" for s in scan["skipped"]]
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
