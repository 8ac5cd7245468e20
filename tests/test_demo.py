"""``imgpref demo`` end to end on the micro toy model with small settings: every stage, files, resume."""

from __future__ import annotations

import json
from pathlib import Path

from imgpref.config import load_config
from imgpref.toy.evaluate import EVAL_KEYS
from pipelines.demo.run import _pairs_config, run_demo
from pipelines.demo.settings import DemoSettings
from pipelines.pairs.config import PairsConfig


def test_demo_writes_report_and_summary_and_resumes(toy_micro, tmp_path):
    settings = DemoSettings(toy_size="micro", pairs=16, steps=4, batch_size=4, n_eval=16, validation_prompts=8)
    out = tmp_path / "demo"
    summary = run_demo(out, settings)
    for name in ("report.md", "report.html", "summary.json", "samples_base_vs_tuned.png", "dpo_curves.png"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "summary.json").read_text())
    assert set(EVAL_KEYS) <= set(saved["base"]) and set(EVAL_KEYS) <= set(saved["tuned"])
    assert saved["base"]["n"] == saved["tuned"]["n"] == 16
    assert {"improved", "worsened", "p_value"} <= set(saved["all_correct_test"])
    assert (out / "dpo" / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert "| all_correct |" in (out / "report.md").read_text()
    # A second run on the same folder resumes: nothing is regenerated or retrained, same numbers.
    again = run_demo(out, settings)
    assert again["base"] == summary["base"] and again["tuned"] == summary["tuned"]
    assert again["seconds"]["pairs"] < summary["seconds"]["pairs"]


def test_demo_pairs_are_the_toy_ranked_preset():
    """The preset documents the demo's preference data; the two must not drift apart."""
    preset = Path(__file__).resolve().parents[1] / "configs/pairs/toy_ranked.yaml"
    assert _pairs_config(DemoSettings(), "toy") == load_config(PairsConfig, preset)
