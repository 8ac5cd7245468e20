"""Qwen-Image family (rectified flow, MMDiT over 2×2-packed latents of a causal 3-D VAE, Qwen2.5-VL text).

Qwen Team, "Qwen-Image Technical Report" (arXiv 2508.02324, https://github.com/QwenLM/Qwen-Image);
diffusers ``QwenImagePipeline``. The VAE works on videos (B×C×F×H×W); images are one frame, so the
adapter adds and drops that frame axis and keeps the contract's B×C×h×w layout everywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import FlowMatchEulerDiscreteScheduler, QwenImagePipeline
from transformers import Qwen2Tokenizer

from imgpref.models import packing, qwen_tiny
from imgpref.models.base import Cond
from imgpref.models.flux import FluxAdapter

#: Text tokens (after the template) a prompt may use: the pipeline's default ``max_sequence_length``.
MAX_TEXT_TOKENS = 512
#: Frame axis of the VAE's video latents (B×C×F×h×w); a still image is a single frame.
FRAME_AXIS = 2


class QwenImageAdapter(FluxAdapter):
    """Shares FLUX's geometry (VAE factor × 2×2 packing), flow schedule and sampling call; differs in
    text encoding, the VAE's normalisation and frame axis, and the transformer's inputs."""

    name = "qwen-image"
    pipeline_class = QwenImagePipeline
    #: Attention projections of the image stream: the default of the diffusers Qwen-Image DreamBooth LoRA
    #: script (``train_dreambooth_lora_qwen_image.py``), which leaves out the text-stream ``add_*_proj``.
    default_lora_targets = ("to_k", "to_q", "to_v", "to_out.0")
    #: Qwen-Image is not guidance-distilled: the pipeline's ``guidance_scale`` stays unset (None).
    guidance_embed = None

    @classmethod
    def build_tiny_pipeline(cls, seed: int = 0, words: Sequence[str] = ()) -> QwenImagePipeline:
        tok = qwen_tiny.qwen2_tokenizer(words)
        return cls.pipeline_class(**cls._tiny_components(tok, seed))

    @staticmethod
    def _tiny_components(tokenizer: Qwen2Tokenizer, seed: int) -> dict:
        """The tiny modules both Qwen-Image pipelines share."""
        return {
            # The pipeline always passes a resolution-dependent ``mu``, as for the real checkpoint.
            "scheduler": FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
            "vae": qwen_tiny.qwen_image_vae(seed=seed + 1),
            "text_encoder": qwen_tiny.qwen2_5_vl_text_encoder(tokenizer, seed=seed + 2),
            "tokenizer": tokenizer,
            "transformer": qwen_tiny.qwen_image_transformer(seed=seed + 3),
        }

    # ----- conditioning -------------------------------------------------------------------------
    @property
    def max_sequence_length(self) -> int:
        """Fixed length every prompt embedding is padded to, so conditionings concatenate."""
        return min(MAX_TEXT_TOKENS, self.pipe.tokenizer.model_max_length)

    @staticmethod
    def _pad_prompt(embeds: torch.Tensor, mask: torch.Tensor | None, length: int) -> Cond:
        """Zero-pad embeddings (B×L×D) and their mask to ``length`` tokens; padding is masked out.

        The pipeline pads only to the longest prompt of its batch and drops an all-ones mask; a fixed
        length makes conditionings of different batches concatenate. The transformer gives text RoPE by
        position, so trailing padding leaves the valid tokens' encoding unchanged.
        """
        b, n, _ = embeds.shape
        if n > length:
            raise ValueError(
                f"the prompt encodes to {n} tokens, more than the {length} every conditioning is padded to; "
                "shorten the prompt"
            )
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.long, device=embeds.device)
        return {
            "prompt_embeds": torch.nn.functional.pad(embeds, (0, 0, 0, length - n)),
            "prompt_embeds_mask": torch.nn.functional.pad(mask.long(), (0, length - n)),
        }

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str], reference_images: torch.Tensor | None = None) -> Cond:
        if reference_images is not None:
            raise ValueError(f"family {self.name!r} takes no reference image; use qwen-image-edit for that")
        embeds, mask = self.pipe.encode_prompt(
            prompt=list(prompts), device=self.device, max_sequence_length=self.max_sequence_length
        )
        return self._pad_prompt(embeds.to(self.dtype), mask, self.max_sequence_length)

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``latents_mean`` and ``latents_std`` of the VAE config, broadcastable on ``like``."""
        config = self.pipe.vae.config
        shape = (1, config.z_dim) + (1,) * (like.ndim - 2)
        mean = torch.tensor(config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
        std = torch.tensor(config.latents_std, device=like.device, dtype=like.dtype).view(shape)
        return mean, std

    def _encode_signed(self, x: torch.Tensor) -> torch.Tensor:
        """Images in [−1, 1] (B×3×H×W) to normalised latents, as the edit pipeline's ``_encode_vae_image``."""
        vae = self.pipe.vae
        latents = vae.encode(x.to(vae.device, vae.dtype).unsqueeze(FRAME_AXIS)).latent_dist.mode()
        mean, std = self._latent_stats(latents)
        return ((latents - mean) / std).squeeze(FRAME_AXIS)

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self._encode_signed((images * 2 - 1).clamp(-1, 1))

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        vae = self.pipe.vae
        z = latents.to(vae.device, vae.dtype)
        mean, std = self._latent_stats(z)
        x = vae.decode((z * std + mean).unsqueeze(FRAME_AXIS)).sample.squeeze(FRAME_AXIS)
        return ((x + 1) / 2).clamp(0, 1)

    # ----- denoiser -----------------------------------------------------------------------------
    def _image_tokens(self, x_t: torch.Tensor, cond: Cond) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        """Packed image tokens and their (frames, rows, columns) for RoPE; the edit family appends its
        reference's."""
        _, _, h, w = x_t.shape
        return packing.pack_latents(x_t), [(1, h // packing.PATCH, w // packing.PATCH)]

    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        b, _, h, w = x_t.shape
        tokens, shapes = self._image_tokens(x_t.to(self.dtype), cond)
        out = self.forward_module(
            hidden_states=tokens,
            encoder_hidden_states=cond["prompt_embeds"].to(self.dtype),
            encoder_hidden_states_mask=cond["prompt_embeds_mask"],
            # The pipeline passes sigma·1000 / 1000 = sigma = t; the timestep embedding rescales by 1000.
            timestep=t.to(device=tokens.device, dtype=tokens.dtype),
            img_shapes=[shapes] * b,
            return_dict=False,
        )[0]
        # Reference tokens (if any) come after the image tokens: keep only the image's own.
        return packing.unpack_latents(out[:, : (h // packing.PATCH) * (w // packing.PATCH)], h, w)

    # ----- sampling: FluxAdapter._sample (same pipeline call, packed noise, true CFG) -----------------
