"""Calibrate and measure the artifact detectors on a labelled synthetic set (issue 7).

    OMP_NUM_THREADS=1 .venv/bin/python bench/artifacts_calibration.py [--quick] [--out DIR]

Clean images come from `imgpref.artifacts.synthetic` (1/f "pink" noise, procedural textures, gradients,
toy-world renders) at 64-512 px, each also as JPEG at qualities 75/85/95. Labelled positives are clean
images with artifacts injected by `imgpref.artifacts.inject` at controlled strength: seams, checkerboards
and random tiles at periods 8 and 16 (amplitudes 1-4 levels, random phase, sign away from clipping),
other periods (4, 12, 32) to map the blind spots, darkening by gain and gamma, desaturation, and
collapse of diversity across seeds (toy prompts).

Two disjoint seeded splits: split A (clean images and clean pairs only) chooses the thresholds, split B
reports false-positive and detection rates with them, so the reported false-positive rate is not the one
the thresholds were fitted to. Differential mode pairs each base image with a benign variant of itself
(shifted by up to `SHIFT_FRACTION` of the side, fresh noise, brightness and saturation drift of up to
`DRIFT` and `SATURATION_DRIFT`, the same JPEG quality): our model of "same prompt and seed, LoRA that
learned nothing harmful".

Prints markdown tables (pasted into bench/artifacts.md) and writes them with the raw numbers to --out.
Runs in about 3 minutes of CPU on one core (``--quick``: ~30 s, a smoke test with noisy numbers), and
says whether the thresholds it chose are the package defaults (`imgpref.artifacts.measure`, `.guard`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from imgpref.artifacts.defaults import DIVERSITY_RATIO, ArtifactThresholds
from imgpref.artifacts.diversity import spread_ratio
from imgpref.artifacts.images import LUMA_WEIGHTS
from imgpref.artifacts.inject import (
    add_pattern,
    darken_gain,
    darken_gamma,
    desaturate,
    jpeg_roundtrip,
)
from imgpref.artifacts.measure import image_flags, image_scores, measure
from imgpref.artifacts.synthetic import FAMILIES, clean_image
from imgpref.config import HelpFormatter

SIZES = (64, 128, 256, 512)
SIZE_WEIGHTS = (0.2, 0.3, 0.35, 0.15)  # 512 px is slow-ish; most images are mid-sized
JPEG_QUALITIES = (75, 85, 95)
PERIODS = (8, 16)
KINDS = ("seams", "checkerboard", "tile")
AMPLITUDES = (1, 2, 3, 4)  # 8-bit levels
OTHER_PERIODS = (4, 12, 32)  # not configured: where does the detector see them?
OTHER_AMPLITUDE = 3
BOTH_AMPLITUDE = 4  # levels: the pattern present in base and tuned alike
GAINS = (0.99, 0.97, 0.95, 0.9, 0.8)
GAMMAS = (1.05, 1.1, 1.2, 1.4)
DESATURATIONS = (0.05, 0.1, 0.2, 0.4)
COLLAPSES = (0.25, 0.5, 0.75, 1.0)  # tuned_k = (1 - c) image_k + c image_0
GROUP_SIZE = 4  # seeds per prompt in the diversity groups
GUARD_PROMPTS = 8  # prompts per guard check (the guard trips on the median over prompts)
# The benign variant: what a LoRA that learned nothing harmful might do to the same prompt and seed.
SHIFT_FRACTION = 0.02  # content shift: up to this fraction of the side (at least 1 px)
DRIFT = 0.015  # brightness drift: gain in 1 +- DRIFT
SATURATION_DRIFT = 0.03  # colour drift: blend towards (or away from) gray by up to this much
BENIGN_NOISE = 1.5  # max sigma (levels) of fresh noise
# Thresholds are chosen for at most these false-positive rates on split A: below the 1% target, with
# room for the sampling error of split A and, for tone, for three flags that can each trip.
TARGET_FP_GRID = 0.003
TARGET_FP_TONE = 0.0025
GRID_RMS = 0.2  # levels; fixed by design (see imgpref.artifacts.measure), not fitted
RATIO_STEP = 0.1
FOLD_STEP = 0.1
RMS_STEP = 0.05
TONE_STEP = 0.005

# Split A: clean images that set the thresholds. Split B: clean images for the false-positive rates, of
# which the first `positives` per family also carry every injected artifact (the slow part).
SPLITS = {"A": {"seed": 1000, "per_family": 150}, "B": {"seed": 2000, "per_family": 150, "positives": 50}}
QUICK = {"A": 20, "B": 15, "positives": 8}


def draw_size(rng: np.random.Generator) -> int:
    return int(rng.choice(SIZES, p=SIZE_WEIGHTS))


def benign_variant(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Same picture, as a harmless LoRA would redraw it: shifted, re-noised, a little brighter/darker."""
    h, w = image.shape[:2]
    reach = max(1, round(SHIFT_FRACTION * min(h, w)))
    dy, dx = rng.integers(-reach, reach + 1, size=2)
    padded = np.pad(image, ((reach, reach), (reach, reach), (0, 0)), mode="reflect")
    shifted = padded[reach + dy : reach + dy + h, reach + dx : reach + dx + w].astype(np.float64)
    shifted = shifted * rng.uniform(1 - DRIFT, 1 + DRIFT) + rng.normal(0, rng.uniform(0, BENIGN_NOISE), shifted.shape)
    gray = shifted @ LUMA_WEIGHTS
    blend = rng.uniform(-SATURATION_DRIFT, SATURATION_DRIFT)
    shifted = (1 - blend) * shifted + blend * gray[..., None]
    return np.clip(np.rint(shifted), 0, 255).astype(np.uint8)


