"""``clip_score``: cosine similarity of an image and its prompt under a local open_clip model.

Radford et al. 2021 (arXiv 2103.00020); open_clip (https://github.com/mlfoundations/open_clip). The
model loads from a local folder only: ``open_clip_config.json`` plus a weights file, the ``local-dir:``
layout that ``hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K --local-dir DIR`` gives. Nothing is
downloaded. The score is the raw cosine (about 0.2-0.35 for matching pairs with real CLIPs); scale it
with the reward's weight.
"""

from __future__ import annotations

from pathlib import Path

import torch

#: File open_clip's ``local-dir:`` loader reads the architecture from.
CONFIG_FILE = "open_clip_config.json"


def make_clip_score(name: str, path: str = "", device: str = "cpu", batch_size: int = 32):
    """Factory of ``clip_score``: ``path`` is the local open_clip folder."""
    folder = Path(path).expanduser()
    if not path or not (folder / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"clip_score: params.path {path!r} must be a local open_clip folder holding {CONFIG_FILE} and its "
            "weights (e.g. `hf download laion/CLIP-ViT-B-32-laion2B-s34B-b79K --local-dir DIR`); weights are "
            "never downloaded"
        )
    if batch_size < 1:
        raise ValueError(f"clip_score: batch_size must be >= 1, got {batch_size}")
    import numpy as np
    import open_clip  # heavy: only when the reward is used
    from PIL import Image

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{folder}", device=device)
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")

    @torch.no_grad()
    def reward(images: torch.Tensor, prompts: list[str], metadata: list[dict]) -> dict[str, torch.Tensor]:
        pixels = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
        arrays = pixels.permute(0, 2, 3, 1).numpy()
        scores = []
        for start in range(0, len(prompts), batch_size):
            chunk = arrays[start : start + batch_size]
            batch = torch.stack([preprocess(Image.fromarray(np.ascontiguousarray(a))) for a in chunk]).to(device)
            image = torch.nn.functional.normalize(model.encode_image(batch).float(), dim=-1)
            tokens = tokenizer(prompts[start : start + batch_size]).to(device)
            text = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1)
            scores.append((image * text).sum(-1).cpu())
        return {name: torch.cat(scores)}

    return reward
