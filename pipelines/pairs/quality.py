"""Pair quality: is the winner really better, and does the base model already prefer it?

Per pair (written into its metadata line):

- ``verdict``/``winner_better``: by the toy judge, the winner is better when it shows more of the four
  attributes (colour, shape, position, background) of the full prompt than the loser (equal counts are
  a tie, not better); otherwise by CLIP similarity to the prompt (and reference) when
  ``report.clip_path`` is set; otherwise null.
- ``base_error``/``margin``: the base model's own preference (DESIGN.md section 4). Winner and loser are
  VAE-encoded, noised with ``t_draws`` shared (t, ε) draws from the pair's seed, and denoised under the
  FULL conditioning; ``e = per_sample_error(predict(x_t, t, cond), target)`` averaged over the draws.
  ``margin = e_l − e_w``: > 0 means the base model already prefers the winner ("already right").

:func:`summarize` aggregates per (strategy, corruption) into ``pair_quality.json`` / ``.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from imgpref.losses import per_sample_error, sample_timesteps
from imgpref.models.base import FamilyAdapter, concat_cond
from imgpref.outdir import atomic_write_text
from imgpref.toy.judge import judge_batch
from pipelines.pairs.clip_score import ClipScorer
from pipelines.pairs.seeds import SEED_BITS, STREAM_QUALITY, stream

#: The toy attributes a verdict counts.
JUDGED_ATTRIBUTES = ("color", "shape", "position", "background")
#: Quantiles of the margin distribution in the report.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUALITY_JSON, QUALITY_MD = "pair_quality.json", "pair_quality.md"
TOY_JUDGE = "toy_judge"


def to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 H×W×3 images to a float B×3×H×W tensor in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def judge_counts(images: Sequence[np.ndarray], prompts: Sequence[str]) -> np.ndarray:
    """Number of the prompt's four attributes the toy judge finds in each image."""
    verdict = judge_batch(np.stack(images), list(prompts))
    return sum(verdict[name].astype(np.int64) for name in JUDGED_ATTRIBUTES)


#: ``scorer(images, prompts, references) -> (source, scores)``: higher = better, one score per image.
Scorer = Callable[[Sequence[np.ndarray], Sequence[str], Sequence[np.ndarray] | None], tuple[str, np.ndarray]]


def make_scorer(*, judge: bool, clip: ClipScorer | None) -> Scorer | None:
    """The verdict's per-image score: toy-judge attribute counts, else CLIP similarity, else None."""
    if judge:
        return lambda images, prompts, references: (TOY_JUDGE, judge_counts(images, prompts))
    if clip is not None:
        return lambda images, prompts, references: ("clip", np.asarray(clip.score(images, prompts, references)))
    return None


def verdicts(
    chosen: Sequence[np.ndarray],
    rejected: Sequence[np.ndarray],
    prompts: Sequence[str],
    references: Sequence[np.ndarray] | None,
    scorer: Scorer | None,
) -> list[dict[str, Any] | None]:
    """Per pair ``{"source", "chosen", "rejected"}`` scores (higher = better), or None without a verdict."""
    if scorer is None:
        return [None] * len(prompts)
    source, win = scorer(chosen, prompts, references)
    _, lose = scorer(rejected, prompts, references)
    return [{"source": source, "chosen": a.item(), "rejected": b.item()} for a, b in zip(win, lose, strict=True)]


