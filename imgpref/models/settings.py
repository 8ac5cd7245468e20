"""Config sections shared by every recipe: which model to load, where, in which precision, and the LoRA.

Plain dataclasses, importable without torch, diffusers or peft (those load inside the methods that need
them), so a config is read and checked in a fraction of a second."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from imgpref.models.registry import FAMILIES, TINY

if TYPE_CHECKING:
    import torch

    from imgpref.models.base import FamilyAdapter

#: File every toy model folder holds (its build report).
TOY_MARKER = "toy_build.json"
#: Values of ``model.path`` naming the built-in toy model, and the toy size each selects.
TOY_PATHS = {"toy": "small", "toy-small": "small", "toy-micro": "micro"}


@dataclass
class ModelSettings:
    """The base model a recipe tunes."""

    family: str = "flux"
    """Model family: flux, flux-kontext, qwen-image, qwen-image-edit, sd, sd3."""
    path: str = "toy"
    """Local pipeline folder (``save_pretrained`` layout); ``toy`` (or ``toy-small``) and ``toy-micro`` =
    the built-in toy model (built and cached on first use; family ``flux``), ``tiny`` = the family's
    random-init test pipeline. Hub ids are refused: download first."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Weights and compute precision of the frozen base model."""
    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"model.family must be one of {', '.join(FAMILIES)}; got {self.family!r}")
        if self.path in TOY_PATHS and self.family != "flux":
            raise ValueError(f"model.path={self.path!r} is a flux-family model; set model.family=flux")

    @property
    def is_toy(self) -> bool:
        """Whether this is the built-in toy model, by name or by folder (its prompts can be judged exactly)."""
        return self.path in TOY_PATHS or (Path(self.path) / TOY_MARKER).is_file()

    def resolve_path(self) -> str:
        """The local folder to load (building the toy model on first use), or ``tiny``."""
        if self.path in TOY_PATHS:
            from imgpref.toy.build import ensure_toy_model

            return str(ensure_toy_model(TOY_PATHS[self.path]))
        if self.path == TINY:
            return TINY
        from imgpref.models import resolve_local_path

        return str(resolve_local_path(self.path))

    def load(self, seed: int = 0) -> FamilyAdapter:
        """Load the model on its device in its dtype."""
        from imgpref.models import load_model

        return load_model(
            self.family, self.resolve_path(), dtype=self.torch_dtype, device=self.resolve_device(), seed=seed
        )

    @property
    def torch_dtype(self) -> torch.dtype:
        import torch

        return getattr(torch, self.dtype)

    def resolve_device(self) -> torch.device:
        import torch

        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (Hu et al. 2021, arXiv 2106.09685): ΔW = (alpha / rank) · B A."""

    rank: int = 16
    """Inner dimension r of the low-rank update."""
    alpha: float = 16.0
    """Scale numerator: the update is multiplied by alpha / rank."""
    dropout: float = 0.0
    """Dropout on the LoRA branch input during training."""
    target_modules: list[str] = field(default_factory=list)
    """Module names (peft ``target_modules``) to adapt; empty means the family's default."""
    init: Literal["default", "gaussian"] = "default"
    """Initialisation of A (B is zero either way, so the adapted model starts equal to the base)."""

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"lora.rank must be a positive integer, got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be positive, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
