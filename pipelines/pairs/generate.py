"""``generate_pairs``: write a preference dataset folder (images + ``metadata.jsonl``) for one config.

Pairs are made in batches of ``generation.batch_size``: the generated sides of a batch go through as
few model calls as their (guidance, steps) allow, both sides of a pair start from the same initial
noise (the pair's seed), and after each batch the images are written (aside, then renamed) and the
metadata file is rewritten atomically. Re-running with the same folder resumes: finished pairs are
skipped (see :mod:`pipelines.pairs.metadata`). Several processes (``accelerate launch``) split the
pair indices (process i takes i, i+P, i+2P, ...), each writes ``metadata.rank{i}.jsonl``, and the main
process merges them into ``metadata.jsonl`` at the end. Every random choice of a pair depends only on
(generation.seed, pair index), so the pairs do not depend on batch size or process count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm

from imgpref.artifacts.images import to_rgb_uint8
from imgpref.config import save_config, to_dict
from imgpref.models import get_family, load_model
from imgpref.models.base import FamilyAdapter
from imgpref.models.settings import ModelSettings
from imgpref.outdir import atomic_write_text
from pipelines.pairs.clip_score import ClipScorer
from pipelines.pairs.conditioning import Conditioning
from pipelines.pairs.config import RANKED_STRATEGIES, PairsConfig
from pipelines.pairs.errors import PairsError
from pipelines.pairs.metadata import (
    RANK_FILE,
    dumps_lines,
    existing_lines,
    image_name,
    rank_files,
    read_jsonl,
    write_dataset,
    write_png,
)
from pipelines.pairs.quality import Scorer, base_errors, make_scorer, pair_fields, to_tensor, verdicts, write_report
from pipelines.pairs.sources import PromptItem, pair_items
from pipelines.pairs.strategies import FULL, GROUND_TRUTH, PairPlan, check_items, plan_pair, rank_candidates

CONFIG_FILE = "pairs_config.yaml"
#: Config keys that may change when a run resumes in the same folder (they do not change any pair).
RESUMABLE_CHANGES = ("prompts.n_pairs", "generation.batch_size", "model.device", "report.filter_not_better")


# ------------------------------------------------------------------------------------- set-up


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def check_resume_config(out: Path, config: PairsConfig) -> None:
    """Refuse to resume a folder made with a config that would make different pairs (a folder whose
    earlier run failed before its first pair takes the new config)."""
    saved = out / CONFIG_FILE
    if not saved.is_file() or not existing_lines(out):
        return
    old, new = _flatten(yaml.safe_load(saved.read_text()) or {}), _flatten(to_dict(config))
    changed = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES]
    if changed:
        diffs = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise PairsError(
            f"--out {str(out)!r} holds pairs made with another config ({diffs}); pass a new --out or the same "
            f"config (only {', '.join(RESUMABLE_CHANGES)} may change when resuming)"
        )


def process_state(config: PairsConfig):
    """accelerate's ``PartialState`` (this process's index and the process count under ``accelerate
    launch`` / ``torchrun``). On CPU it must be told so, or several CPU processes each see one."""
    from accelerate import PartialState

    return PartialState(cpu=config.model.device == "cpu" or not torch.cuda.is_available())


def load_base_model(settings: ModelSettings, device: torch.device) -> tuple[FamilyAdapter, dict[str, str]]:
    """The base model and how metadata names it (``{"family", "path"}``; toy paths resolved to their folder)."""
    path = settings.resolve_path()
    model = load_model(settings.family, path, dtype=settings.torch_dtype, device=device)
    return model, {"family": settings.family, "path": path}


def verdict_settings(config: PairsConfig, items: Sequence[PromptItem]) -> tuple[bool, str | None, list[str]]:
    """(use the toy judge, CLIP folder or None, notes for the report)."""
    report = config.report
    not_toy = next((i for i in items if i.attributes is None or not i.attributes.is_complete), None)
    if report.judge == "on" and not_toy is not None:
        raise PairsError(
            f"report.judge is on but {not_toy.where}: {not_toy.prompt!r} is not a full toy prompt; set "
            "report.judge=auto (or off) and report.clip_path for CLIP verdicts"
        )
    judge = report.judge == "on" or (report.judge == "auto" and not_toy is None)
    clip = None if judge else report.clip_path
    ranked = config.strategy in RANKED_STRATEGIES
    notes = []
    if not judge and clip is None:
        if report.filter_not_better or ranked:
            what = "strategy ranked_generated ranks images by" if ranked else "report.filter_not_better needs"
            raise PairsError(
                f"{what} verdicts, but the prompts are not full toy prompts and report.clip_path is not set; "
                "set report.clip_path to a local open_clip folder"
            )
        notes.append(
            "no verdicts: prompts are not full toy prompts (or the judge is off) and report.clip_path "
            "is not set, so winner_better is null"
        )
    if config.report.t_draws == 0:
        notes.append("report.t_draws = 0: base-model margins skipped")
    if config.strategy in ("gt_vs_generated", *RANKED_STRATEGIES) and config.corruptions:
        notes.append(f"strategy {config.strategy} generates with the full conditioning only: corruptions unused")
    return judge, clip, notes


# ------------------------------------------------------------------------------------- one batch


def generate_batch(
    model: FamilyAdapter, plans: Sequence[PairPlan], config: PairsConfig, scorer: Scorer | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(winners, losers) as uint8 H×W×3 images. Generated sides share one model call per (cfg, steps); both
    sides of a pair start from the pair's noise, except ``ranked_generated`` candidates (each its own seed),
    which ``scorer`` ranks (the plan's ``ranking`` records how)."""
    gen = config.generation
    images: dict[tuple[int, str | int], np.ndarray] = {}
    jobs: dict[tuple[float, int], list[tuple[int, str | int, int, Conditioning]]] = {}
    for k, plan in enumerate(plans):
        sides: list[tuple[str | int, int, str]] = [(c, seed, FULL) for c, seed in enumerate(plan.candidate_seeds)]
        if not plan.candidate_seeds:
            sides = [(role, plan.seed, getattr(plan, f"{role}_source")) for role in ("chosen", "rejected")]
        for key, seed, source in sides:
            if source == GROUND_TRUTH:
                images[k, key] = plan.ground_truth
            else:
                cond = plan.conditioning(source)
                jobs.setdefault((cond.cfg_scale, cond.num_steps), []).append((k, key, seed, cond))
    for (cfg, steps), members in jobs.items():
        conds = [cond for *_, cond in members]
        refs = None if conds[0].reference is None else to_tensor([c.reference for c in conds]).to(model.device)
        out = model.generate(
            [c.prompt for c in conds],
            height=gen.height,
            width=gen.width,
            num_steps=steps,
            cfg_scale=cfg,
            noise=torch.cat([model.initial_noise(1, gen.height, gen.width, seed) for _, _, seed, _ in members]),
            reference_images=refs,
        )
        for (k, key, _, _), image in zip(members, out.cpu(), strict=True):
            images[k, key] = to_rgb_uint8(image)
    ranked = [k for k, plan in enumerate(plans) if plan.candidate_seeds]
    if ranked:
        _rank(plans, ranked, images, scorer)
    return [images[k, "chosen"] for k in range(len(plans))], [images[k, "rejected"] for k in range(len(plans))]


