"""Offline behaviour (hub ids fail fast and clearly) and output-folder safety."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from imgpref.models import ModelNotFoundError, load_model
from imgpref.outdir import OutputDirError, atomic_write_text, prepare_out_dir


def test_hub_id_fails_fast_with_instructions():
    start = time.perf_counter()
    with pytest.raises(ModelNotFoundError) as err:
        load_model("flux", "black-forest-labs/FLUX.1-dev")
    assert time.perf_counter() - start < 1.0
    message = str(err.value)
    assert "not a local directory" in message and "--local-dir" in message


def test_missing_local_path_says_check_the_path(tmp_path):
    with pytest.raises(ModelNotFoundError, match="check the path"):
        load_model("flux", tmp_path / "missing")


def test_unknown_family_lists_known():
    with pytest.raises(KeyError, match="known families: flux, flux-kontext"):
        load_model("dalle", "tiny")


def test_tiny_pipeline_round_trips_through_save_pretrained(tmp_path):
    import torch

    model = load_model("flux", "tiny")
    model.pipe.save_pretrained(tmp_path / "pipe")
    again = load_model("flux", tmp_path / "pipe")
    x = torch.randn(1, *model.latent_shape(16, 16))
    cond = model.encode_prompts(["a red circle"])
    t = torch.tensor([0.5])
    with torch.no_grad():
        torch.testing.assert_close(
            again.predict(x, t, again.encode_prompts(["a red circle"])), model.predict(x, t, cond)
        )


def test_out_dir_claim_resume_refuse(tmp_path):
    out, resumed = prepare_out_dir(tmp_path / "run", "train dpo", resumable=True)
    assert not resumed
    (out / "result.txt").write_text("keep me")
    assert prepare_out_dir(out, "train dpo", resumable=True) == (out, True)
    with pytest.raises(OutputDirError, match="does not resume"):
        prepare_out_dir(out, "train dpo", resumable=False)
    with pytest.raises(OutputDirError, match="written by `imgpref train dpo`"):
        prepare_out_dir(out, "toy eval", resumable=False)
    assert (out / "result.txt").read_text() == "keep me"


def test_out_dir_refuses_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="something other than imgpref"):
        prepare_out_dir(tmp_path, "toy eval", resumable=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_atomic_write_leaves_no_temp(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_cli_help_lists_commands_and_env_runs():
    help_text = subprocess.run(
        [sys.executable, "-m", "imgpref.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("env", "families"):
        assert f"    {command}" in help_text
    env = subprocess.run([sys.executable, "-m", "imgpref.cli", "env"], capture_output=True, text=True, check=True)
    assert "torch" in env.stdout and "device" in env.stdout and "hub" in env.stdout


def test_help_does_not_import_the_heavy_stack():
    """``imgpref --help`` stays instant: building the parser imports neither torch nor diffusers."""
    import subprocess
    import sys

    code = "import sys, imgpref.cli as c; c.build_parser(); print(sorted({'torch', 'diffusers'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
