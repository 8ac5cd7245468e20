"""The random draws of a training run as pure functions of (seed, position in the sample stream).

A run reads an endless stream of pair indices, one shuffled epoch after another; sample ``i`` of the
stream gets its own timestep and noise from a generator seeded by (seed, i). Which process and which
micro-batch consume sample ``i`` does not change what it is, so a resumed run, a run on more processes
and every run of a β sweep see exactly the same (pair, t, ε) at the same step, and the reference
model's errors for a stream position can be computed once and reused.
"""

from __future__ import annotations

from functools import lru_cache

import torch

from imgpref.losses import TimestepKind, sample_timesteps

#: Mixes the run seed with a stream position into a generator seed (a large odd multiplier keeps
#: (seed, i) pairs from colliding for any realistic run length).
_SEED_STRIDE = 1_000_003


@lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * _SEED_STRIDE + epoch)
    return torch.randperm(n, generator=generator)


def stream_indices(start: int, count: int, n: int, seed: int) -> torch.Tensor:
    """Pair indices at stream positions ``start .. start + count − 1`` (epochs of a seeded shuffle)."""
    positions = range(start, start + count)
    return torch.stack([_epoch_order(n, seed, i // n)[i % n] for i in positions])


def stream_noise(
    start: int,
    count: int,
    latent_shape: tuple[int, ...],
    seed: int,
    *,
    kind: TimestepKind = "uniform",
    mu: float = 0.0,
    sigma: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Timesteps [count] and noise [count, *latent_shape] (float32, CPU) of stream positions ``start ..``."""
    ts, noises = [], []
    for i in range(start, start + count):
        generator = torch.Generator().manual_seed((seed + 1) * _SEED_STRIDE * 7919 + i)
        ts.append(sample_timesteps(1, kind=kind, mu=mu, sigma=sigma, generator=generator))
        noises.append(torch.randn(latent_shape, generator=generator))
    return torch.cat(ts), torch.stack(noises)


def stream_start(step: int, micro: int, rank: int, *, batch_size: int, grad_accum: int, world_size: int) -> int:
    """First stream position of (optimiser step, micro-batch, process): steps take consecutive blocks of
    ``batch_size × grad_accum × world_size`` positions, split by micro-batch, then by process."""
    return ((step * grad_accum + micro) * world_size + rank) * batch_size