def _rank(plans: Sequence[PairPlan], ranked: list[int], images: dict, scorer: Scorer | None) -> None:
    """Score every candidate of the ranked plans in one call; the best becomes the winner, the worst the loser."""
    if scorer is None:
        raise PairsError("strategy ranked_generated needs verdicts (toy judge or report.clip_path) to rank images")
    rows = [(k, c) for k in ranked for c in range(len(plans[k].candidate_seeds))]
    prompts = [plans[k].full.prompt for k, _ in rows]
    references = None if plans[ranked[0]].full.reference is None else [plans[k].full.reference for k, _ in rows]
    source, scores = scorer([images[k, c] for k, c in rows], prompts, references)
    at = 0
    for k in ranked:
        plan, n = plans[k], len(plans[k].candidate_seeds)
        own = [v.item() for v in np.asarray(scores)[at : at + n]]  # judge counts stay integers
        at += n
        best, worst = rank_candidates(own)
        images[k, "chosen"], images[k, "rejected"] = images.pop((k, best)), images.pop((k, worst))
        plan.ranking = {
            "source": source,
            "scores": own,
            "seeds": plan.candidate_seeds,
            "chosen_seed": plan.candidate_seeds[best],
            "rejected_seed": plan.candidate_seeds[worst],
        }


def _side_settings(plan: PairPlan, role: str, key: str) -> float | int | None:
    source = getattr(plan, f"{role}_source")
    if source == GROUND_TRUTH:
        return None
    return getattr(plan.conditioning(source), key)


