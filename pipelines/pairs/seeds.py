"""Per-pair seeds: every random choice of a pair is a pure function of (generation seed, pair index).

That is what makes the output independent of batch size, of the number of processes and of resuming:
a pair's initial noise, its corruption draws, its toy ground truth and its (t, ε) draws for the
quality report each come from their own stream of the pair's seed.
"""

from __future__ import annotations

import numpy as np

#: Independent random streams derived from one pair seed (the values only need to differ).
STREAM_CORRUPTION = 1
STREAM_GROUND_TRUTH = 2
STREAM_REFERENCE = 3
STREAM_QUALITY = 4
STREAM_CANDIDATE = 5
#: Pair seeds are 31-bit so that every consumer (torch.Generator, numpy, JSON readers) takes them.
SEED_BITS = 31


def pair_seed(seed: int, pair_index: int) -> int:
    """The seed of pair ``pair_index`` under generation seed ``seed`` (well mixed, not ``seed + index``)."""
    state = np.random.SeedSequence([seed, pair_index]).generate_state(1, dtype=np.uint64)[0]
    return int(state % (1 << SEED_BITS))


def stream(seed: int, stream_id: int, *extra: int) -> np.random.Generator:
    """A numpy generator for one purpose (``stream_id``) of one pair seed."""
    return np.random.default_rng([seed, stream_id, *extra])


def candidate_seed(seed: int, candidate: int) -> int:
    """The noise seed of one candidate image of a pair: the pair's own seed for candidate 0 (so candidate
    0 is the image the other strategies generate), then well-mixed seeds from its candidate stream."""
    if candidate == 0:
        return seed
    return int(stream(seed, STREAM_CANDIDATE, candidate).integers(1 << SEED_BITS))
