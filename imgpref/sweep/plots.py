"""Comparison plots of a sweep (PNG, matplotlib): one line per run in every panel."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: Figures: file name → panels (title, metric key); per-step metrics are smoothed, validation ones are not.
FIGURES: dict[str, tuple[tuple[str, str], ...]] = {
    "curves.png": (
        ("loss", "loss"),
        ("implicit accuracy", "implicit_accuracy"),
        ("winner error (policy)", "model_err_w"),
        ("loser error (policy)", "model_err_l"),
        ("Δ_w: winner error, policy − reference", "delta_w"),
        ("Δ_l: loser error, policy − reference", "delta_l"),
    ),
    "pair_states.png": (
        ("best: winner up, loser down", "state_best"),
        ("worst: winner down, loser up", "state_worst"),
        ("confused: both up", "state_confused"),
        ("both down (degrades)", "state_both_down"),
    ),
}
#: Artifact scores drawn over steps (guard metrics, tuned against base); trips are marked with a red x.
ARTIFACT_PANELS: tuple[tuple[str, str], ...] = (
    ("grid excess, 8 px (median)", "artifacts/grid_p8_excess_median"),
    ("grid excess, 16 px (median)", "artifacts/grid_p16_excess_median"),
    ("mean luma change", "artifacts/mean_luma_change"),
    ("saturation change", "artifacts/saturation_change"),
    ("crushed-black change", "artifacts/crushed_black_change"),
    ("diversity ratio", "artifacts/diversity_ratio"),
)
#: Trailing window of the moving average over per-step curves.
SMOOTHING = 10


def series(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in points], [p[1] for p in points]


def _smooth(values: list[float]) -> list[float]:
    if len(values) <= SMOOTHING:
        return values
    return [sum(values[max(0, i - SMOOTHING + 1) : i + 1]) / min(i + 1, SMOOTHING) for i in range(len(values))]


def _panels(
    metrics: dict[str, list[dict]], panels: Sequence[tuple[str, str]], path: Path, *, smooth: bool, trips: bool = False
) -> Path | None:
    """One panel per (title, key) with a line per run; None when no run logged any of the keys."""
    shown = [(t, k) for t, k in panels if any(series(rows, k)[0] for rows in metrics.values())]
    if not shown:
        return None
    cols = 2 if len(shown) == 4 else min(len(shown), 3)
    rows_n = (len(shown) + cols - 1) // cols
    fig, axes = plt.subplots(rows_n, cols, figsize=(4.4 * cols, 3.4 * rows_n), squeeze=False, constrained_layout=True)
    for ax, (title, key) in zip(axes.flat, shown, strict=False):
        for name, rows in metrics.items():
            steps, values = series(rows, key)
            if not steps:
                continue
            line = ax.plot(steps, _smooth(values) if smooth else values, label=name, marker=None if smooth else "o")
            if trips:
                failed = [r for r in rows if r.get("artifacts/passed") == 0 and r.get(key) is not None]
                if failed:
                    ax.scatter([r["step"] for r in failed], [r[key] for r in failed], marker="x", color="red", zorder=3)
                    line[0].set_label(f"{name} (x = guard trip)")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_sweep(metrics: dict[str, list[dict]], out: Path) -> list[Path]:
    """Write the comparison figures into ``out``; returns the files written."""
    written = [_panels(metrics, panels, out / name, smooth=True) for name, panels in FIGURES.items()]
    val_keys = sorted({k for rows in metrics.values() for r in rows for k in r if k.startswith("val/")})
    written.append(_panels(metrics, [(k, k) for k in val_keys], out / "validation.png", smooth=False))
    written.append(_panels(metrics, ARTIFACT_PANELS, out / "artifacts.png", smooth=False, trips=True))
    return [p for p in written if p is not None]
