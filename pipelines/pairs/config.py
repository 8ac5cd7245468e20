"""``PairsConfig``: everything ``imgpref pairs generate`` reads, as a tree of dataclasses.

Load it with ``imgpref.config.load_config(PairsConfig, FILE, ["section.key=value", ...])``; presets live in
``configs/pairs/``. Errors say which key is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from imgpref.models.registry import REFERENCE_FAMILIES
from imgpref.models.settings import ModelSettings
from imgpref.toy.world import DEFAULT_CFG, DEFAULT_STEPS, REFERENCE_SIZE
from pipelines.pairs import corruptions as corruption_registry

#: Prompt sources built into the toy world: the prompts of its train or held-out split.
TOY_SOURCES = ("toy-train", "toy-heldout")
#: Pair strategies (see :mod:`pipelines.pairs.strategies`).
STRATEGIES = ("generated_vs_corrupted", "gt_vs_generated", "gt_vs_corrupted", "ranked_generated")
#: Strategies whose loser is generated with the corrupted conditioning.
CORRUPTED_STRATEGIES = ("generated_vs_corrupted", "gt_vs_corrupted")
#: Strategies whose winner is a ground-truth image.
GT_STRATEGIES = ("gt_vs_generated", "gt_vs_corrupted")
#: Name of the subject manifest file inside a manifest folder (``imgpref data build`` writes it).
MANIFEST_FILE = "manifest.jsonl"

#: Strategies that rank several generations of the full conditioning by the verdict (judge or CLIP).
RANKED_STRATEGIES = ("ranked_generated",)

Strategy = Literal["generated_vs_corrupted", "gt_vs_generated", "gt_vs_corrupted", "ranked_generated"]


def source_kind(source: str) -> Literal["toy", "text", "manifest"]:
    """What ``prompts.source`` names: the toy world, a text file of prompts, or a subject manifest folder."""
    if source in TOY_SOURCES:
        return "toy"
    path = Path(source).expanduser()
    if path.is_file():
        return "text"
    if path.is_dir():
        if not (path / MANIFEST_FILE).is_file():
            raise ValueError(
                f"prompts.source folder {source!r} holds no {MANIFEST_FILE}; pass a subject manifest folder "
                "(written by `imgpref data build`), a text file with one prompt per line, or "
                f"{' / '.join(TOY_SOURCES)}"
            )
        return "manifest"
    raise ValueError(
        f"prompts.source {source!r} is neither {' nor '.join(TOY_SOURCES)} nor an existing file or folder; "
        "pass a text file with one prompt per line or a subject manifest folder"
    )


@dataclass
class PromptSettings:
    """Where the pairs' prompts come from."""

    source: str = "toy-train"
    """``toy-train`` / ``toy-heldout`` (the toy world's split), a text file (one prompt per line; empty
    lines and lines starting with # are skipped) or a subject manifest folder (``manifest.jsonl``)."""
    n_pairs: int = 256
    """Number of pairs; prompts are cycled when there are fewer."""
    seed: int = 0
    """Seed of the prompt order for the toy sources (text files and manifests keep their file order)."""

    def __post_init__(self) -> None:
        if self.n_pairs < 1:
            raise ValueError(f"prompts.n_pairs must be >= 1, got {self.n_pairs}")
        source_kind(self.source)


@dataclass
class CorruptionSettings:
    """One corruption of the loser's conditioning (``imgpref pairs generate --help`` lists them)."""

    name: str = "generic_prompt"
    """Registered corruption name."""
    params: dict[str, Any] = field(default_factory=dict)
    """Its parameters; omitted ones take their defaults (filled in when the config is loaded)."""

    def __post_init__(self) -> None:
        self.params = corruption_registry.resolve(self.name, self.params)


@dataclass
class GenerationSettings:
    """How images are sampled."""

    height: int = REFERENCE_SIZE
    """Image height in pixels (a multiple of the family's VAE factor × patch size)."""
    width: int = REFERENCE_SIZE
    """Image width in pixels."""
    steps: int = DEFAULT_STEPS
    """Sampler steps of the full conditioning."""
    cfg: float = DEFAULT_CFG
    """Classifier-free guidance scale of the full conditioning (1 = off)."""
    batch_size: int = 16
    """Pairs per model call (winners and losers of a batch share calls when their settings agree)."""
    seed: int = 0
    """Generation seed: pair i's noise and draws come from (seed, i), whatever the batch size."""
    candidates: int = 4
    """``ranked_generated``: images generated per pair (from independent noise, full conditioning) and
    ranked by the verdict; the best is the winner, the worst the loser (unused by other strategies)."""

    def __post_init__(self) -> None:
        if self.candidates < 2:
            raise ValueError(f"generation.candidates must be >= 2 (a pair needs two images), got {self.candidates}")
        for key in ("height", "width", "steps", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"generation.{key} must be >= 1, got {getattr(self, key)}")
        if self.cfg < 1:
            raise ValueError(f"generation.cfg must be >= 1 (1 = no guidance), got {self.cfg}")


