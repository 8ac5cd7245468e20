"""The toy model: builds, reloads as a plain FLUX checkpoint, is cached, and learned the world."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from diffusers import FluxPipeline

from imgpref.toy import build
from imgpref.toy.evaluate import EVAL_KEYS, eval_set
from imgpref.toy.kernels import pinned_settings

#: Chance rates of the world: 6 colours, 4 positions, 3 backgrounds. The micro model does not yet draw
#: shapes sharp enough for the judge (shape_acc ~0.07 < 1/4), so shape is not asserted here.
CHANCE = {"color_acc": 1 / 6, "position_acc": 1 / 4, "background_acc": 1 / 3}


def test_reloads_with_flux_pipeline(toy_micro):
    pipe = FluxPipeline.from_pretrained(toy_micro, local_files_only=True)
    out = pipe(
        prompt="a red circle at the top left on a white background",
        height=32,
        width=32,
        num_inference_steps=2,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    )
    assert out.images.shape == (1, 3, 32, 32)
    report = json.loads((toy_micro / "toy_build.json").read_text())
    assert report["size"] == "micro" and report["version"] == build.SIZES["micro"].version
    # Built in a child process with the pinned CPU kernels, whatever this process runs with.
    assert build.recorded_kernels(toy_micro) == pinned_settings()


def built_seed(folder) -> int:
    """The build seed of a toy model folder (the tests' micro model is seed 0 unless IMGPREF_TEST_TOY_SEED)."""
    return json.loads((folder / "toy_build.json").read_text())["seed"]


def test_cache_hit_does_not_rebuild(toy_micro, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a cached toy model was rebuilt")

    monkeypatch.setattr(build, "build_toy_model", refuse)
    assert build.ensure_toy_model("micro", seed=built_seed(toy_micro)) == toy_micro


def test_eval_set_is_heldout_and_deterministic():
    prompts, seeds = eval_set(50, seed=3)
    assert (prompts, seeds) == eval_set(50, seed=3)
    assert len(set(seeds)) == 50
    from imgpref.toy import world

    heldout = {world.prompt(a) for a in world.split("heldout")}
    assert set(prompts) <= heldout


def test_toy_eval_writes_documented_keys_and_beats_chance_on_colour_position_background(toy_micro, tmp_path):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "imgpref.cli", "toy", "eval", "--model", str(toy_micro), "--n", "96"]
    subprocess.run([*cmd, "--out", str(out)], check=True, capture_output=True, text=True)
    result = json.loads((out / "eval.json").read_text())
    assert set(EVAL_KEYS) <= set(result)
    assert result["n"] == 96 and (out / "grid.png").is_file()
    for key, chance in CHANCE.items():
        assert result[key] > chance, f"{key}={result[key]:.3f} is not above chance {chance:.3f}"


def test_eval_refuses_non_empty_out(toy_micro, tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    cmd = [sys.executable, "-m", "imgpref.cli", "toy", "eval", "--model", str(toy_micro), "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 2 and "not empty" in proc.stderr and proc.stderr.startswith("imgpref toy eval: error: ")
    assert (tmp_path / "keep.txt").read_text() == "x"


def test_eval_seed_changes_samples_not_the_toy_model_and_a_failed_run_leaves_out_reusable(toy_micro, tmp_path):
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "imgpref.cli", "toy", "eval", "--size", "micro", "--n", "2", "--out", str(out)]
    cmd += ["--toy-seed", str(built_seed(toy_micro))]
    failed = subprocess.run([*cmd, "--lora", str(tmp_path / "missing")], capture_output=True, text=True)
    assert failed.returncode != 0 and not (out / "eval.json").exists()
    # The evaluation seed picks prompts and noise; the toy model stays the one --toy-seed built.
    subprocess.run([*cmd, "--seed", "1"], check=True, capture_output=True, text=True)
    assert json.loads((out / "eval.json").read_text())["settings"]["model"] == str(toy_micro)


@pytest.mark.parametrize("size", ["huge"])
def test_unknown_size_is_refused(size, tmp_path):
    with pytest.raises(ValueError, match="unknown toy size 'huge'; choose one of micro, small"):
        build.build_toy_model(size, 0, tmp_path / "m")


def test_a_cached_model_built_with_other_kernels_is_kept_with_a_warning(toy_micro, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("IMGPREF_CACHE", str(tmp_path))
    old = build.toy_model_dir("micro", 0)
    old.mkdir(parents=True)
    (old / "model_index.json").write_text("{}")
    (old / "toy_build.json").write_text(json.dumps({"size": "micro", "seed": 0}))  # no cpu_kernels record
    assert build.ensure_toy_model("micro", seed=0) == old
    assert "built with other CPU kernels (not recorded)" in caplog.text and "delete the folder" in caplog.text
    caplog.clear()
    monkeypatch.setenv("IMGPREF_CACHE", str(toy_micro.parent))  # the tests' own build records the pinned kernels
    assert build.ensure_toy_model("micro", seed=built_seed(toy_micro)) == toy_micro
    assert not caplog.text
