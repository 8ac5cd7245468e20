"""The model-family contract: what the algorithms need from a diffusion model, in one small class.

A family adapter wraps a diffusers pipeline and exposes only what DPO, GRPO and the pair generator need:

- ``encode_prompts``: prompts (and reference images, for reference-conditioned families) to a
  :data:`Cond`, a dict of batch-first tensors that can be cached on disk, concatenated and indexed;
- ``encode_images`` / ``decode_latents``: images in [0, 1] (B×3×H×W) to normalised latents
  (B×C×h×w, never the packed token layout) and back;
- ``schedule``: the forward process and training target (:mod:`imgpref.schedules`);
- ``predict``: one denoiser call, latents in, prediction of the same shape out;
- ``generate``: the family pipeline's own sampler, for evaluation and data generation;
- ``default_lora_targets`` and ``pipeline_class`` (which class saves and loads its LoRA).

Each family also has a tiny offline builder (random init, in-code tokenizers) so every code path runs
in tests without weights. Real models load from a local directory only (:func:`resolve_local_path`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch
from diffusers import DiffusionPipeline

from imgpref.errors import ModelNotFoundError
from imgpref.schedules import Schedule

#: Conditioning: a dict of batch-first tensors (prompt embeddings, masks, reference latents).
Cond = dict[str, torch.Tensor]


def resolve_local_path(path_or_id: str | Path) -> Path:
    """Return ``path_or_id`` as a local directory, or fail at once with a message that says what to do.

    imgpref never downloads weights: a hub id such as ``black-forest-labs/FLUX.1-dev`` must be
    downloaded by the user (where there is network) and passed as a local path.
    """
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    hint = (
        f"download it where there is network (e.g. `hf download {path_or_id} --local-dir DIR`) and pass DIR"
        if "/" in str(path_or_id) and not str(path_or_id).startswith(("/", ".", "~"))
        else "check the path"
    )
    raise ModelNotFoundError(
        f"model {str(path_or_id)!r} is not a local directory. imgpref loads weights from local paths "
        f"only (no hub downloads): {hint}."
    )


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """No per-component loading bars from diffusers and transformers (a local load takes well under a
    second; imgpref shows progress for its own long work)."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    states = [(m, m.is_progress_bar_enabled()) for m in (diffusers_logging, transformers_logging)]
    for module, _ in states:
        module.disable_progress_bar()
    try:
        yield
    finally:
        for module, enabled in states:
            if enabled:
                module.enable_progress_bar()


def concat_cond(*conds: Cond) -> Cond:
    """Concatenate conditionings along the batch dimension (e.g. winner and loser in one forward)."""
    return {key: torch.cat([c[key] for c in conds], dim=0) for key in conds[0]}