@dataclass
class ReportSettings:
    """The pair-quality report written with the dataset (``pair_quality.json`` / ``.md``)."""

    judge: Literal["auto", "on", "off"] = "auto"
    """Toy judge verdicts (winner shows more correct attributes than the loser); ``auto`` = on for
    toy prompts."""
    clip_path: str | None = None
    """Local open_clip folder (``open_clip_config.json`` + weights) for CLIP verdicts on other prompts."""
    t_draws: int = 4
    """Shared (t, ε) draws per pair for the base model's preference margin (0 = skip the margin)."""
    timesteps: Literal["uniform", "logit_normal"] = "uniform"
    """Distribution of those t (logit-normal(0, 1) as in SD3 training)."""
    filter_not_better: bool = False
    """Move pairs whose winner is not better (loser better or tie) to ``filtered.jsonl``."""

    def __post_init__(self) -> None:
        if self.t_draws < 0:
            raise ValueError(f"report.t_draws must be >= 0 (0 skips the margin), got {self.t_draws}")


@dataclass
class PairsConfig:
    """``imgpref pairs generate``: a preference dataset of (winner, loser) images per prompt."""

    model: ModelSettings = field(default_factory=ModelSettings)
    """The base model that generates the images (and whose preference the report measures)."""
    prompts: PromptSettings = field(default_factory=PromptSettings)
    """Prompt source and number of pairs."""
    strategy: Strategy = "generated_vs_corrupted"
    """generated_vs_corrupted (both sides generated, loser corrupted), gt_vs_generated (ground truth vs
    the model's image), gt_vs_corrupted (ground truth vs a corrupted generation) or ranked_generated (best
    vs worst of ``generation.candidates`` generations of the full conditioning, ranked by the verdict)."""
    corruptions: list[CorruptionSettings] = field(default_factory=lambda: [CorruptionSettings()])
    """Corruptions of the loser's conditioning, applied in order (unused by gt_vs_generated)."""
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    """Sampling settings of the full conditioning."""
    report: ReportSettings = field(default_factory=ReportSettings)
    """Pair-quality report and optional filtering."""

    def __post_init__(self) -> None:
        kind = source_kind(self.prompts.source)
        if self.strategy in CORRUPTED_STRATEGIES and not self.corruptions:
            raise ValueError(f"strategy {self.strategy} needs at least one corruption; add one to corruptions")
        if self.strategy in GT_STRATEGIES and kind == "text":
            raise ValueError(
                f"strategy {self.strategy} needs ground-truth images, which a text file of prompts has not; "
                f"use {' / '.join(TOY_SOURCES)} or a subject manifest folder as prompts.source"
            )
        takes_reference = self.model.family in REFERENCE_FAMILIES
        if takes_reference and kind == "text":
            raise ValueError(
                f"model family {self.model.family!r} needs a reference image per prompt, which a text file of "
                "prompts has not; use a subject manifest folder or toy prompts as prompts.source"
            )
        square = self.generation.height == self.generation.width
        if kind == "toy" and (self.strategy in GT_STRATEGIES or takes_reference) and not square:
            raise ValueError(
                "toy ground truth and reference images are square: set generation.height = generation.width"
            )
        if self.strategy in CORRUPTED_STRATEGIES:
            corruption_registry.check_family([c.name for c in self.corruptions], self.model.family, takes_reference)
            for c in self.corruptions:
                if c.name == "low_guidance" and c.params["scale"] >= self.generation.cfg:
                    raise ValueError(
                        f"low_guidance scale {c.params['scale']} is not below generation.cfg "
                        f"{self.generation.cfg}: the loser would not be corrupted; lower the scale"
                    )
                if c.name == "fewer_steps" and c.params["steps"] >= self.generation.steps:
                    raise ValueError(
                        f"fewer_steps steps {c.params['steps']} is not below generation.steps "
                        f"{self.generation.steps}; lower it"
                    )
        if self.strategy in RANKED_STRATEGIES and self.report.judge == "off" and self.report.clip_path is None:
            raise ValueError(
                "strategy ranked_generated ranks images by the verdict: keep report.judge auto/on (toy prompts) "
                "or set report.clip_path"
            )
        if self.report.filter_not_better and self.report.judge == "off" and self.report.clip_path is None:
            raise ValueError(
                "report.filter_not_better needs verdicts: keep report.judge auto/on (toy prompts) or set "
                "report.clip_path"
            )

    @property
    def corruption_list(self) -> list[tuple[str, dict[str, Any]]]:
        """(name, params) of the corruptions the strategy uses (none for gt_vs_generated)."""
        if self.strategy not in CORRUPTED_STRATEGIES:
            return []
        return [(c.name, c.params) for c in self.corruptions]