def sign_away_from_clipping(image: np.ndarray) -> int:
    return -1 if image.mean() > 127.5 else 1


def inject(image, kind, period, amplitude, rng):
    phase = tuple(int(v) for v in rng.integers(0, period, size=2))
    return add_pattern(image, kind, period, amplitude, phase, sign_away_from_clipping(image), rng)


def grid_flagged(scores: dict, t: ArtifactThresholds, periods=PERIODS, jpeg=False) -> bool:
    return any(f.startswith("grid_") and int(f[6:]) in periods for f in image_flags(scores, t, jpeg))


def ratio_rule_flagged(scores: dict, t: ArtifactThresholds) -> bool:
    """The single-image rule before the fold statistic (pooled ratio >= grid_ratio, same rms gate), PNG."""
    return any(scores[f"grid_p{p}"] >= t.grid_ratio and scores[f"grid_p{p}_rms"] >= t.grid_rms for p in PERIODS)


def grid_hit(scores: dict, t: ArtifactThresholds, period: int, jpeg=False) -> bool | None:
    """A grid flag on any configured period (a 16-px pattern's even harmonics sit on the 8-px lattice, so
    it may be caught there); None when the image is too small to score ``period`` (not a miss)."""
    if not np.isfinite(scores[f"grid_p{period}"]):
        return None
    return grid_flagged(scores, t, PERIODS, jpeg)


# ---------------------------------------------------------------- split A: clean data, thresholds


def collect_clean(split: str, per_family: int) -> list[dict]:
    """Per clean image: single-image scores (PNG and JPEGs) and benign-pair scores."""
    rng = np.random.default_rng(SPLITS[split]["seed"])
    records = []
    for family in FAMILIES:
        for index in range(per_family):
            size = draw_size(rng)
            image = clean_image(family, rng, size)
            variant = benign_variant(image, rng)
            base_m, variant_m = measure(image), measure(variant)
            rec = {
                "family": family,
                "index": index,
                "size": size,
                "image": image,
                "variant": variant,
                "base_m": base_m,
                "single": image_scores(base_m),
                "pair": image_scores(variant_m, base_m),
                "jpeg": {},
                "jpeg_pair": {},
            }
            for q in JPEG_QUALITIES:
                jb = measure(jpeg_roundtrip(image, q))
                jv = measure(jpeg_roundtrip(variant, q))
                rec["jpeg"][q] = image_scores(jb)
                rec["jpeg_pair"][q] = image_scores(jv, jb)
            # A pattern in both base and tuned (a real fence, an artifact the base already has) is a
            # negative for differential mode: it must cancel.
            kind, period = str(rng.choice(KINDS)), int(rng.choice(PERIODS))
            phase = tuple(int(v) for v in rng.integers(0, period, size=2))
            sign, tile_seed = sign_away_from_clipping(image), int(rng.integers(2**31))
            both_base = add_pattern(image, kind, period, BOTH_AMPLITUDE, phase, sign, np.random.default_rng(tile_seed))
            both_tuned = add_pattern(
                variant, kind, period, BOTH_AMPLITUDE, phase, sign, np.random.default_rng(tile_seed)
            )
            both_tuned_m = measure(both_tuned)
            rec["both_pair"] = image_scores(both_tuned_m, measure(both_base))
            rec["both_single"] = image_scores(both_tuned_m)
            records.append(rec)
    return records


