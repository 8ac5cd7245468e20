"""Expand a sweep's grid into named runs: every combination, in a fixed order, with filesystem-safe names."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from imgpref.sweep.config import SweepConfig
from imgpref.train.dpo_config import DPOConfig

#: Characters kept in run names; anything else becomes "_" (names are folder names under ``OUT/runs``).
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]")


@dataclass(frozen=True)
class Run:
    """One point of the grid: its folder name, its dotted overrides and the resulting DPO config."""

    name: str
    overrides: dict[str, Any]
    config: DPOConfig


def format_value(value: Any) -> str:
    """Short, exact text of a grid value: 1000.0 → "1000", 1e-4 → "0.0001", True → "true"."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return str(value)


def run_name(overrides: dict[str, Any]) -> str:
    """``dpo.beta=1000`` or ``dpo.beta=1000,optim.lr=0.0001`` (keys in grid order)."""
    name = ",".join(f"{key}={format_value(value)}" for key, value in overrides.items())
    return _UNSAFE.sub("_", name)


def expand_grid(config: SweepConfig) -> list[Run]:
    """The runs of the sweep: the product of the grid's values, the first key varying slowest."""
    keys = list(config.grid)
    runs: list[Run] = []
    for values in itertools.product(*(config.grid[k] for k in keys)):
        overrides = dict(zip(keys, values, strict=True))
        name = run_name(overrides)
        runs.append(Run(name, overrides, config.dpo_config(overrides, name)))
    names = [r.name for r in runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"grid values give the same run name twice ({', '.join(duplicates)}); list each value once")
    return runs
