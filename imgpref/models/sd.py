"""Stable Diffusion 1.x/2.x and SDXL family (DDPM UNet, ε- or v-prediction, CLIP text conditioning).

Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models" (arXiv 2112.10752,
https://github.com/CompVis/stable-diffusion); Podell et al. 2023, "SDXL" (arXiv 2307.01952,
https://github.com/Stability-AI/generative-models). diffusers ``StableDiffusionPipeline`` and
``StableDiffusionXLPipeline``: one family, the pipeline class is read from the checkpoint's
``model_index.json``. v-prediction (SD 2.x-v, some XL fine-tunes) comes from the scheduler config.

The VAE helpers at the top (:func:`normalise_latents`, :func:`vae_encode`, ...) follow the SD/SDXL/SD3
pipelines' latent conventions and are shared with :mod:`imgpref.models.sd3`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import convert_state_dict_to_diffusers

from imgpref.models import tiny_parts, tokenizers
from imgpref.models.base import Cond, FamilyAdapter, ModelNotFoundError, resolve_local_path
from imgpref.schedules import DDPMSchedule, Prediction

#: Pipeline classes of this family by the ``_class_name`` diffusers writes into ``model_index.json``.
PIPELINES: dict[str, type[DiffusionPipeline]] = {
    "StableDiffusionPipeline": StableDiffusionPipeline,
    "StableDiffusionXLPipeline": StableDiffusionXLPipeline,
}
#: SD's "scaled_linear" β range (the SD 1.x/2.x/XL scheduler configs).
SD_BETA_START, SD_BETA_END = 0.00085, 0.012
#: SD 1.x/2.x VAE latent scale (``vae.config.scaling_factor``), used by the tiny VAE so the scaling path runs.
SD_VAE_SCALING = 0.18215
#: SDXL micro-conditioning (Podell et al. section 2.2): original size, crop top-left, target size.
TIME_IDS = 6
#: Width of each SDXL time-id embedding in the tiny UNet (the real one uses 256).
TINY_TIME_EMBED_DIM = 8
#: Tiny tokenizers' context length (the real CLIP uses 77).
TINY_TOKENS = 16

Variant = Literal["sd15", "xl"]


# ----- latent conventions shared with SD3 ---------------------------------------------------------
def normalise_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Raw VAE latents to the normalised latents the pipelines denoise (inverse of the pipelines' decode).

    SDXL-style configs with ``latents_mean``/``latents_std`` use ``(z − mean)·scale/std``; otherwise
    ``(z − shift)·scale`` with the shift absent (None) for SD 1.x/XL and set for SD3.
    """
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean, std = _channel_stats(mean, latents), _channel_stats(std, latents)
        return (latents - mean) * config.scaling_factor / std
    return (latents - (getattr(config, "shift_factor", None) or 0.0)) * config.scaling_factor


def denormalise_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents back to raw VAE latents, exactly as the SD/SDXL/SD3 pipelines decode them."""
    config = vae.config
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        mean, std = _channel_stats(mean, latents), _channel_stats(std, latents)
        return latents * std / config.scaling_factor + mean
    return latents / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)


def _channel_stats(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, device=like.device, dtype=like.dtype).reshape(1, -1, *([1] * (like.ndim - 2)))


@contextmanager
def vae_precision(vae: AutoencoderKL) -> Iterator[torch.dtype]:
    """Run the VAE in fp32 when it is fp16 and its config asks for it (the SD/SDXL VAEs overflow in fp16).

    Mirrors the pipelines' own ``force_upcast`` handling; yields the dtype to feed the VAE.
    """
    upcast = vae.dtype == torch.float16 and getattr(vae.config, "force_upcast", False)
    if upcast:
        vae.to(torch.float32)
    try:
        yield vae.dtype
    finally:
        if upcast:
            vae.to(torch.float16)


def vae_encode(vae: AutoencoderKL, images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to normalised latents (posterior mode: deterministic, so a pair shares latents)."""
    with vae_precision(vae) as dtype:
        x = (images.to(vae.device, dtype) * 2 - 1).clamp(-1, 1)
        return normalise_latents(vae, vae.encode(x).latent_dist.mode())


