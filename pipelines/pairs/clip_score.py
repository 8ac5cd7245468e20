"""CLIP verdicts for pairs outside the toy world: which side matches its prompt (and reference) better.

Weights come from a local open_clip folder only (``open_clip_config.json`` plus a weights file, the
``local-dir:`` layout that ``hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K --local-dir DIR`` gives);
nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines.pairs.errors import PairsError

#: File open_clip's ``local-dir:`` loader reads the architecture from.
CONFIG_FILE = "open_clip_config.json"


class ClipScorer:
    """Cosine similarity of images to their prompt, averaged with the similarity to the reference image
    when the pair has one (open_clip, Radford et al. 2021, arXiv 2103.00020)."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        folder = Path(path).expanduser()
        if not (folder / CONFIG_FILE).is_file():
            raise PairsError(
                f"report.clip_path {str(path)!r} must be a local open_clip folder holding {CONFIG_FILE} and "
                "its weights (e.g. `hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K --local-dir DIR`); "
                "weights are never downloaded"
            )
        import open_clip  # heavy: only when CLIP verdicts are asked for

        self.model, _, self.preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        self.device = device
        self.name = f"clip:{folder}"

    @torch.no_grad()
    def _image_features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        batch = torch.stack([self.preprocess(Image.fromarray(a)) for a in images]).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1)

    @torch.no_grad()
    def score(
        self, images: Sequence[np.ndarray], prompts: Sequence[str], references: Sequence[np.ndarray] | None = None
    ) -> np.ndarray:
        """Per image: cos(image, prompt), or its mean with cos(image, reference) when references are given."""
        image = self._image_features(images)
        text = torch.nn.functional.normalize(
            self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)).float(), dim=-1
        )
        score = (image * text).sum(-1)
        if references is not None:
            score = (score + (image * self._image_features(references)).sum(-1)) / 2
        return score.cpu().numpy().astype(np.float64)
