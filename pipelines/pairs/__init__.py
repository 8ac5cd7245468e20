"""The self-play pair generator: preference datasets for Diffusion-DPO from a base model.

Winners come from the full conditioning (or the ground truth), losers from a corrupted one; see
:mod:`pipelines.pairs.strategies` and :mod:`pipelines.pairs.corruptions`. Entry points:
``imgpref pairs generate`` (:mod:`pipelines.pairs.cli`) and :func:`generate_pairs`.
"""
