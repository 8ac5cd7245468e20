"""Small preference-pair folders for the recipe tests, made from toy-world renders (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from imgpref.toy import world


def make_pair_folder(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` pairs: winner = render of the prompt, loser = the same render with another shape."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        attrs = world.sample_attributes(rng, "train")
        other = [s for s in world.SHAPES if s != attrs.shape][i % (len(world.SHAPES) - 1)]
        loser = world.Attributes(attrs.color, other, attrs.position, attrs.background)
        Image.fromarray(world.render(attrs, rng)).save(root / f"images/{i:04d}_w.png")
        Image.fromarray(world.render(loser, rng)).save(root / f"images/{i:04d}_l.png")
        row = {
            "prompt": world.prompt(attrs),
            "chosen_file_name": f"images/{i:04d}_w.png",
            "rejected_file_name": f"images/{i:04d}_l.png",
        }
        lines.append(json.dumps(row))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return root
