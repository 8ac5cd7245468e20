"""What ``imgpref demo`` runs (kept free of heavy imports: the CLI reads the defaults for ``--help``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class DemoSettings:
    """What the demo runs; ``imgpref demo --help`` shows the flags.

    The defaults are the best of the configurations measured on the toy ``small`` model (README, "The
    demo"): on-policy pairs ranked by the judge (the best against the worst of ``candidates`` images of
    the full prompt), generated without guidance, and a winner denoising term (``sft_weight``). Pairs
    sampled at CFG 3 lowered CFG 3 fidelity in every run with the winner term we measured (our reading,
    untested: training on guided samples sharpens the conditional model, and CFG 3 then guides it twice)."""

    toy_size: str = "small"
    """Toy model size: ``small`` (the demo's model) or ``micro`` (fast smoke runs)."""
    pairs: int = 768
    """Preference pairs to generate."""
    strategy: str = "ranked_generated"
    """``ranked_generated`` (best against worst of ``candidates`` images of the full prompt, ranked by the
    judge) or ``generated_vs_corrupted`` (winner from the full prompt, loser from ``corruptions``, same
    noise)."""
    candidates: int = 4
    """Images per pair for ``ranked_generated``."""
    pair_cfg: float = 1.0
    """Classifier-free guidance of the pair images (the evaluation uses the toy default, CFG 3)."""
    corruptions: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "generic_prompt"}])
    """Corruptions of the loser's prompt for ``generated_vs_corrupted`` (see ``imgpref pairs generate
    --help``)."""
    filter_not_better: bool = True
    """Keep only pairs whose winner the judge rates better than the loser."""
    beta: float = 1000.0
    """DPO β (diffusers convention: β_eff = β)."""
    sft_weight: float = 1000.0
    """Weight of the denoising loss on winners added to the DPO loss (comparable to β: both scale errors)."""
    steps: int = 300
    """DPO optimiser steps."""
    batch_size: int = 16
    """Pairs per step."""
    lr: float = 3e-3
    """LoRA learning rate."""
    rank: int = 16
    """LoRA rank (alpha = rank)."""
    validation_prompts: int = 64
    """Held-out samples judged at each validation point during training (4 points per run)."""
    extra_cfgs: tuple[float, ...] = (1.0, 2.0)
    """Guidance scales at which all-correct is also compared (the headline uses the toy default, CFG 3)."""
    n_eval: int = 256
    """Held-out samples judged for base and tuned."""
    seed: int = 0
    """Seed of everything (pairs, training draws, evaluation samples)."""
