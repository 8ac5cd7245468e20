"""The self-play pair generator: preference datasets for Diffusion-DPO from a base model.

Winners come from the full conditioning (or the ground truth), losers from a corrupted one; see
:mod:`pipelines.pairs.strategies` and :mod:`pipelines.pairs.corruptions`. Entry points:
``imgpref pairs generate`` (:mod:`pipelines.pairs.cli`) and :func:`generate_pairs`.
"""

from pipelines.pairs.config import PairsConfig
from pipelines.pairs.corruptions import CORRUPTIONS, apply_corruptions
from pipelines.pairs.errors import PairsError
from pipelines.pairs.generate import generate_pairs, merge_rank_files

__all__ = ["CORRUPTIONS", "PairsConfig", "PairsError", "apply_corruptions", "generate_pairs", "merge_rank_files"]
