"""Stable Diffusion 3 / 3.5 family (rectified flow, MM-DiT over 2×2 patches, two CLIPs + T5 text).

Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution Image Synthesis" (arXiv
2403.03206, https://github.com/Stability-AI/sd3-ref); diffusers ``StableDiffusion3Pipeline``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

from imgpref.models import tiny_parts, tokenizers
from imgpref.models.base import Cond, FamilyAdapter
from imgpref.models.sd import vae_decode, vae_encode
from imgpref.schedules import FlowSchedule

#: The pipeline's default T5 length (``max_sequence_length`` of ``StableDiffusion3Pipeline.__call__``).
MAX_T5_TOKENS = 256
#: SD3's sampling shift of the flow-matching scheduler (``scheduler_config.json`` of SD3/3.5).
SD3_SHIFT = 3.0
#: SD3's 16-channel VAE normalisation, used by the tiny VAE so the shift/scale path runs.
SD3_VAE_SCALING, SD3_VAE_SHIFT = 1.5305, 0.0609
#: Tiny tokenizers' context length.
TINY_TOKENS = 16


class SD3Adapter(FamilyAdapter):
    name = "sd3"
    pipeline_class = StableDiffusion3Pipeline
    denoiser_name = "transformer"
    #: Image- and text-stream attention projections of the joint blocks (diffusers' SD3 LoRA script default).
    default_lora_targets = (
        "attn.add_k_proj",
        "attn.add_q_proj",
        "attn.add_v_proj",
        "attn.to_add_out",
        "attn.to_k",
        "attn.to_out.0",
        "attn.to_q",
        "attn.to_v",
    )

    @classmethod
    def build_tiny_pipeline(cls, seed: int = 0, words: Sequence[str] = ()) -> StableDiffusion3Pipeline:
        tok = tokenizers.clip_tokenizer(words, max_length=TINY_TOKENS)
        tok_2 = tokenizers.clip_tokenizer(words, max_length=TINY_TOKENS)
        tok_3 = tokenizers.t5_tokenizer(words, max_length=TINY_TOKENS)
        # The pipeline zero-pads the two CLIPs' concatenated hidden states to T5's width, so T5 must be at
        # least as wide as both CLIPs together; the pooled input is the two CLIP projections side by side.
        clip_width = 2 * tiny_parts.TINY_TEXT_DIM
        heads, head_dim = 4, 8
        torch.manual_seed(seed)
        transformer = SD3Transformer2DModel(
            sample_size=16,
            patch_size=2,
            in_channels=16,
            out_channels=16,
            # Two blocks: a full joint block and the last, context-pre-only one (as in every SD3 model).
            num_layers=2,
            attention_head_dim=head_dim,
            num_attention_heads=heads,
            joint_attention_dim=clip_width,
            caption_projection_dim=heads * head_dim,
            pooled_projection_dim=clip_width,
            pos_embed_max_size=32,
            # SD3.5's extras: a second self-attention in the first block and RMS-normed q/k.
            dual_attention_layers=(0,),
            qk_norm="rms_norm",
        )
        return cls.pipeline_class(
            transformer=transformer,
            scheduler=FlowMatchEulerDiscreteScheduler(shift=SD3_SHIFT),
            vae=tiny_parts.autoencoder_kl(
                seed=seed + 1, latent_channels=16, scaling_factor=SD3_VAE_SCALING, shift_factor=SD3_VAE_SHIFT
            ),
            text_encoder=tiny_parts.clip_text_encoder(tok, seed=seed + 2, projection=True),
            tokenizer=tok,
            text_encoder_2=tiny_parts.clip_text_encoder(tok_2, seed=seed + 3, projection=True),
            tokenizer_2=tok_2,
            text_encoder_3=tiny_parts.t5_text_encoder(tok_3, seed=seed + 4, d_model=clip_width),
            tokenizer_3=tok_3,
        )

    def make_schedule(self) -> FlowSchedule:
        return FlowSchedule()

    # ----- geometry -----------------------------------------------------------------------------
    @property
    def size_multiple(self) -> int:
        return self.pipe.vae_scale_factor * self.denoiser.config.patch_size

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        self.check_image_size(height, width)
        f = self.pipe.vae_scale_factor
        return self.denoiser.config.in_channels, height // f, width // f

    @property
    def max_sequence_length(self) -> int:
        tok = self.pipe.tokenizer_3
        return MAX_T5_TOKENS if tok is None else min(MAX_T5_TOKENS, tok.model_max_length)

    # ----- conditioning -------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], reference_images: torch.Tensor | None = None) -> Cond:
        if reference_images is not None:
            raise ValueError(f"family {self.name!r} takes no reference image")
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=self.device,
            do_classifier_free_guidance=False,
            max_sequence_length=self.max_sequence_length,
        )
        return {"prompt_embeds": embeds.to(self.dtype), "pooled_prompt_embeds": pooled.to(self.dtype)}

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.pipe.vae, images).to(self.dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.pipe.vae, latents, out_dtype=latents.dtype)

    # ----- denoiser -----------------------------------------------------------------------------
    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        x_t = x_t.to(self.dtype)
        # The pipeline feeds the scheduler's timesteps, σ·num_train_timesteps (σ = t here), unscaled.
        timestep = t.to(x_t.device, torch.float32) * self.pipe.scheduler.config.num_train_timesteps
        return self.forward_module(
            hidden_states=x_t,
            timestep=timestep,
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled_prompt_embeds"],
            return_dict=False,
        )[0]

    # ----- sampling -----------------------------------------------------------------------------
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
        out = self.pipe(
            prompt=prompts,
            # None: the pipeline encodes "" for the unconditional branch (only when cfg_scale > 1).
            negative_prompt=None,
            guidance_scale=cfg_scale,
            height=height,
            width=width,
            num_inference_steps=num_steps,
            latents=noise,
            max_sequence_length=self.max_sequence_length,
            output_type="pt",
        )
        return out.images