def index_cond(cond: Cond, index: torch.Tensor | slice | int) -> Cond:
    """Select samples of a conditioning along the batch dimension."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    return {key: value[index] for key, value in cond.items()}


class FamilyAdapter(ABC):
    """One model family (FLUX, Qwen-Image, SD, ...) behind the interface the algorithms use."""

    #: Registry name, e.g. ``"flux"``.
    name: ClassVar[str]
    #: The diffusers pipeline class that builds, saves and loads this family (and its LoRA).
    pipeline_class: ClassVar[type[DiffusionPipeline]]
    #: Attribute of the pipeline holding the denoiser: ``"transformer"`` or ``"unet"``.
    denoiser_name: ClassVar[str] = "transformer"
    #: Module names (peft ``target_modules``) that get LoRA when the config names none.
    default_lora_targets: ClassVar[tuple[str, ...]]
    #: Whether the family is conditioned on a reference image besides the prompt.
    takes_reference_image: ClassVar[bool] = False

    def __init__(self, pipe: DiffusionPipeline):
        self.pipe = pipe
        # imgpref shows its own progress over batches; the pipeline's per-step bar would interleave.
        pipe.set_progress_bar_config(disable=True)
        self.schedule: Schedule = self.make_schedule()
        self._forward_module: torch.nn.Module | None = None

    # ----- construction -------------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> FamilyAdapter:
        """Load a full pipeline from a local directory (``save_pretrained`` layout)."""
        local = resolve_local_path(path)
        with _quiet_loading():
            pipe = cls.pipeline_class.from_pretrained(local, dtype=dtype, local_files_only=True)
        return cls(pipe.to(device))

    @classmethod
    def tiny(
        cls, seed: int = 0, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> FamilyAdapter:
        """A complete random-init pipeline of this family, small enough for CPU tests."""
        pipe = cls.build_tiny_pipeline(seed)
        return cls(pipe.to(device=device, dtype=None if dtype == torch.float32 else dtype))

    @classmethod
    @abstractmethod
    def build_tiny_pipeline(cls, seed: int = 0) -> DiffusionPipeline:
        """Build the family's pipeline with random weights and in-code tokenizers, deterministically."""

    @abstractmethod
    def make_schedule(self) -> Schedule:
        """The forward process and training target matching the pipeline's scheduler."""

    # ----- properties ---------------------------------------------------------------------------
    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.denoiser_name)

    @property
    def forward_module(self) -> torch.nn.Module:
        """What :meth:`predict` calls: the denoiser, or its accelerate-prepared wrapper (DDP, FSDP) once
        a recipe sets one with :meth:`set_forward_module`."""
        return self._forward_module if self._forward_module is not None else self.denoiser

    def set_forward_module(self, module: torch.nn.Module | None) -> None:
        """Route :meth:`predict` through ``module`` (a wrapper of :attr:`denoiser`); ``None`` undoes it."""
        self._forward_module = module

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    @property
    def dtype(self) -> torch.dtype:
        return self.denoiser.dtype

    # ----- the contract -------------------------------------------------------------------------
    @abstractmethod
    def encode_prompts(self, prompts: Sequence[str], reference_images: torch.Tensor | None = None) -> Cond:
        """Encode prompts (and reference images in [0, 1], B×3×H×W) into cacheable batch-first tensors."""

    @abstractmethod
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] (B×3×H×W) to normalised latents (B×C×h×w) as training uses them."""

    @abstractmethod
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B×C×h×w) to images in [0, 1] (B×3×H×W)."""

    @abstractmethod
    def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """The (C, h, w) latent shape of an image of the given size."""

    @abstractmethod
    def predict(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """One denoiser call: noisy latents (B×C×h×w) and t ∈ [0, 1] ([B]) to a prediction of x_t's shape."""

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        *,
        height: int,
        width: int,
        num_steps: int = 20,
        cfg_scale: float = 1.0,
        noise: torch.Tensor | None = None,
        seed: int = 0,
        reference_images: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample images in [0, 1] (B×3×H×W) with the family's own pipeline.

        ``cfg_scale`` is classifier-free guidance against the empty prompt (1 = off). ``noise`` is the
        initial latent noise in the unpacked layout (B×C×h×w); when ``None`` it is drawn from ``seed``.
        """
        if self.takes_reference_image and reference_images is None:
            raise ValueError(f"family {self.name!r} needs reference_images (B×3×H×W in [0, 1]) to generate")
        if not self.takes_reference_image and reference_images is not None:
            raise ValueError(f"family {self.name!r} takes no reference image")
        self.check_image_size(height, width)
        if noise is None:
            noise = self.initial_noise(len(prompts), height, width, seed)
        images = self._sample(
            list(prompts),
            height=height,
            width=width,
            num_steps=num_steps,
            cfg_scale=cfg_scale,
            noise=noise.to(self.device, self.dtype),
            reference_images=reference_images,
        )
        return images.float().clamp(0, 1)

    @abstractmethod
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
        """Run the family pipeline on checked inputs (unit-variance ``noise`` already on the device)."""

    # ----- shared helpers -----------------------------------------------------------------------
    def initial_noise(self, batch: int, height: int, width: int, seed: int) -> torch.Tensor:
        """Deterministic initial noise (B×C×h×w, fp32 on the CPU generator, then moved)."""
        generator = torch.Generator("cpu").manual_seed(seed)
        noise = torch.randn((batch, *self.latent_shape(height, width)), generator=generator)
        return noise.to(self.device, self.dtype)

    def check_image_size(self, height: int, width: int) -> None:
        """Raise a clear error when the pipeline cannot produce this size."""
        multiple = self.size_multiple
        if height % multiple or width % multiple:
            raise ValueError(
                f"{self.name}: image size {height}x{width} must be a multiple of {multiple} "
                f"(VAE scale factor × patch size); try {height - height % multiple or multiple}"
                f"x{width - width % multiple or multiple}"
            )

    @property
    def size_multiple(self) -> int:
        """Image sides must divide by this (VAE downsampling × patching)."""
        return int(getattr(self.pipe, "vae_scale_factor", 8))

    def save_lora_kwargs(self, state_dict: dict, metadata: dict) -> dict:
        """Keyword arguments of ``pipeline_class.save_lora_weights`` for the denoiser's LoRA."""
        return {
            f"{self.denoiser_name}_lora_layers": state_dict,
            f"{self.denoiser_name}_lora_adapter_metadata": metadata,
        }
