"""Model families, looked up by name in a plain dict (DESIGN.md section 3).

Families are imported on first use, so ``import imgpref.models`` stays cheap and a family whose
pipeline class is missing from the installed diffusers fails only when it is asked for.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgpref.errors import ModelNotFoundError
from imgpref.models.registry import FAMILIES, TINY

if TYPE_CHECKING:
    import torch

    from imgpref.models.base import Cond, FamilyAdapter, resolve_local_path

#: Names re-exported from imgpref.models.base, imported (with torch and diffusers) on first access.
_FROM_BASE = ("Cond", "FamilyAdapter", "resolve_local_path")


def __getattr__(name: str) -> Any:  # PEP 562: the config modules import this package without torch
    if name in _FROM_BASE:
        return getattr(importlib.import_module("imgpref.models.base"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_family(name: str) -> type[FamilyAdapter]:
    """The adapter class of a family, or a ``KeyError`` listing the known families."""
    if name not in FAMILIES:
        raise KeyError(f"unknown model family {name!r}; known families: {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)


def load_model(
    family: str,
    path: str | Path,
    *,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> FamilyAdapter:
    """Load a family's pipeline from a local directory, or its tiny random-init one for ``path="tiny"``;
    ``dtype`` None = float32."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    cls = get_family(family)
    if str(path) == TINY:
        return cls.tiny(seed, dtype=dtype, device=device)
    return cls.from_pretrained(path, dtype=dtype, device=device)


__all__ = [
    "FAMILIES",
    "TINY",
    "Cond",
    "FamilyAdapter",
    "ModelNotFoundError",
    "get_family",
    "load_model",
    "resolve_local_path",
]
