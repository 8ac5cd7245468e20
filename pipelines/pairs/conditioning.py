"""What one side of a pair is generated from: prompt, guidance, steps and (optionally) a reference image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imgpref.toy.world import Attributes


@dataclass(frozen=True, eq=False)
class Conditioning:
    """The full conditioning of a pair's prompt; corruptions return changed copies of it.

    ``eq=False`` because ``reference`` is an array: compare fields one by one (``reference`` with
    ``numpy.array_equal``).
    """

    prompt: str
    """Text prompt."""
    cfg_scale: float
    """Classifier-free guidance scale against the empty prompt (1 = off)."""
    num_steps: int
    """Sampler steps."""
    reference: np.ndarray | None = None
    """Reference image (uint8 H×W×3) for reference-conditioned families, else None."""
    attributes: Attributes | None = None
    """Toy-world attributes the prompt names, when the prompt is a toy prompt."""
    class_word: str | None = None
    """What the subject is ("dog"; the shape for toy prompts), when known."""

    @property
    def known_class(self) -> str | None:
        """The class word, from the manifest or the toy prompt's shape."""
        if self.class_word is not None:
            return self.class_word
        return None if self.attributes is None else self.attributes.shape