def grid_critical(scores: dict, prefix: str = "grid_p{p}", min_rms: float = GRID_RMS, periods=PERIODS) -> float:
    """Smallest threshold on the score ``prefix`` that flags these scores with the rms gate at ``min_rms``
    (``grid_p{p}_excess_rms`` for the excess, ``grid_p{p}_rms`` otherwise); 0 if none."""
    best = 0.0
    for p in periods:
        key = prefix.format(p=p)
        rms_key = f"{key}_rms" if key.endswith("_excess") else f"grid_p{p}_rms"
        if scores[rms_key] >= min_rms and np.isfinite(scores[key]):
            best = max(best, scores[key])
    return best


def rms_critical(scores: dict, min_fold: float, periods=PERIODS) -> float:
    """Smallest rms threshold that flags these scores with the fold gate at ``min_fold``; 0 if none."""
    best = 0.0
    for p in periods:
        if scores[f"grid_p{p}_fold"] >= min_fold and np.isfinite(scores[f"grid_p{p}_rms"]):
            best = max(best, scores[f"grid_p{p}_rms"])
    return best


def smallest_passing(critical, step: float, target: float = TARGET_FP_GRID) -> float:
    """Smallest multiple of ``step`` that at most a share ``target`` of the critical values reach."""
    critical = np.sort(np.asarray(critical, dtype=np.float64))
    allowed = int(np.floor(target * len(critical)))  # this many may still trip
    level = critical[len(critical) - 1 - allowed] if allowed < len(critical) else 0.0
    return float(round((np.floor(level / step) + 1) * step, 4))


def choose_thresholds(records: list[dict]) -> ArtifactThresholds:
    grid_fold = smallest_passing([grid_critical(r["single"], "grid_p{p}_fold") for r in records], FOLD_STEP)
    # Not a flag threshold any more: the pooled ratio clean images stay below (report, artifact_penalty).
    grid_ratio = smallest_passing([grid_critical(r["single"]) for r in records], RATIO_STEP)
    # JPEG files: lattices at multiples of 8 px need a stronger pattern (JPEG's own blocks are one).
    jpeg = [rms_critical(r["jpeg"][q], grid_fold) for r in records for q in JPEG_QUALITIES]
    jpeg_grid_rms = max(smallest_passing(jpeg, RMS_STEP), GRID_RMS)
    pairs = [grid_critical(r[key], "grid_p{p}_excess") for r in records for key in ("pair", "both_pair")]
    pairs += [
        grid_critical(r["jpeg_pair"][q], "grid_p{p}_excess", jpeg_grid_rms) for r in records for q in JPEG_QUALITIES
    ]
    grid_excess_ratio = smallest_passing(pairs, RATIO_STEP)

    def tone(key, sign):
        pairs = [r["pair"] for r in records] + [r["jpeg_pair"][q] for r in records for q in JPEG_QUALITIES]
        return smallest_passing([max(sign * pair[key], 0.0) for pair in pairs], TONE_STEP, TARGET_FP_TONE)

    return ArtifactThresholds(
        grid_fold=grid_fold,
        grid_ratio=grid_ratio,
        grid_rms=GRID_RMS,
        jpeg_grid_rms=jpeg_grid_rms,
        grid_excess_ratio=grid_excess_ratio,
        darker=tone("mean_luma_change", -1),
        desaturated=tone("saturation_change", -1),
        crushed_blacks=tone("crushed_black_change", 1),
    )


# ---------------------------------------------------------------- diversity


def toy_group(attrs, rng, size):
    from imgpref.toy.world import render

    return [
        render(attrs, rng, size).astype(np.float64) + rng.normal(0, 1.0, (size, size, 3)) for _ in range(GROUP_SIZE)
    ]