def draw_noise(seed: int, draw: int, kind: str, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The pair's (t, ε) for one draw, from its quality stream (independent of batching)."""
    generator = torch.Generator("cpu").manual_seed(int(stream(seed, STREAM_QUALITY, draw).integers(1 << SEED_BITS)))
    t = sample_timesteps(1, kind=kind, generator=generator)
    return t, torch.randn((1, *shape), generator=generator)


@torch.no_grad()
def base_errors(
    model: FamilyAdapter,
    chosen: Sequence[np.ndarray],
    rejected: Sequence[np.ndarray],
    prompts: Sequence[str],
    references: Sequence[np.ndarray] | None,
    seeds: Sequence[int],
    *,
    t_draws: int,
    timesteps: str = "uniform",
) -> tuple[np.ndarray, np.ndarray]:
    """The base model's errors (e_w, e_l) per pair under the full conditioning, shared (t, ε) per pair."""
    n = len(prompts)
    latents = model.encode_images(to_tensor([*chosen, *rejected]).to(model.device, model.dtype))
    refs = None if references is None else to_tensor(references).to(model.device, model.dtype)
    cond = model.encode_prompts(list(prompts), reference_images=refs)
    cond = concat_cond(cond, cond)
    errors = torch.zeros(2 * n, dtype=torch.float32)
    for draw in range(t_draws):
        pairs = [draw_noise(s, draw, timesteps, tuple(latents.shape[1:])) for s in seeds]
        t = torch.cat([p[0] for p in pairs]).repeat(2).to(model.device)
        eps = torch.cat([p[1] for p in pairs]).repeat(2, *([1] * (latents.ndim - 1)))
        eps = eps.to(latents.device, latents.dtype)
        x_t = model.schedule.add_noise(latents, eps, t)
        pred = model.predict(x_t, t, cond)
        errors += per_sample_error(pred, model.schedule.target(latents, eps, t)).cpu()
    errors /= max(t_draws, 1)
    return errors[:n].numpy().astype(np.float64), errors[n:].numpy().astype(np.float64)


def pair_fields(verdict: dict[str, Any] | None, e_w: float | None, e_l: float | None) -> dict[str, Any]:
    """The quality fields of one metadata line."""
    better = None if verdict is None else bool(verdict["chosen"] > verdict["rejected"])
    margin = None if e_w is None else float(e_l - e_w)
    base = None if e_w is None else {"chosen": float(e_w), "rejected": float(e_l)}
    return {"winner_better": better, "verdict": verdict, "margin": margin, "base_error": base}


# ------------------------------------------------------------------------------------- report


def corruption_label(line: dict[str, Any]) -> str:
    """``generic_prompt`` or ``drop_attributes+low_guidance`` (``none`` for gt_vs_generated)."""
    return "+".join(c["name"] for c in line.get("corruption") or []) or "none"


def _margin_stats(margins: list[float]) -> dict[str, Any] | None:
    if not margins:
        return None
    m = np.asarray(margins, dtype=np.float64)
    stats = {"mean": float(m.mean()), "std": float(m.std(ddof=1)) if m.size > 1 else 0.0}
    quantiles = np.quantile(m, QUANTILES)
    stats.update({f"q{round(q * 100):02d}": float(v) for q, v in zip(QUANTILES, quantiles, strict=True)})
    stats["already_right"] = float((m > 0).mean())
    return stats


def summarize(lines: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (strategy, corruption): n, verdict rates (better / tie / loser better) and margin stats."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for line in lines:
        groups.setdefault((line["strategy"], corruption_label(line)), []).append(line)
    rows = []
    for (strategy, corruption), group in sorted(groups.items()):
        judged = [g["verdict"] for g in group if g.get("verdict") is not None]
        row: dict[str, Any] = {"strategy": strategy, "corruption": corruption, "n": len(group)}
        row["verdict_source"] = judged[0]["source"] if judged else None
        row["n_judged"] = len(judged)
        if judged:
            row["winner_better"] = float(np.mean([v["chosen"] > v["rejected"] for v in judged]))
            row["tie"] = float(np.mean([v["chosen"] == v["rejected"] for v in judged]))
            row["loser_better"] = float(np.mean([v["chosen"] < v["rejected"] for v in judged]))
        row["margin"] = _margin_stats([g["margin"] for g in group if g.get("margin") is not None])
        rows.append(row)
    return rows


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def report_markdown(report: dict[str, Any]) -> str:
    """The report as a Markdown table (margins in units of the per-element squared error)."""
    head = (
        "| strategy | corruption | n | verdict | winner better | tie | loser better | margin mean | margin std "
        "| q05 | q25 | q50 | q75 | q95 | already right |\n" + "|---" * 15 + "|\n"
    )
    body = ""
    for row in report["groups"]:
        m = row["margin"] or {}
        cells = [row["strategy"], row["corruption"], row["n"], row["verdict_source"]]
        cells += [row.get(k) for k in ("winner_better", "tie", "loser_better")]
        cells += [m.get(k) for k in ("mean", "std", "q05", "q25", "q50", "q75", "q95", "already_right")]
        body += "| " + " | ".join(_fmt(c, 4 if i >= 7 else 3) for i, c in enumerate(cells)) + " |\n"
    notes = "".join(f"- {note}\n" for note in report["notes"])
    run = report.get("run") or {}
    if run.get("pairs_per_second"):
        notes += (
            f"- this run: {run['generated']} pairs in {run['seconds']:.1f} s ({run['pairs_per_second']:.2f} pairs/s "
            f"on process 0 of {run['world_size']}; sampling {run['generation_seconds']:.1f} s, "
            f"quality {run['quality_seconds']:.1f} s)\n"
        )
    return (
        "# Pair quality\n\n"
        "Winner better: the verdict (toy judge: more correct attributes of colour/shape/position/background; "
        "CLIP: higher similarity) prefers the winner; ties are counted apart. Margin: the base model's "
        "e_l − e_w under the full conditioning with shared (t, ε), averaged over "
        f"{report['t_draws']} draws per pair; already right = share of pairs with margin > 0.\n\n"
        + head
        + body
        + ("\n" + notes if notes else "")
    )


def write_report(
    out: Path,
    lines: Sequence[dict[str, Any]],
    *,
    t_draws: int,
    notes: Sequence[str],
    run: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``pair_quality.json`` and ``pair_quality.md`` for ``lines`` (all pairs, before filtering).

    ``run``: throughput of the run that wrote the report (pairs generated, seconds, pairs/s)."""
    report = {"n_pairs": len(lines), "t_draws": t_draws, "groups": summarize(lines), "notes": list(notes)}
    report["run"] = run
    atomic_write_text(out / QUALITY_JSON, json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / QUALITY_MD, report_markdown(report))
    return report
