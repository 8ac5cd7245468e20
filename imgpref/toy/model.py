"""The toy model's architecture: a real FLUX-family pipeline, small enough to train on a CPU.

Made only of the diffusers/transformers classes of FLUX.1 (``FluxTransformer2DModel``,
``AutoencoderKL``, CLIP and T5 text encoders, in-code tokenizers over the world's vocabulary), so
``FluxPipeline.from_pretrained`` loads it and every imgpref recipe treats it like any FLUX checkpoint.
Sizes follow measurements on a 2-core CPU (shared/notes/toy-world-measurements.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from diffusers import FluxPipeline

from imgpref.models import tokenizers
from imgpref.models.flux import random_flux_pipeline
from imgpref.toy import world

#: Tokens per prompt for both text encoders (the world's longest prompt has 11 words).
TEXT_TOKENS = 16


@dataclass(frozen=True)
class ToySize:
    """Architecture and training budget of one toy model size."""

    name: str
    """``micro`` (tests, about a minute) or ``small`` (the demo's model, a few minutes)."""
    version: int
    """Bumped when this size's architecture or training changes (or the world's): the cache folder is
    keyed by it, so a model built by another version is rebuilt instead of reused."""
    vae_channels: tuple[int, ...]
    """AutoencoderKL block widths; n blocks = 2^(n−1)× downsampling (two: 32 px → 16×16 latents, 64
    tokens after FLUX's 2×2 packing; three: 8×8 latents, 16 tokens)."""
    latent_channels: int
    """Latent channels of the autoencoder (the transformer's tokens are 4× as wide after packing)."""
    vae_lr: float
    """Peak AdamW learning rate of the autoencoder."""
    text_dim: int
    """Width of the frozen random CLIP and T5 text encoders."""
    double_blocks: int
    """MM-DiT (joint text-image) blocks."""
    single_blocks: int
    """Single-stream blocks."""
    heads: int
    """Attention heads of 32 channels each."""
    renders: int
    """Training renders of the world."""
    vae_steps: int
    """Autoencoder optimisation steps (batch ``vae_batch``)."""
    transformer_steps: int
    """Transformer optimisation steps (batch ``batch``)."""
    vae_batch: int = 32
    batch: int = 64


SIZES = {
    "micro": ToySize(
        name="micro",
        version=2,
        vae_channels=(16, 16),
        latent_channels=4,
        vae_lr=5e-3,
        text_dim=32,
        double_blocks=1,
        single_blocks=1,
        heads=2,
        renders=4096,
        vae_steps=400,
        transformer_steps=800,
        vae_batch=16,
        batch=32,
    ),
    "small": ToySize(
        name="small",
        version=2,
        vae_channels=(16, 16, 32),
        latent_channels=16,
        vae_lr=5e-3,
        text_dim=64,
        double_blocks=2,
        single_blocks=2,
        heads=4,
        renders=16384,
        vae_steps=800,
        transformer_steps=1000,
        batch=32,
    ),
}

#: Channels per attention head of the toy transformers.
HEAD_DIM = 32
#: RoPE axes (image index, row, column); they must sum to the head dimension.
ROPE_AXES = (4, 14, 14)


def build_untrained_pipeline(size: ToySize, seed: int) -> FluxPipeline:
    """A random-init FLUX pipeline of the given toy size, with the world's vocabulary."""
    pipe = random_flux_pipeline(
        seed,
        world.VOCABULARY,
        text_tokens=TEXT_TOKENS,
        text_dim=size.text_dim,
        vae_channels=size.vae_channels,
        latent_channels=size.latent_channels,
        double_blocks=size.double_blocks,
        single_blocks=size.single_blocks,
        heads=size.heads,
        head_dim=HEAD_DIM,
        rope_axes=ROPE_AXES,
    )
    for name, tokenizer in (("CLIP", pipe.tokenizer), ("T5", pipe.tokenizer_2)):
        split = tokenizers.check_single_tokens(tokenizer, world.VOCABULARY)
        if split:
            raise RuntimeError(f"toy {name} tokenizer splits world words {split}; fix the vocabulary")
    return pipe
