"""FLUX.1 family (rectified flow, MM-DiT over 2×2-packed latents, CLIP pooled + T5 sequence text).

Black Forest Labs, FLUX.1 (https://github.com/black-forest-labs/flux); diffusers ``FluxPipeline``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

from imgpref.models import packing, tiny_parts, tokenizers
from imgpref.models.base import Cond, FamilyAdapter
from imgpref.schedules import FlowSchedule

#: Distilled-guidance value fed to guidance-embedding models (FLUX.1-dev) during training and sampling,
#: the default of the diffusers FLUX DreamBooth/LoRA scripts.
DEFAULT_GUIDANCE_EMBED = 3.5
#: Longest T5 sequence the family uses (FLUX.1-dev's ``max_sequence_length``).
MAX_T5_TOKENS = 512


def random_flux_pipeline(
    seed: int,
    words: Sequence[str] = (),
    *,
    pipeline_class: type[FluxPipeline] = FluxPipeline,
    text_tokens: int = 16,
    text_dim: int = tiny_parts.TINY_TEXT_DIM,
    vae_channels: tuple[int, ...] = (16, 32),
    latent_channels: int = 4,
    double_blocks: int = 1,
    single_blocks: int = 1,
    heads: int = 2,
    head_dim: int = 16,
    rope_axes: tuple[int, int, int] = (4, 6, 6),
) -> FluxPipeline:
    """A random-init FLUX-class pipeline with in-code tokenizers over ``words``, a pure function of ``seed``.

    The defaults are the family's tiny test pipeline; the toy model passes its own widths. ``rope_axes``
    must sum to ``head_dim``; 2×2 packing makes the transformer's input ``4 · latent_channels`` wide.
    """
    tok = tokenizers.clip_tokenizer(words, max_length=text_tokens)
    tok_2 = tokenizers.t5_tokenizer(words, max_length=text_tokens)
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=latent_channels * packing.PATCH**2,
        num_layers=double_blocks,
        num_single_layers=single_blocks,
        attention_head_dim=head_dim,
        num_attention_heads=heads,
        joint_attention_dim=text_dim,
        pooled_projection_dim=text_dim,
        guidance_embeds=False,
        axes_dims_rope=rope_axes,
    )
    return pipeline_class(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False),
        vae=tiny_parts.autoencoder_kl(
            seed=seed + 1, latent_channels=latent_channels, block_out_channels=vae_channels, shift_factor=0.0
        ),
        text_encoder=tiny_parts.clip_text_encoder(tok, seed=seed + 2, hidden=text_dim),
        tokenizer=tok,
        text_encoder_2=tiny_parts.t5_text_encoder(tok_2, seed=seed + 3, d_model=text_dim),
        tokenizer_2=tok_2,
        transformer=transformer,
    )


class FluxAdapter(FamilyAdapter):
    name = "flux"
    pipeline_class = FluxPipeline
    denoiser_name = "transformer"
    #: Attention projections of the double- and single-stream blocks (the diffusers FLUX LoRA default).
    default_lora_targets = ("to_k", "to_q", "to_v", "to_out.0")

    guidance_embed: float = DEFAULT_GUIDANCE_EMBED

    @classmethod
    def build_tiny_pipeline(cls, seed: int = 0, words: Sequence[str] = ()) -> FluxPipeline:
        return random_flux_pipeline(seed, words, pipeline_class=cls.pipeline_class)

    def make_schedule(self) -> FlowSchedule:
        return FlowSchedule()

    # ----- geometry -----------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        return self.pipe.vae_scale_factor * packing.PATCH

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        self.check_image_size(height, width)
        f = self.pipe.vae_scale_factor
        return self.denoiser.config.in_channels // (packing.PATCH**2), height // f, width // f

    @property
    def max_sequence_length(self) -> int:
        return min(MAX_T5_TOKENS, self.pipe.tokenizer_2.model_max_length)

    # ----- conditioning -------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], reference_images: torch.Tensor | None = None) -> Cond:
        if reference_images is not None and not self.takes_reference_image:
            raise ValueError(f"family {self.name!r} takes no reference image; use flux-kontext for that")
        embeds, pooled, _ = self.pipe.encode_prompt(
            prompt=list(prompts), prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length
        )
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)}

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        x = (images.to(vae.device, vae.dtype) * 2 - 1).clamp(-1, 1)
        latents = vae.encode(x).latent_dist.mode()
        return (latents - vae.config.shift_factor) * vae.config.scaling_factor

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        x = latents.to(vae.dtype) / vae.config.scaling_factor + vae.config.shift_factor
        return ((vae.decode(x).sample + 1) / 2).clamp(0, 1)

    # ----- denoiser -----------------------------------------------------------------------------
    def _transformer_inputs(self, x_t: torch.Tensor, cond: Cond) -> tuple[torch.Tensor, torch.Tensor]:
        """Packed image tokens and their RoPE ids (reference-conditioned subclasses append theirs)."""
        _, _, h, w = x_t.shape
        return packing.pack_latents(x_t), packing.image_ids(h, w, device=x_t.device, dtype=x_t.dtype)

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        b, _, h, w = x_t.shape
        tokens, img_ids = self._transformer_inputs(x_t.to(self.dtype), cond)
        embeds = cond["prompt_embeds"]
        txt_ids = torch.zeros(embeds.shape[1], 3, device=x_t.device, dtype=tokens.dtype)
        guidance = None
        if self.denoiser.config.guidance_embeds:
            guidance = torch.full((b,), self.guidance_embed, device=x_t.device, dtype=tokens.dtype)
        out = self.forward_module(
            hidden_states=tokens,
            # The FLUX transformer scales its timestep by 1000 itself (the pipeline passes t/1000).
            timestep=t.to(tokens.dtype),
            guidance=guidance,
            pooled_projections=cond["pooled_prompt_embeds"],
            encoder_hidden_states=embeds,
            txt_ids=txt_ids,
            img_ids=img_ids,
            return_dict=False,
        )[0]
        # Reference tokens (if any) come after the image tokens: keep only the image's own.
        return packing.unpack_latents(out[:, : (h // packing.PATCH) * (w // packing.PATCH)], h, w)

    # ----- sampling -----------------------------------------------------------------------------
    def _pipeline_kwargs(self, reference_images: torch.Tensor | None, height: int, width: int) -> dict:
        """Extra pipeline arguments (reference-conditioned subclasses pass their reference image)."""
        return {}

    def _sample(
        self,
        prompts: list[str],
        *,
        height: int,
        width: int,
        num_steps: int,
        cfg_scale: float,
        noise: torch.Tensor,
        reference_images: torch.Tensor | None,
    ) -> torch.Tensor:
        use_cfg = cfg_scale > 1.0
        out = self.pipe(
            prompt=prompts,
            negative_prompt=[""] * len(prompts) if use_cfg else None,
            true_cfg_scale=cfg_scale,
            guidance_scale=self.guidance_embed,
            height=height,
            width=width,
            num_inference_steps=num_steps,
            latents=packing.pack_latents(noise),
            max_sequence_length=self.max_sequence_length,
            output_type="pt",
            **self._pipeline_kwargs(reference_images, height, width),
        )
        return out.images