def diversity_trials(seed: int, n_groups: int) -> dict:
    """Spread ratios of benign groups (other seeds) and of collapsed groups, for toy prompts."""
    from imgpref.toy.world import sample_attributes

    rng = np.random.default_rng(seed)
    benign, collapsed = [], defaultdict(list)
    for _ in range(n_groups):
        attrs, size = sample_attributes(rng), int(rng.choice((64, 128)))
        base = [np.clip(x, 0, 255).astype(np.uint8) for x in toy_group(attrs, rng, size)]
        other = toy_group(attrs, rng, size)
        benign.append(spread_ratio([np.clip(x, 0, 255).astype(np.uint8) for x in other], base)[0])
        for c in COLLAPSES:
            tuned = [np.clip((1 - c) * x + c * other[0], 0, 255).astype(np.uint8) for x in other]
            collapsed[c].append(spread_ratio(tuned, base)[0])
    return {"benign": np.array(benign), "collapsed": {c: np.array(v) for c, v in collapsed.items()}}


def diversity_threshold(benign: np.ndarray) -> float:
    candidates = np.arange(0.95, 0.0, -0.05)
    for value in candidates:  # largest threshold with few benign groups below it
        if np.mean(benign < value) <= TARGET_FP_TONE:
            return float(round(value, 2))
    return 0.0


def guard_level(values: np.ndarray, rng: np.random.Generator, n_checks: int = 2000) -> np.ndarray:
    """Median over GUARD_PROMPTS groups drawn from ``values``: what one guard check sees."""
    picks = rng.choice(values, size=(n_checks, GUARD_PROMPTS), replace=True)
    return np.median(picks, axis=1)


# ---------------------------------------------------------------- split B: report


def report(records: list[dict], t: ArtifactThresholds, seed: int, positives: int) -> dict:
    rng = np.random.default_rng(seed + 1)
    out: dict = {"fp": {}, "grid": defaultdict(list), "grid_diff": defaultdict(list), "other": defaultdict(list)}
    out["ratio_rule"] = defaultdict(list)
    out["tone"] = defaultdict(list)
    fp = defaultdict(list)
    for r in records:
        fam, size = r["family"], r["size"]
        fp[("png", fam)].append(grid_flagged(r["single"], t))
        fp[("png_size", size)].append(grid_flagged(r["single"], t))
        fp[("png_ratio_rule", fam)].append(ratio_rule_flagged(r["single"], t))
        for q in JPEG_QUALITIES:
            fp[(f"jpeg{q}", fam)].append(grid_flagged(r["jpeg"][q], t, jpeg=True))
            fp[(f"jpeg{q}_pair", fam)].append(bool(image_flags(r["jpeg_pair"][q], t, jpeg=True)))
        fp[("pair", fam)].append(bool(image_flags(r["pair"], t)))
        fp[("both_pair", fam)].append(grid_flagged(r["both_pair"], t))
        fp[("both_single", fam)].append(grid_flagged(r["both_single"], t))
        for q in JPEG_QUALITIES:
            flags = image_flags(r["jpeg_pair"][q], t, jpeg=True)
            fp[("jpeg_pair_grid", fam)].append(any(f.startswith("grid_") for f in flags))
            fp[("jpeg_pair_tone", fam)].append(any(not f.startswith("grid_") for f in flags))
        fp[("pair_grid", fam)].append(grid_flagged(r["pair"], t))
        for name in ("darker", "desaturated", "crushed_blacks"):
            fp[(f"pair_{name}", fam)].append(name in image_flags(r["pair"], t))
        if r["index"] >= positives:
            continue

        image, variant, base_m = r["image"], r["variant"], r["base_m"]
        for kind in KINDS:
            for p in PERIODS:
                for a in AMPLITUDES:
                    tuned = inject(variant, kind, p, a, rng)
                    single = image_scores(measure(inject(image, kind, p, a, rng)))
                    pair = image_scores(measure(tuned), base_m)
                    out["grid"][(kind, p, a, fam, size)].append(grid_hit(single, t, p))
                    ratio_hit = ratio_rule_flagged(single, t) if np.isfinite(single[f"grid_p{p}"]) else None
                    out["ratio_rule"][(kind, p, a, fam, size)].append(ratio_hit)
                    out["grid_diff"][(kind, p, a, fam, size)].append(grid_hit(pair, t, p))
            for p in OTHER_PERIODS:
                single = image_scores(measure(inject(image, kind, p, OTHER_AMPLITUDE, rng)))
                out["other"][(kind, p, fam)].append(grid_flagged(single, t))
        # JPEG after the pattern: a generated image with an artifact, saved as JPEG 90.
        for p in PERIODS:
            tuned = jpeg_roundtrip(inject(image, "tile", p, 3, rng), 90)
            out["grid"][("tile+jpeg90", p, 3, fam, size)].append(
                grid_hit(image_scores(measure(tuned)), t, p, jpeg=True)
            )
        # Tone: darkening and desaturation of the benign variant, against the base.
        for g in GAINS:
            tuned = darken_gain(variant, g)
            s = image_scores(measure(tuned), base_m)
            out["tone"][("gain", g)].append(("darker" in image_flags(s, t), -s["mean_luma_change"], fam))
        for gamma in GAMMAS:
            tuned = darken_gamma(variant, gamma)
            s = image_scores(measure(tuned), base_m)
            flags = image_flags(s, t)
            out["tone"][("gamma", gamma)].append(("darker" in flags, -s["mean_luma_change"], fam))
            out["tone"][("gamma_crushed", gamma)].append(("crushed_blacks" in flags, s["crushed_black_change"], fam))
        for d in DESATURATIONS:
            s = image_scores(measure(desaturate(variant, d)), base_m)
            colourful = base_m.tone["colorfulness"] >= 15.0
            out["tone"][("desat", d)].append(("desaturated" in image_flags(s, t), -s["saturation_change"], colourful))
    out["fp"] = fp
    return out


