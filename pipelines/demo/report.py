"""The demo's report: before/after judge rates with a paired significance test, grids, curves.

Base and tuned models are evaluated on the same (prompt, noise seed) samples, so the honest test of
"all-correct went up" is paired: McNemar's exact test on the discordant samples (base wrong → tuned
right versus base right → tuned wrong), a two-sided binomial test with p = ½ (scipy).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import binomtest
from torchvision.utils import make_grid, save_image

from imgpref.outdir import atomic_write_text
from imgpref.toy.evaluate import EVAL_KEYS

#: Samples in the side-by-side grid (base left, tuned right).
GRID_SAMPLES = 32


def paired_test(base_correct: np.ndarray, tuned_correct: np.ndarray) -> dict[str, float]:
    """McNemar's exact test on per-sample booleans of the same samples."""
    improved = int(np.sum(~base_correct & tuned_correct))
    worsened = int(np.sum(base_correct & ~tuned_correct))
    discordant = improved + worsened
    p = binomtest(improved, discordant, 0.5).pvalue if discordant else 1.0
    return {"improved": improved, "worsened": worsened, "p_value": float(p)}


def side_by_side(base: torch.Tensor, tuned: torch.Tensor, path: Path) -> Path:
    """Base grid and tuned grid next to each other with a white gap."""
    left = make_grid(base[:GRID_SAMPLES], nrow=4, padding=1, pad_value=1.0)
    right = make_grid(tuned[:GRID_SAMPLES], nrow=4, padding=1, pad_value=1.0)
    gap = torch.ones(3, left.shape[1], 8)
    save_image(torch.cat([left, gap, right], dim=2), path)
    return path


def _rate_table(base: dict[str, float], tuned: dict[str, float]) -> list[str]:
    lines = ["| metric | base | tuned | change |", "|---|---|---|---|"]
    for key in EVAL_KEYS:
        if key == "n":
            continue
        lines.append(f"| {key} | {base[key]:.3f} | {tuned[key]:.3f} | {tuned[key] - base[key]:+.3f} |")
    return lines


def _cfg_table(by_cfg: dict[str, dict]) -> list[str]:
    lines = [
        "| CFG | base all-correct | tuned all-correct | change | improved / worse | p (McNemar) |",
        "|---|---|---|---|---|---|",
    ]
    for cfg, row in sorted(by_cfg.items(), key=lambda kv: float(kv[0])):
        t = row["test"]
        lines.append(
            f"| {cfg} | {row['base']:.3f} | {row['tuned']:.3f} | {row['tuned'] - row['base']:+.3f} | "
            f"{t['improved']} / {t['worsened']} | {t['p_value']:.2g} |"
        )
    return lines


def write_report(out: Path, summary: dict[str, Any]) -> None:
    """``report.md``, ``report.html`` and ``summary.json`` in ``out`` (images already written)."""
    base, tuned, test = summary["base"], summary["tuned"], summary["all_correct_test"]
    settings = summary["settings"]
    header = (
        f"Model: toy `{settings['toy_size']}` ({settings['model']}). Pairs: {settings['pairs']} "
        f"({settings['strategy']}, generated at CFG {settings['pair_cfg']:g}). "
        f"DPO: β = {settings['beta']:g} ({settings['convention']} convention), SFT weight "
        f"{settings['sft_weight']:g}, {settings['steps']} steps, "
        f"lr {settings['lr']:g}, LoRA rank {settings['rank']}."
    )
    protocol = (
        f"Evaluation: {base['n']} held-out (prompt, noise seed) samples, the same for base and tuned, "
        f"CFG {settings['eval_cfg']:g}, 16 steps (the toy default)."
    )
    test_line = (
        f"Paired test of all-correct (McNemar exact): {test['improved']} samples improved, {test['worsened']} "
        f"got worse, p = {test['p_value']:.2g}."
    )
    md = [
        "# imgpref demo: Diffusion-DPO on the toy world",
        "",
        header,
        protocol,
        "",
        *_rate_table(base, tuned),
        "",
        test_line,
        "",
        "All-correct at other guidance scales (same samples):",
        "",
        *_cfg_table(summary["all_correct_by_cfg"]),
        "",
        f"Time: {summary['seconds']['total']:.0f} s in all ("
        + ", ".join(f"{k} {v:.0f} s" for k, v in summary["seconds"].items() if k != "total")
        + ").",
        "",
        "## Samples (base left, tuned right; same prompts and noise)",
        "",
        "![samples](samples_base_vs_tuned.png)",
        "",
        "## Training diagnostics",
        "",
        "![curves](dpo_curves.png)",
        "",
        f"Pair quality: `{settings['pairs_dir']}/pair_quality.md`. Training run: `{settings['dpo_dir']}`.",
    ]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    rows = "".join(
        f"<tr><td>{k}</td><td>{base[k]:.3f}</td><td>{tuned[k]:.3f}</td><td>{tuned[k] - base[k]:+.3f}</td></tr>"
        for k in EVAL_KEYS
        if k != "n"
    )
    cfg_rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c.strip())}</td>" for c in line.strip("|").split("|")) + "</tr>"
        for line in _cfg_table(summary["all_correct_by_cfg"])[2:]
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>imgpref demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
td,th{{padding:4px 10px;border-bottom:1px solid #ddd}}
img{{max-width:100%;image-rendering:pixelated}}</style></head><body>
<h1>imgpref demo: Diffusion-DPO on the toy world</h1>
<p>{html.escape(header)}<br>{html.escape(protocol)}</p>
<table><tr><th>metric</th><th>base</th><th>tuned</th><th>change</th></tr>{rows}</table>
<p>{html.escape(test_line)}</p>
<h2>All-correct by guidance scale</h2><table><tr><th>CFG</th><th>base</th><th>tuned</th><th>change</th>
<th>improved / worse</th><th>p</th></tr>{cfg_rows}</table>
<h2>Samples (base left, tuned right)</h2><img src="samples_base_vs_tuned.png" width="800">
<h2>Training diagnostics</h2><img src="dpo_curves.png">
</body></html>"""
    atomic_write_text(out / "report.html", page)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