def metadata_line(plan: PairPlan, config: PairsConfig, model_desc: dict[str, str], quality: dict) -> dict:
    """One line of ``metadata.jsonl`` (the provenance of DESIGN.md section 3 plus the quality fields)."""
    return {
        "pair_index": plan.index,
        "prompt": plan.full.prompt,
        "chosen_file_name": image_name(plan.index, "chosen"),
        "rejected_file_name": image_name(plan.index, "rejected"),
        "seed": plan.seed,
        "strategy": config.strategy,
        "corruption": plan.corruption,
        "model": model_desc,
        "guidance": {r: _side_settings(plan, r, "cfg_scale") for r in ("chosen", "rejected")},
        "steps": {r: _side_settings(plan, r, "num_steps") for r in ("chosen", "rejected")},
        "reference_file_name": None if plan.full.reference is None else image_name(plan.index, "reference"),
        **({"ranking": plan.ranking} if plan.ranking is not None else {}),
        **quality,
    }


# ------------------------------------------------------------------------------------- the run


def merge_rank_files(
    out: Path, config: PairsConfig, notes: Sequence[str] = (), run: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Merge ``metadata.rank*.jsonl`` into ``metadata.jsonl`` (sorted, no duplicates), apply the filter,
    write the quality report (with ``run``'s throughput) and remove the merged per-process files.
    Returns counts and the report."""
    lines = existing_lines(out)
    kept, filtered = write_dataset(out, lines, config.report.filter_not_better)
    for path in rank_files(out):
        path.unlink()
    if filtered:
        notes = [
            *notes,
            f"{filtered} of {len(lines)} pairs whose winner is not better were moved to filtered.jsonl "
            "(report.filter_not_better); the rates above count all pairs",
        ]
    report = write_report(out, [lines[i] for i in sorted(lines)], t_draws=config.report.t_draws, notes=notes, run=run)
    return {"kept": kept, "filtered": filtered, "quality": report}


def generate_pairs(
    config: PairsConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, Any]:
    """Generate (or resume) the pairs of ``config`` into ``out_dir``; returns a summary dict.

    ``rank``/``world_size`` default to accelerate's ``PartialState()``; pass them to split the work
    yourself (each call then does its share, and the call with rank 0 merges what it finds at its end;
    call :func:`merge_rank_files` after the last one otherwise).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = None
    if rank is None or world_size is None:
        state = process_state(config)
        rank, world_size = state.process_index, state.num_processes
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")

    items = pair_items(config.prompts.source, config.prompts.n_pairs, config.prompts.seed)
    takes_reference = get_family(config.model.family).takes_reference_image
    check_items(items, config, takes_reference)
    judge, clip_path, notes = verdict_settings(config, items)
    check_resume_config(out, config)
    if state is not None and world_size > 1:
        state.wait_for_everyone()  # every process checked the saved config before it is replaced
    if rank == 0:
        save_config(config, out / f".{CONFIG_FILE}.tmp")
        os.replace(out / f".{CONFIG_FILE}.tmp", out / CONFIG_FILE)

    done = existing_lines(out)
    mine = [i for i in range(rank, len(items), world_size) if i not in done]
    own_file = out / RANK_FILE.format(rank=rank)
    own = {line["pair_index"]: line for line in read_jsonl(own_file) if line["pair_index"] in done}

    device = state.device if state is not None and config.model.device == "auto" else config.model.resolve_device()
    summary: dict[str, Any] = {"out_dir": str(out), "n_pairs": len(items), "rank": rank, "world_size": world_size}
    summary.update(generated=0, resumed=len(range(rank, len(items), world_size)) - len(mine))
    timing = {"generation": 0.0, "quality": 0.0}
    start = time.perf_counter()
    if mine:
        model, model_desc = load_base_model(config.model, device)
        clip = ClipScorer(clip_path, device) if clip_path is not None else None
        scorer = make_scorer(judge=judge, clip=clip)
        start = time.perf_counter()
        bar = tqdm(
            total=len(mine),
            unit="pair",
            desc=f"pairs (rank {rank})" if world_size > 1 else "pairs",
            disable=not progress,
            position=rank,
            dynamic_ncols=True,
        )
        batch_size = config.generation.batch_size
        for first in range(0, len(mine), batch_size):
            plans = [plan_pair(i, items[i], config, takes_reference) for i in mine[first : first + batch_size]]
            tick = time.perf_counter()
            chosen, rejected = generate_batch(model, plans, config, scorer)
            timing["generation"] += time.perf_counter() - tick
            tick = time.perf_counter()
            quality = _assess(model, plans, chosen, rejected, config, scorer)
            timing["quality"] += time.perf_counter() - tick
            for plan, winner, loser, fields in zip(plans, chosen, rejected, quality, strict=True):
                write_png(out / image_name(plan.index, "chosen"), winner)
                write_png(out / image_name(plan.index, "rejected"), loser)
                if plan.full.reference is not None:
                    write_png(out / image_name(plan.index, "reference"), plan.full.reference)
                own[plan.index] = metadata_line(plan, config, model_desc, fields)
            if world_size == 1:
                write_dataset(out, {**done, **own}, config.report.filter_not_better)
            else:
                atomic_write_text(own_file, dumps_lines(own[i] for i in sorted(own)))
            summary["generated"] += len(plans)
            bar.update(len(plans))
        bar.close()
    seconds = time.perf_counter() - start
    summary.update(seconds=seconds, pairs_per_second=summary["generated"] / seconds if summary["generated"] else None)
    summary.update({f"{k}_seconds": v for k, v in timing.items()})

    if state is not None and world_size > 1:
        state.wait_for_everyone()
    if rank == 0:
        run = {k: summary[k] for k in ("generated", "world_size", "seconds", "pairs_per_second")}
        run.update({f"{k}_seconds": v for k, v in timing.items()})
        summary.update(merge_rank_files(out, config, notes, run))
    if state is not None and world_size > 1:
        state.wait_for_everyone()
    return summary


def _assess(
    model: FamilyAdapter,
    plans: Sequence[PairPlan],
    chosen: list[np.ndarray],
    rejected: list[np.ndarray],
    config: PairsConfig,
    scorer: Scorer | None,
) -> list[dict[str, Any]]:
    """Quality fields per pair: verdict (judge/CLIP) and the base model's margin. Ranked pairs take their
    verdict from the ranking, which already scored the winner (best) and the loser (worst)."""
    prompts = [p.full.prompt for p in plans]
    references = None if plans[0].full.reference is None else [p.full.reference for p in plans]
    if plans[0].ranking is not None:
        found = [
            {"source": p.ranking["source"], "chosen": max(p.ranking["scores"]), "rejected": min(p.ranking["scores"])}
            for p in plans
        ]
    else:
        found = verdicts(chosen, rejected, prompts, references, scorer)
    if config.report.t_draws > 0:
        e_w, e_l = base_errors(
            model,
            chosen,
            rejected,
            prompts,
            references,
            [p.seed for p in plans],
            t_draws=config.report.t_draws,
            timesteps=config.report.timesteps,
        )
    else:
        e_w = e_l = [None] * len(plans)
    return [pair_fields(v, w, lose) for v, w, lose in zip(found, e_w, e_l, strict=True)]
