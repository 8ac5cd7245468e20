"""The training guard: every N steps, compare validation images of the tuned model with the base's.

A recipe makes the validation images (fixed prompts and seeds, LoRA on; once with the adapters off for
the base), hands both to :meth:`ArtifactGuard.check` and does what the returned :class:`GuardDecision`
says. The guard measures every detector differentially (tuned against base, same prompt and seed),
aggregates over the validation set, returns the numbers to log, and decides:

- ``grid_p{p}``: at least ``min_flagged_fraction`` of the images carry a grid the base does not
  (per-image differential flag of `imgpref.artifacts.measure`): artifacts of over-training are
  systematic, one odd image is not;
- ``darker`` / ``desaturated`` / ``crushed_blacks``: the same changes as per image, but of the set's
  totals (mean luma over all images, and so on), so one dark picture does not trip it;
- ``collapse``: with ``groups`` (which prompt each image belongs to), the median over prompts of the
  tuned/base spread across seeds (`imgpref.artifacts.diversity`) is below ``diversity_ratio``.

A check passes when nothing trips. After ``patience`` failing checks in a row it acts on ``action``:
``warn`` (log and continue), ``stop``, or ``restore`` (stop and name the last checkpoint step whose check
passed, for the recipe to load). The recipe tells the guard which steps it saved checkpoints at
(:meth:`ArtifactGuard.note_checkpoint`); only those count as restorable. ``state_dict`` /
``load_state_dict`` carry the guard across a resume.

Usage in a recipe::

    guard = ArtifactGuard(config.guard)
    base_images = generate(model, prompts, seeds, lora=False)          # once
    ...
    if guard.due(step):
        decision = guard.check(step, generate(model, prompts, seeds), base_images, groups=prompt_ids)
        log(step, decision.metrics)
        if decision.passed:
            save_checkpoint(step)
            guard.note_checkpoint(step)
        elif decision.action == "restore":
            load_checkpoint(decision.restore_step)                     # None: nothing passed; base = step 0
        if decision.should_stop:
            break
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from imgpref.artifacts.defaults import GuardSettings
from imgpref.artifacts.diversity import spread_ratio
from imgpref.artifacts.images import as_image_list
from imgpref.artifacts.measure import image_flags, image_scores, measure
from imgpref.artifacts.tone import TONE_KEYS, tone_change

logger = logging.getLogger(__name__)

#: Prefix of every metric the guard returns (one namespace in metrics.jsonl and TensorBoard).
METRIC_PREFIX = "artifacts/"


@dataclass(frozen=True)
class GuardDecision:
    """The outcome of one check.

    ``action``: ``continue`` (passed), ``warn``, ``stop`` or ``restore``; ``tripped``: names of the
    detectors that tripped; ``metrics``: finite numbers to log (all under ``artifacts/``); ``restore_step``:
    for ``restore``, the last checkpoint step that passed (None when none did; the base model, with the
    adapters off, is then the last known good state); ``message``: one line for the log."""

    step: int
    action: Literal["continue", "warn", "stop", "restore"]
    tripped: tuple[str, ...]
    metrics: dict[str, float]
    restore_step: int | None
    message: str

    @property
    def passed(self) -> bool:
        return not self.tripped

    @property
    def should_stop(self) -> bool:
        return self.action in ("stop", "restore")


def _finite(values: list[float]) -> np.ndarray:
    """The finite values (NaN: an image too small for that grid period)."""
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


class ArtifactGuard:
    """Differential artifact checks during training (module docstring)."""

    def __init__(self, settings: GuardSettings | None = None) -> None:
        self.settings = settings or GuardSettings()
        self.passing_steps: list[int] = []
        self.checkpoint_steps: list[int] = []
        self.consecutive_failures = 0

    def due(self, step: int) -> bool:
        """Whether ``step`` is a check step (every ``settings.every`` steps; never when every is 0)."""
        return self.settings.every > 0 and step % self.settings.every == 0

    def note_checkpoint(self, step: int) -> None:
        """Record that the recipe saved a checkpoint at ``step`` (restorable if that step's check passed)."""
        if step not in self.checkpoint_steps:
            self.checkpoint_steps.append(step)

    def last_passing_checkpoint(self) -> int | None:
        """Latest checkpoint step whose check passed, or None."""
        good = set(self.passing_steps) & set(self.checkpoint_steps)
        return max(good) if good else None

    def measure_set(
        self, tuned_images: Any, base_images: Any, groups: Sequence[Any] | None = None
    ) -> tuple[dict[str, float], tuple[str, ...]]:
        """The set-level metrics (without prefix) and the names of the detectors that trip."""
        tuned, base = as_image_list(tuned_images), as_image_list(base_images)
        if len(tuned) != len(base) or not tuned:
            raise ValueError(
                f"the guard needs one base image per tuned image (same prompt and seed); got {len(tuned)} tuned "
                f"and {len(base)} base images"
            )
        if groups is not None and len(groups) != len(tuned):
            raise ValueError(f"groups must name the prompt of each image: got {len(groups)} for {len(tuned)} images")
        s, t = self.settings, self.settings.thresholds
        tuned_m = [measure(x, s.periods, s.max_size) for x in tuned]
        base_m = [measure(x, s.periods, s.max_size) for x in base]
        per_image = [image_scores(a, b) for a, b in zip(tuned_m, base_m, strict=True)]
        per_flags = [image_flags(sc, t) for sc in per_image]

        metrics: dict[str, float] = {"images": float(len(tuned))}
        tripped: list[str] = []
        for p in s.periods:
            excess = _finite([sc[f"grid_p{p}_excess"] for sc in per_image])
            excess_rms = _finite([sc[f"grid_p{p}_excess_rms"] for sc in per_image])
            flagged = float(np.mean([f"grid_p{p}" in flags for flags in per_flags]))
            metrics[f"grid_p{p}_excess_median"] = float(np.median(excess)) if excess.size else math.nan
            metrics[f"grid_p{p}_excess_max"] = float(np.max(excess)) if excess.size else math.nan
            metrics[f"grid_p{p}_excess_rms_median"] = float(np.median(excess_rms)) if excess_rms.size else math.nan
            metrics[f"grid_p{p}_flagged_fraction"] = flagged
            if flagged >= s.min_flagged_fraction:
                tripped.append(f"grid_p{p}")

        tuned_tone = {k: float(np.mean([m.tone[k] for m in tuned_m])) for k in TONE_KEYS}
        base_tone = {k: float(np.mean([m.tone[k] for m in base_m])) for k in TONE_KEYS}
        change = tone_change(tuned_tone, base_tone)
        metrics.update(tuned_tone)
        metrics.update({f"{k}_base": v for k, v in base_tone.items()})
        metrics.update(change)
        if change["mean_luma_change"] <= -t.darker:
            tripped.append("darker")
        if change["saturation_change"] <= -t.desaturated:
            tripped.append("desaturated")
        if change["crushed_black_change"] >= t.crushed_blacks:
            tripped.append("crushed_blacks")

        if groups is not None:
            ratios = []
            for key in dict.fromkeys(groups):
                members = [i for i, g in enumerate(groups) if g == key]
                if len(members) >= 2:
                    ratios.append(spread_ratio([tuned[i] for i in members], [base[i] for i in members])[0])
            if ratios:
                metrics["diversity_ratio"] = float(np.median(ratios))
                metrics["diversity_ratio_min"] = float(np.min(ratios))
                if metrics["diversity_ratio"] < s.diversity_ratio:
                    tripped.append("collapse")
        return metrics, tuple(tripped)

    def check(
        self, step: int, tuned_images: Any, base_images: Any, groups: Sequence[Any] | None = None
    ) -> GuardDecision:
        """Measure the tuned model's validation images against the base model's (same prompts and seeds,
        in the same order) and decide. ``groups``: the prompt (any hashable) of each image, for the
        diversity check; images as a list, a uint8 BxHxWx3 array or a [0, 1] Bx3xHxW tensor."""
        metrics, tripped = self.measure_set(tuned_images, base_images, groups)
        if not tripped:
            self.consecutive_failures = 0
            if step not in self.passing_steps:
                self.passing_steps.append(step)
            action, restore_step = "continue", None
            message = f"artifact guard, step {step}: passed"
            logger.info(message)
        else:
            self.consecutive_failures += 1
            restore_step = None
            if self.consecutive_failures < self.settings.patience:
                action = "warn"
                then = f"failure {self.consecutive_failures} of {self.settings.patience} before acting"
            elif self.settings.action == "restore":
                action, restore_step = "restore", self.last_passing_checkpoint()
                then = (
                    f"stopping; restore the checkpoint of step {restore_step}, the last that passed"
                    if restore_step is not None
                    else "stopping; no checkpoint passed a check (the base model is the last known good state)"
                )
            else:
                action = self.settings.action
                then = "stopping" if action == "stop" else "continuing (guard.action=warn)"
            message = f"artifact guard, step {step}: {', '.join(tripped)} tripped; {then}"
            logger.warning(message)
        # NaN (a grid period the images are too small for) is left out: metrics.jsonl stays strict JSON.
        metrics = {f"{METRIC_PREFIX}{k}": v for k, v in metrics.items() if math.isfinite(v)}
        metrics[f"{METRIC_PREFIX}passed"] = float(not tripped)
        metrics[f"{METRIC_PREFIX}tripped"] = float(len(tripped))
        return GuardDecision(step, action, tripped, metrics, restore_step, message)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to decide as the uninterrupted run would."""
        return {
            "passing_steps": list(self.passing_steps),
            "checkpoint_steps": list(self.checkpoint_steps),
            "consecutive_failures": self.consecutive_failures,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.passing_steps = [int(s) for s in state["passing_steps"]]
        self.checkpoint_steps = [int(s) for s in state["checkpoint_steps"]]
        self.consecutive_failures = int(state["consecutive_failures"])