def vae_decode(vae: AutoencoderKL, latents: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """Normalised latents to images in [0, 1]."""
    with vae_precision(vae) as dtype:
        images = vae.decode(denormalise_latents(vae, latents.to(vae.device, dtype))).sample
    return ((images + 1) / 2).clamp(0, 1).to(out_dtype)


def pipeline_class_of(directory: Path, known: dict[str, type[DiffusionPipeline]]) -> type[DiffusionPipeline]:
    """The pipeline class named by a diffusers directory's ``model_index.json``, among ``known``."""
    index = directory / "model_index.json"
    if not index.is_file():
        raise ModelNotFoundError(
            f"{directory} has no model_index.json: pass a diffusers-format pipeline directory "
            "(`save_pretrained` / `hf download` layout), not a single-file checkpoint"
        )
    name = json.loads(index.read_text())["_class_name"]
    if name not in known:
        raise ValueError(f"{directory} holds a {name}; this family loads only {', '.join(known)}")
    return known[name]


# ----- the adapter --------------------------------------------------------------------------------
class SDAdapter(FamilyAdapter):
    name = "sd"
    #: Class default; each instance sets its own (SD or SDXL) from the pipeline it wraps.
    pipeline_class = StableDiffusionPipeline
    denoiser_name = "unet"
    #: Attention projections of the UNet's transformer blocks (diffusers' SD/SDXL LoRA scripts' default).
    default_lora_targets = ("to_k", "to_q", "to_v", "to_out.0")

    def __init__(self, pipe: DiffusionPipeline):
        pipeline_class = next((cls for cls in PIPELINES.values() if isinstance(pipe, cls)), None)
        if pipeline_class is None:
            raise TypeError(f"family 'sd' wraps {', '.join(PIPELINES)}, got {type(pipe).__name__}")
        # Per instance: lora.save_lora calls `model.pipeline_class.save_lora_weights`, which differs for XL.
        self.pipeline_class = pipeline_class
        super().__init__(pipe)

    # ----- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> SDAdapter:
        """Load an SD 1.x/2.x or SDXL directory with the pipeline class its ``model_index.json`` names."""
        local = resolve_local_path(path)
        pipeline_class = pipeline_class_of(local, PIPELINES)
        pipe = pipeline_class.from_pretrained(local, dtype=dtype, local_files_only=True)
        return cls(pipe.to(device))

    @classmethod
    def tiny(
        cls,
        seed: int = 0,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        variant: Variant = "sd15",
        prediction: Prediction = "epsilon",
    ) -> SDAdapter:
        """A tiny SD 1.5-style (``variant="sd15"``) or SDXL-style (``"xl"``) pipeline, ε- or v-prediction."""
        pipe = cls.build_tiny_pipeline(seed, variant=variant, prediction=prediction)
        return cls(pipe.to(device=device, dtype=None if dtype == torch.float32 else dtype))

    @classmethod
    def build_tiny_pipeline(
        cls,
        seed: int = 0,
        *,
        variant: Variant = "sd15",
        prediction: Prediction = "epsilon",
        words: Sequence[str] = (),
    ) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
        if variant not in ("sd15", "xl"):
            raise ValueError(f"variant must be 'sd15' or 'xl', got {variant!r}")
        xl = variant == "xl"
        tok = tokenizers.clip_tokenizer(words, max_length=TINY_TOKENS)
        text_encoder = tiny_parts.clip_text_encoder(tok, seed=seed + 2)
        # SDXL concatenates both encoders' hidden states and adds the pooled projection + time ids.
        pooled_and_time_ids = TIME_IDS * TINY_TIME_EMBED_DIM + tiny_parts.TINY_TEXT_DIM
        xl_unet_kwargs = {
            "cross_attention_dim": 2 * tiny_parts.TINY_TEXT_DIM,
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": TINY_TIME_EMBED_DIM,
            "projection_class_embeddings_input_dim": pooled_and_time_ids,
            "use_linear_projection": True,
        }
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            sample_size=16,
            in_channels=4,
            out_channels=4,
            block_out_channels=(16, 32),
            layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            norm_num_groups=8,
            attention_head_dim=2,
            **(xl_unet_kwargs if xl else {"cross_attention_dim": tiny_parts.TINY_TEXT_DIM}),
        )
        scheduler_kwargs = {
            "beta_start": SD_BETA_START,
            "beta_end": SD_BETA_END,
            "beta_schedule": "scaled_linear",
            "steps_offset": 1,
            "prediction_type": prediction,
        }
        vae = tiny_parts.autoencoder_kl(seed=seed + 1, latent_channels=4, scaling_factor=SD_VAE_SCALING)
        if not xl:
            return StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tok,
                unet=unet,
                scheduler=DDIMScheduler(clip_sample=False, set_alpha_to_one=False, **scheduler_kwargs),
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
        tok_2 = tokenizers.clip_tokenizer(words, max_length=TINY_TOKENS)
        return StableDiffusionXLPipeline(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=tiny_parts.clip_text_encoder(tok_2, seed=seed + 3, projection=True),
            tokenizer=tok,
            tokenizer_2=tok_2,
            unet=unet,
            scheduler=EulerDiscreteScheduler(timestep_spacing="leading", **scheduler_kwargs),
            add_watermarker=False,
        )

    def make_schedule(self) -> DDPMSchedule:
        # Training noise follows the DDPM β schedule of the scheduler config (what the diffusers SD training
        # scripts do), whichever sampler the pipeline ships (PNDM, DDIM, Euler, ...).
        config = self.pipe.scheduler.config
        ddpm = DDPMScheduler.from_config(config)
        return DDPMSchedule(ddpm.alphas_cumprod.clone(), config.get("prediction_type", "epsilon"))

    # ----- geometry -----------------------------------------------------------------------------
    @property
    def is_xl(self) -> bool:
        return isinstance(self.pipe, StableDiffusionXLPipeline)

    @property
    def default_image_size(self) -> tuple[int, int]:
        """The pipeline's default (height, width): the UNet's sample size in pixels."""
        side = self.denoiser.config.sample_size * self.pipe.vae_scale_factor
        return side, side

    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        self.check_image_size(height, width)
        f = self.pipe.vae_scale_factor
        return self.denoiser.config.in_channels, height // f, width // f

    # ----- conditioning -------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompts(
        self,
        prompts: Sequence[str],
        reference_images: torch.Tensor | None = None,
        *,
        image_size: tuple[int, int] | None = None,
    ) -> Cond:
        """CLIP hidden states; for SDXL also the pooled embedding and the micro-conditioning ``time_ids``.

        ``image_size`` (height, width) is the training resolution the SDXL time ids describe (original size
        = target size, no crop, as the pipeline conditions its own samples); default: the UNet's native size.
        """
        if reference_images is not None:
            raise ValueError(f"family {self.name!r} takes no reference image")
        prompts = list(prompts)
        if not self.is_xl:
            embeds, _ = self.pipe.encode_prompt(prompts, self.device, 1, do_classifier_free_guidance=False)
            return {"prompt_embeds": embeds.to(self.dtype)}
        embeds, _, pooled, _ = self.pipe.encode_prompt(
            prompt=prompts, device=self.device, do_classifier_free_guidance=False
        )
        height, width = image_size or self.default_image_size
        time_ids = torch.tensor([height, width, 0, 0, height, width], device=self.device, dtype=self.dtype)
        return {
            "prompt_embeds": embeds.to(self.dtype),
            "pooled_prompt_embeds": pooled.to(self.dtype),
            "time_ids": time_ids.expand(len(prompts), TIME_IDS).clone(),
        }

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return vae_encode(self.pipe.vae, images).to(self.dtype)

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return vae_decode(self.pipe.vae, latents, out_dtype=latents.dtype)

    # ----- denoiser -----------------------------------------------------------------------------
    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        # The UNet takes the integer DDPM step the pipeline's scheduler would feed it.
        timestep = self.schedule.model_timestep(t).to(x_t.device)
        added = None
        if self.is_xl:
            added = {"text_embeds": cond["pooled_prompt_embeds"], "time_ids": cond["time_ids"]}
        return self.forward_module(
            x_t.to(self.dtype),
            timestep,
            encoder_hidden_states=cond["prompt_embeds"],
            added_cond_kwargs=added,
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
        """Sample with the pipeline; the unconditional branch is its own (SD: "", SDXL base: zeros).

        SDXL checkpoints with ``force_zeros_for_empty_prompt`` (the base model) were trained to read zero
        embeddings as the empty prompt, so the pipeline's default is kept rather than encoding "".
        """
        out = self.pipe(
            prompt=prompts,
            height=height,
            width=width,
            num_inference_steps=num_steps,
            guidance_scale=cfg_scale,
            # Unit-variance noise: the pipeline scales it by the scheduler's init_noise_sigma itself.
            latents=noise,
            output_type="pt",
        )
        return out.images

    # ----- LoRA ---------------------------------------------------------------------------------
    def save_lora_kwargs(self, state_dict: dict, metadata: dict) -> dict:
        # The diffusers SD/SDXL LoRA scripts save the UNet LoRA in diffusers naming (lora.down/lora.up),
        # the form other SD tools read; load_lora_weights converts it back to peft.
        return super().save_lora_kwargs(convert_state_dict_to_diffusers(state_dict), metadata)
