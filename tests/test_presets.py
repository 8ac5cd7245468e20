"""Every shipped preset loads into its config tree, and every preset the README names exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from imgpref.config import load_config
from imgpref.sweep.config import SweepConfig
from imgpref.train.dpo_config import DPOConfig
from pipelines.pairs.config import PairsConfig

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"dpo": DPOConfig, "pairs": PairsConfig, "sweeps": SweepConfig}


def _presets(kind: str) -> list[Path]:
    return sorted((REPO / "configs" / kind).glob("*.yaml"))


@pytest.mark.parametrize(
    ("kind", "preset"),
    [(kind, path) for kind in CONFIGS for path in _presets(kind)],
    ids=lambda value: value.stem if isinstance(value, Path) else value,
)
def test_preset_loads(kind, preset, tmp_path):
    """Presets for the user's own data name placeholder folders; those load once pointed at real data."""
    overrides = []
    source = (yaml.safe_load(preset.read_text()).get("prompts") or {}).get("source", "toy-train")
    if not source.startswith("toy") and not (REPO / source).exists():
        overrides.append(f"prompts.source={_subject_manifest(tmp_path)}")
    config = load_config(CONFIGS[kind], preset, overrides)
    assert config is not None


def _subject_manifest(folder: Path) -> Path:
    """A one-image subject manifest in the format `imgpref data build` writes."""
    (folder / "images").mkdir(parents=True)
    Image.fromarray(np.full((32, 32, 3), 200, dtype=np.uint8)).save(folder / "images" / "0.png")
    line = {"file_name": "images/0.png", "subject": "dog", "class_word": "dog", "token": "sks"}
    line["prompts"] = ["a photo of sks dog"]
    (folder / "manifest.jsonl").write_text(json.dumps(line) + "\n")
    return folder


def test_every_family_has_a_dpo_preset_and_the_toy_world_too():
    assert {p.stem for p in _presets("dpo")} >= {"toy", "flux", "qwen_image", "sd15", "sdxl"}


@pytest.mark.parametrize("preset", sorted((REPO / "configs" / "accelerate").glob("*.yaml")), ids=lambda p: p.stem)
def test_accelerate_configs_are_yaml_with_a_distributed_type(preset):
    assert "distributed_type" in yaml.safe_load(preset.read_text())


def test_presets_named_in_the_docs_exist():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "configs").rglob("*.yaml"))]
    named = {m for doc in docs for m in re.findall(r"configs/[\w/.-]+\.yaml", doc.read_text(encoding="utf-8"))}
    assert named, "the docs name no preset at all"
    missing = sorted(name for name in named if not (REPO / name).is_file())
    assert not missing, f"named in the docs but not shipped: {missing}"