# ---------------------------------------------------------------- tables


def pct(values) -> str:
    """Share of true values in percent; None entries (not scorable) are left out; "–" when none remain."""
    values = [v for v in values if v is not None]
    return f"{100 * np.mean(values):.1f}%" if values else "–"


def fp_table(fp: dict) -> str:
    lines = [
        "| clean images (split B) | " + " | ".join(FAMILIES) + " | all |",
        "|---|" + "---|" * (len(FAMILIES) + 1),
    ]
    rows = [
        ("png", "PNG, grid flag"),
        ("png_ratio_rule", "PNG, pooled-ratio rule (before; not a flag)"),
        *[(f"jpeg{q}", f"JPEG q{q}, grid flag") for q in JPEG_QUALITIES],
    ]
    rows += [
        ("pair", "benign pair, any flag"),
        ("pair_grid", "benign pair, grid"),
        ("pair_darker", "benign pair, darker"),
    ]
    rows += [("pair_desaturated", "benign pair, desaturated"), ("pair_crushed_blacks", "benign pair, crushed blacks")]
    rows += [(f"jpeg{q}_pair", f"JPEG q{q} pair, any flag") for q in JPEG_QUALITIES]
    rows += [("jpeg_pair_grid", "JPEG pairs (all q), grid"), ("jpeg_pair_tone", "JPEG pairs (all q), tone")]
    rows += [("both_pair", f"same {BOTH_AMPLITUDE}/255 pattern in base and tuned, grid")]
    rows += [("both_single", "... that tuned image alone (single mode; a hit, not a false positive)")]
    for key, label in rows:
        cells = [pct(fp[(key, f)]) for f in FAMILIES]
        every = [v for f in FAMILIES for v in fp[(key, f)]]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {pct(every)} (n={len(every)}) |")
    lines.append("")
    lines.append("| PNG grid flag by size | " + " | ".join(f"{s} px" for s in SIZES) + " |")
    lines.append("|---|" + "---|" * len(SIZES))
    lines.append("| false positives | " + " | ".join(pct(fp[("png_size", s)]) for s in SIZES) + " |")
    return "\n".join(lines)


