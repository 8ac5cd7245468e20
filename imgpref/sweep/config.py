"""The sweep's config (``imgpref sweep``): a base DPO config, a grid of dotted keys, an objective."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from imgpref.config import ConfigError, build_config, read_yaml, set_dotted
from imgpref.train.dpo_config import DPOConfig


@dataclass
class ObjectiveSettings:
    """How the report picks the best run: the value of ``metric`` in the run's last metrics row that has it
    (for ``val/*`` metrics: the last validation point), among the runs whose artifact guard never failed a
    check (``artifacts/passed`` = 0) when ``require_no_artifacts`` is on."""

    metric: str = "val/all_correct"
    """Metric key of ``metrics.jsonl`` to rank runs by (``val/all_correct``: toy judge; any logged key works)."""
    mode: Literal["max", "min"] = "max"
    """Whether higher (``max``) or lower (``min``) values are better."""
    require_no_artifacts: bool = True
    """Only runs whose guard checks all passed can be best (a run with no guard checks counts as clean)."""

    def __post_init__(self) -> None:
        if not self.metric:
            raise ValueError("objective.metric is empty: name a metrics.jsonl key, e.g. val/all_correct")


@dataclass
class SweepConfig:
    """``imgpref sweep``: one DPO run per point of ``grid``, each = base config + that point's values."""

    base_config: str = ""
    """Path of a DPO YAML (e.g. configs/dpo/flux.yaml) the base starts from; empty = DPO defaults."""
    base: dict[str, Any] = field(default_factory=dict, metadata={"schema": DPOConfig})
    """DPO config sections merged over ``base_config`` (a DPOConfig tree, e.g. ``{dpo: {beta: 1000}}``);
    set keys with ``--set base.data.path=runs/pairs``. Data order, seeds and validation prompts come from
    here, so every run shares them."""
    grid: dict[str, list[Any]] = field(default_factory=dict)
    """Dotted DPO keys to the values to try, e.g. ``{dpo.beta: [10, 100, 1000]}``; runs = every combination,
    in the order the keys and values are listed."""
    objective: ObjectiveSettings = field(default_factory=ObjectiveSettings)
    """How the report names the best run."""
    parallel: int = 1
    """Runs at a time: 1 = one after another in this process; P > 1 = P worker processes, worker i taking
    runs i, i + P, ... (they share the visible device(s))."""
    reuse_reference: bool = True
    """Compute the reference model's errors once for every run (when the runs share model, data, batch
    geometry, seed and timestep settings) instead of in each run's every step."""

    def __post_init__(self) -> None:
        if not self.grid:
            raise ValueError("grid is empty: give at least one key, e.g. grid: {dpo.beta: [100, 1000]}")
        for key, values in self.grid.items():
            if "." not in key or any(not part for part in key.split(".")):
                raise ValueError(f"grid key {key!r} must be a dotted DPO config key such as dpo.beta")
            if not isinstance(values, list) or not values:
                raise ValueError(f"grid[{key!r}] must be a non-empty list of values, e.g. [100, 1000]")
        if self.parallel < 1:
            raise ValueError(f"parallel must be >= 1 (1 = sequential), got {self.parallel}")

    def dpo_config(self, overrides: dict[str, Any] | None = None, name: str = "base") -> DPOConfig:
        """The DPO config of one run: ``base_config`` file, then ``base``, then the run's dotted overrides."""
        tree: dict[str, Any] = read_yaml(self.base_config, given_as="base_config") if self.base_config else {}
        _merge(tree, self.base)
        for key, value in (overrides or {}).items():
            set_dotted(tree, key.split("."), value)
        try:
            return build_config(DPOConfig, tree)
        except ConfigError as err:
            source = f"base_config {self.base_config!r}, " if self.base_config else ""
            raise ConfigError(
                f"sweep run {name!r}: {err} (its DPO config = {source}the sweep's base.* keys, then the grid)"
            ) from None


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    """Deep-merge ``extra`` into ``into`` (sections merge, values replace)."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
