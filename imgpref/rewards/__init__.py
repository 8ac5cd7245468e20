"""Rewards for online RL (GRPO/GDPO): a registry of factories and a weighted multi-reward.

Contract (DESIGN.md section 3): a reward is a callable
``(images B×3×H×W float in [0, 1], prompts: list[str], metadata: list[dict]) -> {name: tensor [B]}``
(float32, on the CPU). A factory takes the reward's ``params`` from the config and returns that callable;
heavy imports (open_clip, scipy detectors) happen inside the factory, and weights load from local paths
only. The registry maps a name to ``"module:factory"`` so importing this package stays cheap.

Registered rewards (``params`` in brackets; see each module):

- ``toy_color``, ``toy_shape``, ``toy_position``, ``toy_background``, ``toy_all_correct``: the toy
  world's judge, 0/1 per image; ``toy_shape_fit`` [color_gate]: the judge's continuous fit of the asked shape
  (:mod:`imgpref.rewards.toy`);
- ``luma_band`` [low, high, scale], ``aspect`` [ratio, tolerance], ``size`` [min_side, max_side]:
  format constraints (:mod:`imgpref.rewards.format`);
- ``artifact_penalty`` [grid_weight, dark_weight, ...]: grid/checkerboard and darkening penalties from
  :mod:`imgpref.artifacts` (:mod:`imgpref.rewards.artifact`);
- ``clip_score`` [path, device, batch_size]: open_clip image-text cosine from a local folder
  (:mod:`imgpref.rewards.clip`);
- ``http`` [url, timeout, ...]: a reward served by another process (:mod:`imgpref.rewards.http_reward`).
"""

from __future__ import annotations

import importlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

#: A built reward: (images, prompts, metadata) -> {name: float32 tensor [B]}.
RewardFn = Callable[[torch.Tensor, list[str], list[dict]], dict[str, torch.Tensor]]

#: Reward name -> "module:factory"; a factory is ``factory(name, **params) -> RewardFn``.
REWARDS: dict[str, str] = {
    "toy_color": "imgpref.rewards.toy:make_toy_reward",
    "toy_shape": "imgpref.rewards.toy:make_toy_reward",
    "toy_position": "imgpref.rewards.toy:make_toy_reward",
    "toy_background": "imgpref.rewards.toy:make_toy_reward",
    "toy_all_correct": "imgpref.rewards.toy:make_toy_reward",
    "toy_shape_fit": "imgpref.rewards.toy:make_toy_reward",
    "luma_band": "imgpref.rewards.format:make_luma_band",
    "aspect": "imgpref.rewards.format:make_aspect",
    "size": "imgpref.rewards.format:make_size",
    "artifact_penalty": "imgpref.rewards.artifact:make_artifact_penalty",
    "clip_score": "imgpref.rewards.clip:make_clip_score",
    "http": "imgpref.rewards.http_reward:make_http_reward",
}


@dataclass
class RewardSpec:
    """One reward of a run: which, how much it weighs, and its parameters."""

    name: str = "toy_all_correct"
    """Registry name (imgpref.rewards.REWARDS): toy_color, toy_shape, toy_position, toy_background,
    toy_all_correct, toy_shape_fit, luma_band, aspect, size, artifact_penalty, clip_score, http."""
    weight: float = 1.0
    """Weight w_k of this reward in the advantage (sum of weighted rewards, or GDPO's weighted sum)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the reward's factory (e.g. {low: 0.35, high: 0.6} for luma_band)."""
    label: str = ""
    """Name the reward is logged and weighted under (empty = ``name``); set it to use one reward twice."""

    def __post_init__(self) -> None:
        if self.name not in REWARDS:
            raise ValueError(f"unknown reward {self.name!r}; known rewards: {', '.join(REWARDS)}")
        if not math.isfinite(self.weight):
            raise ValueError(f"reward {self.name!r}: weight must be a finite number, got {self.weight!r}")
        check_params(self.name, self.params)

    @property
    def key(self) -> str:
        return self.label or self.name


def _factory(name: str) -> Callable[..., RewardFn]:
    module, factory = REWARDS[name].split(":")
    return getattr(importlib.import_module(module), factory)  # factories import their heavy parts themselves


def check_params(name: str, params: dict[str, Any]) -> None:
    """Refuse params the reward's factory does not take (when the config loads, not at the first step)."""
    signature = inspect.signature(_factory(name))
    try:
        signature.bind(name, **params)
    except TypeError as err:
        named = list(signature.parameters.values())[1:]
        takes = [p.name for p in named if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)] or ["no params"]
        raise ValueError(f"reward {name!r}: bad params {params!r} ({err}); it takes: {', '.join(takes)}") from None


def build_reward(name: str, params: dict[str, Any] | None = None) -> RewardFn:
    """Build one registered reward; its output is ``{name: tensor [B]}``."""
    if name not in REWARDS:
        raise KeyError(f"unknown reward {name!r}; known rewards: {', '.join(REWARDS)}")
    params = params or {}
    check_params(name, params)  # a TypeError raised inside the factory is its own bug, not bad params
    return _factory(name)(name, **params)


class MultiReward:
    """Several rewards evaluated on the same images, each under its key, with the weights of the config."""

    def __init__(self, specs: Sequence[RewardSpec]) -> None:
        if not specs:
            raise ValueError("no rewards configured: give at least one {name, weight, params}")
        keys = [s.key for s in specs]
        if len(set(keys)) != len(keys):
            raise ValueError(f"reward keys must be unique, got {keys}; set `label` to use one reward twice")
        self.specs = list(specs)
        self.fns = [build_reward(s.name, s.params) for s in specs]
        self.weights = {s.key: float(s.weight) for s in specs}

    def __call__(self, images: torch.Tensor, prompts: list[str], metadata: list[dict] | None = None) -> dict:
        metadata = metadata if metadata is not None else [{} for _ in prompts]
        out: dict[str, torch.Tensor] = {}
        for spec, fn in zip(self.specs, self.fns, strict=True):
            values = fn(images, list(prompts), metadata)[spec.name]
            out[spec.key] = check_reward(values, len(prompts), spec.key)
        return out


def check_reward(values: Any, batch: int, name: str) -> torch.Tensor:
    """A reward's values as a finite float32 CPU tensor [B], or a clear error."""
    values = torch.as_tensor(values, dtype=torch.float32).detach().cpu()
    if values.shape != (batch,):
        raise ValueError(f"reward {name!r} returned shape {tuple(values.shape)}, expected ({batch},)")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"reward {name!r} returned non-finite values: {values.tolist()}")
    return values


__all__ = ["REWARDS", "MultiReward", "RewardFn", "RewardSpec", "build_reward", "check_reward"]