def grid_table(grid: dict, title: str) -> str:
    lines = [f"**{title}** (detection rate: any grid flag; all families and sizes pooled)", ""]
    lines.append("| pattern | period | " + " | ".join(f"{a}/255" for a in AMPLITUDES) + " |")
    lines.append("|---|---|" + "---|" * len(AMPLITUDES))
    for kind in KINDS:
        for p in PERIODS:
            cells = [pct(v for k, vs in grid.items() if k[:3] == (kind, p, a) for v in vs) for a in AMPLITUDES]
            lines.append(f"| {kind} | {p} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def grid_breakdown(grid: dict, amplitude: int) -> str:
    lines = [f"Detection at {amplitude}/255 (all three pattern kinds) by image family and size:", ""]
    lines.append("| family | period | " + " | ".join(f"{s} px" for s in SIZES) + " | all |")
    lines.append("|---|---|" + "---|" * (len(SIZES) + 1))
    for fam in FAMILIES:
        for p in PERIODS:
            cells = []
            for s in SIZES:
                cells.append(
                    pct(v for k, vs in grid.items() if k[1:] == (p, amplitude, fam, s) and k[0] in KINDS for v in vs)
                )
            every = pct(v for k, vs in grid.items() if k[1:4] == (p, amplitude, fam) and k[0] in KINDS for v in vs)
            lines.append(f"| {fam} | {p} | " + " | ".join(cells) + f" | {every} |")
    return "\n".join(lines)


def size_target(grid: dict, min_size: int, title: str = "") -> str:
    lines = [title or f"Detection at >= 2/255 on images >= {min_size} px, by family (pattern kinds pooled):", ""]
    lines.append("| family | p8 | p16 |")
    lines.append("|---|---|---|")
    for fam in FAMILIES:
        cells = []
        for p in PERIODS:
            cells.append(
                pct(
                    v
                    for k, vs in grid.items()
                    if k[0] in KINDS and k[1] == p and k[2] >= 2 and k[3] == fam and k[4] >= min_size
                    for v in vs
                )
            )
        lines.append(f"| {fam} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def other_table(other: dict, grid: dict) -> str:
    lines = [f"Other periods at {OTHER_AMPLITUDE}/255 (flag on any configured period) and tile + JPEG q90:", ""]
    lines.append("| pattern | " + " | ".join(f"p{p}" for p in OTHER_PERIODS) + " |")
    lines.append("|---|" + "---|" * len(OTHER_PERIODS))
    for kind in KINDS:
        lines.append(
            f"| {kind} | "
            + " | ".join(pct(v for k, vs in other.items() if k[:2] == (kind, p) for v in vs) for p in OTHER_PERIODS)
            + " |"
        )
    jp = " / ".join(
        f"p{p}: {pct(v for k, vs in grid.items() if k[:2] == ('tile+jpeg90', p) for v in vs)}" for p in PERIODS
    )
    lines.append("")
    lines.append(f"Tile of 3/255, then saved as JPEG q90, single-image mode: {jp}")
    return "\n".join(lines)


def tone_table(tone: dict) -> str:
    lines = ["| change (vs base) | achieved mean-luma drop (median) | detected |", "|---|---|---|"]
    for g in GAINS:
        rows = tone[("gain", g)]
        lines.append(f"| gain {g} | {100 * np.median([r[1] for r in rows]):.1f}% | {pct(r[0] for r in rows)} |")
    for gamma in GAMMAS:
        rows = tone[("gamma", gamma)]
        lines.append(f"| gamma {gamma} | {100 * np.median([r[1] for r in rows]):.1f}% | {pct(r[0] for r in rows)} |")
    every = [r for k, rows in tone.items() if k[0] in ("gain", "gamma") for r in rows]
    lines.append("")
    lines.append("| achieved drop | < 2% | 2–3% | 3–5% | >= 5% |")
    lines.append("|---|---|---|---|---|")
    bins = [(0, 0.02), (0.02, 0.03), (0.03, 0.05), (0.05, 10)]
    lines.append(
        "| detected (darker) | "
        + " | ".join(
            f"{pct(r[0] for r in every if lo <= r[1] < hi)} (n={sum(lo <= r[1] < hi for r in every)})"
            for lo, hi in bins
        )
        + " |"
    )
    lines.append("")
    lines.append("| desaturation (blend to gray) | " + " | ".join(str(d) for d in DESATURATIONS) + " |")
    lines.append("|---|" + "---|" * len(DESATURATIONS))
    lines.append(
        "| detected, colourful bases (C >= 15) | "
        + " | ".join(pct(r[0] for r in tone[("desat", d)] if r[2]) for d in DESATURATIONS)
        + " |"
    )
    lines.append(
        "| detected, all bases | " + " | ".join(pct(r[0] for r in tone[("desat", d)]) for d in DESATURATIONS) + " |"
    )
    lines.append("")
    lines.append("| gamma | " + " | ".join(str(g) for g in GAMMAS) + " |")
    lines.append("|---|" + "---|" * len(GAMMAS))
    lines.append(
        "| crushed_blacks flagged | " + " | ".join(pct(r[0] for r in tone[("gamma_crushed", g)]) for g in GAMMAS) + " |"
    )
    return "\n".join(lines)


def diversity_table(div: dict, threshold: float, rng: np.random.Generator) -> str:
    lines = [
        f"Spread ratio threshold {threshold} (flag when tuned/base spread is below it); toy prompts, "
        f"{GROUP_SIZE} seeds per group.",
        "",
        "| tuned group | median ratio | flagged per group | flagged per guard check (median of 8 prompts) |",
        "|---|---|---|---|",
    ]
    rows = [("other seeds (benign)", div["benign"])]
    rows += [(f"collapse {c}", values) for c, values in div["collapsed"].items()]
    for label, values in rows:
        per_check = pct(guard_level(values, rng) < threshold)
        lines.append(f"| {label} | {np.median(values):.2f} | {pct(values < threshold)} | {per_check} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=HelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sets: a smoke test (~30 s), noisy numbers")
    parser.add_argument("--out", type=Path, default=None, help="also write calibration.md and calibration.json here")
    args = parser.parse_args(argv)
    start, cpu_start = time.perf_counter(), time.process_time()
    n_a = QUICK["A"] if args.quick else SPLITS["A"]["per_family"]
    n_b = QUICK["B"] if args.quick else SPLITS["B"]["per_family"]

    split_a = collect_clean("A", n_a)
    thresholds = choose_thresholds(split_a)
    div_a = diversity_trials(SPLITS["A"]["seed"], 4 * n_a)
    div_threshold = diversity_threshold(div_a["benign"])
    t_a = time.perf_counter() - start

    split_b = collect_clean("B", n_b)
    positives = QUICK["positives"] if args.quick else SPLITS["B"]["positives"]
    results = report(split_b, thresholds, SPLITS["B"]["seed"], positives)
    div_b = diversity_trials(SPLITS["B"]["seed"], 4 * positives)
    elapsed = time.perf_counter() - start

    chosen = {**thresholds.__dict__, "diversity_ratio": div_threshold}
    defaults = {**ArtifactThresholds().__dict__, "diversity_ratio": DIVERSITY_RATIO}
    differ = [f"{k}: package {defaults[k]}, calibrated {v}" for k, v in chosen.items() if defaults[k] != v]
    check = "Package defaults match." if not differ else "Package defaults DIFFER: " + "; ".join(differ)
    text = "\n\n".join(
        [
            f"Split A: {len(split_a)} clean images; split B: {len(split_b)} clean images, "
            f"{positives} per family with injected artifacts "
            f"({elapsed:.0f} s wall, {time.process_time() - cpu_start:.0f} s CPU on one core; "
            f"thresholds chosen in {t_a:.0f} s).",
            "Chosen thresholds (split A): " + ", ".join(f"`{k} = {v}`" for k, v in chosen.items()) + ". " + check,
            fp_table(results["fp"]),
            grid_table(results["grid"], "Single image"),
            grid_table(results["grid_diff"], "Differential (tuned = benign variant + pattern, vs base)"),
            grid_breakdown(results["grid"], 2),
            size_target(results["grid"], 256),
            size_target(
                results["ratio_rule"],
                256,
                "The same with the pooled-ratio rule instead of the fold statistic (`grid_p{p} >= grid_ratio`, "
                "same rms gate; the single-image rule before):",
            ),
            size_target(results["grid"], 128, "Detection at >= 2/255 on images >= 128 px (fold statistic):"),
            other_table(results["other"], results["grid"]),
            tone_table(results["tone"]),
            diversity_table(div_b, div_threshold, np.random.default_rng(3)),
        ]
    )
    print(text)
    print(f"\n[{elapsed:.0f} s]")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "calibration.md").write_text(text + "\n")
        (args.out / "calibration.json").write_text(
            json.dumps({"thresholds": chosen, "seconds": elapsed}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
