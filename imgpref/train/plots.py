"""Diagnostic curves of a DPO run from its ``metrics.jsonl`` (PNG, matplotlib), for reports."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

#: Panels: title and the metric keys drawn in it.
DPO_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss",)),
    ("implicit accuracy", ("implicit_accuracy",)),
    ("errors (policy vs reference)", ("model_err_w", "ref_err_w", "model_err_l", "ref_err_l")),
    ("Δ_w, Δ_l (policy − reference)", ("delta_w", "delta_l")),
    ("pair states", ("state_best", "state_worst", "state_confused", "state_both_down")),
    ("validation (judge)", ("val/all_correct", "val/shape_acc", "val/color_acc")),
)
#: Trailing window of the moving average drawn over noisy per-step curves.
SMOOTHING = 10


def _series(rows: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_dpo_curves(rows: Sequence[dict], path: str | Path, title: str = "") -> Path:
    """A 2×3 grid of the DPO diagnostics over steps (moving average for per-step metrics)."""
    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5), constrained_layout=True)
    for ax, (name, keys) in zip(axes.flat, DPO_PANELS, strict=True):
        for key in keys:
            steps, values = _series(rows, key)
            if not steps:
                continue
            per_step = not key.startswith("val/")
            shown = _smooth(values, SMOOTHING) if per_step and len(values) > SMOOTHING else values
            ax.plot(steps, shown, label=key, marker=None if per_step else "o")
        if name.startswith("Δ"):
            ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
