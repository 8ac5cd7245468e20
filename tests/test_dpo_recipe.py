"""The Diffusion-DPO recipe end to end on tiny models: shared draws, reference, resume, processes, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pair_folders import make_pair_folder
from PIL import Image
from safetensors.torch import load_file

from imgpref.config import load_config
from imgpref.models import load_model
from imgpref.models.lora import attach_lora, reference_mode
from imgpref.models.settings import LoraSettings
from imgpref.train.dpo import NonFiniteLossError, make_batch, pair_errors, reference_errors, train_dpo
from imgpref.train.dpo_config import DPOConfig
from imgpref.train.latent_cache import encode_pairs
from imgpref.train.metrics_log import read_metrics
from imgpref.train.pair_data import PairDataError, check_images, read_pairs

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return make_pair_folder(tmp_path_factory.mktemp("pairs"), 12)


def tiny_overrides(pairs: Path, tmp_path: Path) -> list[str]:
    """The ``--set`` values of a short DPO run of the tiny FLUX model on ``pairs``."""
    return [
        f"data.path={pairs}",
        "model.path=tiny",
        "model.device=cpu",
        f"data.cache_dir={tmp_path / 'cache'}",
        "train.batch_size=2",
        "train.max_steps=4",
        "train.checkpoint_every=0",
        "lora.rank=4",
        "optim.lr=1e-3",
        "dpo.beta=500",
    ]


def config(pairs: Path, tmp_path: Path, *overrides: str) -> DPOConfig:
    return load_config(DPOConfig, None, [*tiny_overrides(pairs, tmp_path), *overrides])


def final_lora(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "lora" / "pytorch_lora_weights.safetensors"))


def test_winner_and_loser_share_t_and_noise_in_one_forward(pairs, tmp_path):
    cfg = config(pairs, tmp_path)
    model = load_model("flux", "tiny")
    data, _, _ = encode_pairs(model, "tiny", read_pairs(pairs), (32, 32), cache_dir=tmp_path / "c", progress=False)
    batch = make_batch(data, cfg, 0, model)
    calls = []
    original = model.predict
    model.predict = lambda x, t, cond: calls.append((x, t, cond)) or original(x, t, cond)
    pair_errors(model, batch)
    assert len(calls) == 1, "winner and loser must go through one concatenated forward"
    x_t, t, cond = calls[0]
    b = batch.chosen.shape[0]
    assert torch.equal(t[:b], t[b:])
    tt = t[:b].reshape(-1, 1, 1, 1)
    eps_w = (x_t[:b] - (1 - tt) * batch.chosen) / tt  # x_t = (1 - t) x0 + t eps
    eps_l = (x_t[b:] - (1 - tt) * batch.rejected) / tt
    torch.testing.assert_close(eps_w, eps_l, rtol=1e-4, atol=1e-4)
    assert torch.equal(cond["prompt_embeds"][:b], cond["prompt_embeds"][b:])
    # Same stream position, same draws; another position, other draws.
    again = make_batch(data, cfg, 0, model)
    assert torch.equal(again.noise, batch.noise) and torch.equal(again.t, batch.t)
    assert not torch.equal(make_batch(data, cfg, 2, model).noise, batch.noise)


def test_reference_is_the_base_model(pairs, tmp_path):
    cfg = config(pairs, tmp_path)
    base = load_model("flux", "tiny")
    tuned = load_model("flux", "tiny")
    data, _, _ = encode_pairs(base, "tiny", read_pairs(pairs), (32, 32), cache_dir=tmp_path / "c", progress=False)
    batch = make_batch(data, cfg, 0, base)
    with torch.no_grad():
        base_w, base_l, _, _ = pair_errors(base, batch)
    params = attach_lora(tuned, LoraSettings(rank=4, init="gaussian"))
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn_like(p))  # LoRA far from zero: the policy differs from the base
        policy_w, _, _, _ = pair_errors(tuned, batch)
    ref_w, ref_l = reference_errors(tuned, batch)
    assert not torch.allclose(policy_w, base_w)
    torch.testing.assert_close(ref_w, base_w)
    torch.testing.assert_close(ref_l, base_l)
    with reference_mode(tuned):
        assert not torch.is_grad_enabled()
    assert all(p.requires_grad for p in params)


def test_train_writes_lora_metrics_and_changes_only_the_adapter(pairs, tmp_path):
    out = tmp_path / "run"
    summary = train_dpo(config(pairs, tmp_path, "train.checkpoint_every=2"), out, progress=False)
    assert summary["steps"] == 4 and summary["stopped"] is None
    rows = [r for r in read_metrics(out) if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    first = rows[0]
    # Step 0: policy == reference, every pair weighs 1/2 and sits in no state.
    assert first["dpo_weight_mean"] == pytest.approx(0.5) and first["state_unchanged"] == 1.0
    assert first["delta_w"] == 0.0 and first["delta_l"] == 0.0
    for key in ("implicit_accuracy", "beta_eff", "reward_margin", "grad_norm", "lr", "pairs_per_s", "ref_err_w"):
        assert key in rows[-1]
    assert rows[-1]["state_unchanged"] < 1.0, "the LoRA should have moved the policy"
    lora = final_lora(out)
    assert any(v.abs().max() > 0 for k, v in lora.items() if "lora_B" in k)
    assert (out / "config.yaml").is_file() and any((out / "tensorboard").iterdir())
    assert [p.name for p in sorted((out / "checkpoints").iterdir())] == ["step-000002", "step-000004"]
    # The saved LoRA loads into the family pipeline with diffusers' own loader.
    model = load_model("flux", "tiny")
    model.pipe.load_lora_weights(str(out / "lora"))


def test_resume_after_stop_is_bitwise_identical(pairs, tmp_path):
    straight = tmp_path / "straight"
    train_dpo(config(pairs, tmp_path, "train.max_steps=5"), straight, progress=False)
    resumed = tmp_path / "resumed"
    stopped = train_dpo(config(pairs, tmp_path, "train.max_steps=5"), resumed, progress=False, stop_at_step=2)
    assert stopped["stopped"] == "interrupted" and not (resumed / "lora").exists()
    train_dpo(config(pairs, tmp_path, "train.max_steps=5"), resumed, progress=False)
    a, b = final_lora(straight), final_lora(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [r["step"] for r in read_metrics(resumed) if "loss" in r]
    assert steps == [1, 2, 3, 4, 5], "metrics.jsonl describes one run, no duplicated steps"


def test_resume_refuses_a_changed_config(pairs, tmp_path):
    out = tmp_path / "run"
    train_dpo(config(pairs, tmp_path, "train.max_steps=1"), out, progress=False)
    with pytest.raises(Exception, match="dpo.beta"):
        train_dpo(config(pairs, tmp_path, "train.max_steps=2", "dpo.beta=9"), out, progress=False)


def test_sigterm_saves_and_the_same_command_resumes(pairs, tmp_path):
    """A real SIGTERM to the CLI mid-run: checkpoint saved, exit 143, no final LoRA; the same command
    (with max_steps, which may change on resume, set just past the stop) continues and finishes."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "imgpref.cli", "train", "dpo", "--quiet", "--out", str(out)]
    cmd += [x for kv in tiny_overrides(pairs, tmp_path) for x in ("--set", kv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(
        [*cmd, "--set", "train.max_steps=100000"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    deadline = time.monotonic() + 300
    metrics = out / "metrics.jsonl"
    while not metrics.is_file() or metrics.read_text().count("\n") < 2:  # training is under way (whole lines)
        assert run.poll() is None, run.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no training step within 300 s"
        time.sleep(0.1)
    run.send_signal(signal.SIGTERM)
    log = run.communicate(timeout=300)[0]
    assert run.returncode == 143, log[-3000:]
    said = re.search(r"stopped at step (\d+): checkpoint saved", log)
    assert said, log[-3000:]
    stopped = int(said.group(1))
    assert stopped >= 1 and any((out / "checkpoints").iterdir()) and not (out / "lora").exists()

    resumed = subprocess.run([*cmd, "--set", f"train.max_steps={stopped + 2}"], capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [row["step"] for row in read_metrics(out) if "loss" in row] == list(range(1, stopped + 3))
    assert set(final_lora(out))


def test_nonfinite_loss_skips_then_aborts(pairs, tmp_path, monkeypatch):
    import imgpref.train.dpo as recipe

    real = recipe.diffusion_dpo_loss
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        loss, metrics = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] >= 2 else loss), metrics

    monkeypatch.setattr(recipe, "diffusion_dpo_loss", sometimes_nan)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="3 optimiser steps in a row"):
        train_dpo(config(pairs, tmp_path, "train.max_steps=10", "train.max_nonfinite_steps=3"), out, progress=False)
    # The skipped steps did not touch the weights: the saved state is the one after the single good step.
    saved = load_file(str(next((out / "checkpoints").iterdir()) / "lora.safetensors"))
    assert all(torch.isfinite(v).all() for v in saved.values())


def test_bad_pair_folders_are_reported_by_line(tmp_path):
    root = make_pair_folder(tmp_path / "p", 3)
    lines = (root / "metadata.jsonl").read_text().splitlines()
    lines[1] = "{not json"
    bad = json.loads(lines[2])
    bad["rejected_file_name"] = "../outside.png"
    lines[2] = json.dumps(bad)
    lines.append(json.dumps({"prompt": "x", "chosen_file_name": "images/0000_w.png"}))
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(PairDataError) as err:
        read_pairs(root)
    message = str(err.value)
    assert "metadata.jsonl:2: not valid JSON" in message
    assert "metadata.jsonl:3: rejected_file_name '../outside.png'" in message
    assert "metadata.jsonl:4: missing rejected_file_name" in message

    root = make_pair_folder(tmp_path / "q", 3)
    (root / "images/0001_l.png").write_bytes(b"not a png")
    (root / "images/0002_w.png").unlink()
    with pytest.raises(PairDataError) as err:
        check_images(root, read_pairs(root), 0)
    assert "metadata.jsonl:2: rejected 'images/0001_l.png' cannot be read" in str(err.value)
    assert "metadata.jsonl:3: chosen 'images/0002_w.png' does not exist" in str(err.value)
    with pytest.raises(PairDataError, match="no metadata.jsonl"):
        read_pairs(tmp_path)


def test_cli_trains_and_reports_bad_input_in_one_line(pairs, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "imgpref.cli", "train", "dpo", "--quiet", "--out", str(tmp_path / "bad")]
    bad = subprocess.run([*cmd, "--set", "dpo.beta=-1", "--set", f"data.path={pairs}"], capture_output=True, text=True)
    assert bad.returncode == 2 and "dpo.beta must be > 0" in bad.stderr and "Traceback" not in bad.stderr
    assert bad.stderr.startswith("imgpref train dpo: error: ")
    missing = subprocess.run([*cmd, "--set", f"data.path={tmp_path}"], capture_output=True, text=True, env=env)
    assert missing.returncode == 2 and "no metadata.jsonl" in missing.stderr


def test_print_config_shows_every_key_and_reloads(tmp_path):
    cmd = [sys.executable, "-m", "imgpref.cli", "train", "dpo", "--config", str(REPO / "configs/dpo/toy.yaml")]
    shown = subprocess.run([*cmd, "--set", "dpo.beta=500", "--print-config"], capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    (tmp_path / "shown.yaml").write_text(shown.stdout)
    reloaded = load_config(DPOConfig, tmp_path / "shown.yaml")
    assert reloaded == load_config(DPOConfig, REPO / "configs/dpo/toy.yaml", ["dpo.beta=500"])
    assert "loser_weight: 1.0" in shown.stdout  # defaults the preset does not set are shown too
    no_out = subprocess.run(cmd, capture_output=True, text=True)
    assert no_out.returncode == 2 and "--out is required" in no_out.stderr


def test_gradient_accumulation_matches_one_big_batch_and_logs_every_micro_batch(pairs, tmp_path):
    """2 micro-batches × 2 pairs take the same stream positions as 1 × 4: same logged loss and accuracy
    (averaged over both micro-batches, not just the last) and the same LoRA up to rounding."""
    one = tmp_path / "one"
    train_dpo(config(pairs, tmp_path, "train.batch_size=4", "train.max_steps=3"), one, progress=False)
    accum = tmp_path / "accum"
    train_dpo(config(pairs, tmp_path, "train.grad_accum=2", "train.max_steps=3"), accum, progress=False)
    for key in ("loss", "implicit_accuracy", "delta_w", "model_err_l", "grad_norm"):
        a = torch.tensor([r[key] for r in read_metrics(one) if key in r])
        b = torch.tensor([r[key] for r in read_metrics(accum) if key in r])
        assert len(a) == len(b) == 3, key
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6, msg=key)
    x, y = final_lora(one), final_lora(accum)
    for key in x:
        torch.testing.assert_close(y[key], x[key], rtol=1e-4, atol=3e-5)


def test_two_processes_match_one(pairs, tmp_path):
    """2 CPU processes × 2 pairs see the same stream as 1 process × 4 pairs: same LoRA up to rounding;
    the validation images, made by both processes (each its share), are the one-process images."""
    common = [
        f"data.path={pairs}",
        "model.path=tiny",
        "model.device=cpu",
        f"data.cache_dir={tmp_path / 'cache'}",
        "train.max_steps=3",
        "lora.rank=4",
        "optim.lr=1e-3",
        "dpo.beta=500",
        "validation.every=3",
        "validation.prompts=[a red circle, a blue square, a green cross]",  # odd: one process pads its share
        "validation.steps=2",
    ]
    one = tmp_path / "one"
    train_dpo(load_config(DPOConfig, None, [*common, "train.batch_size=4"]), one, progress=False)
    two = tmp_path / "two"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    args = ["-m", "imgpref.cli", "train", "dpo", "--quiet", "--out", str(two)]
    args += [x for kv in [*common, "train.batch_size=2"] for x in ("--set", kv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([*launch, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x 2 process(es)" in result.stdout + result.stderr
    # The same pairs, t and ε in every step: the losses agree to float rounding (times β = 500, which
    # scales error differences inside the sigmoid) ...
    loss_one = [r["loss"] for r in read_metrics(one) if "loss" in r]
    loss_two = [r["loss"] for r in read_metrics(two) if "loss" in r]
    assert len(loss_one) == len(loss_two) == 3
    torch.testing.assert_close(torch.tensor(loss_two), torch.tensor(loss_one), rtol=1e-4, atol=1e-6)
    # ... and so do the weights. Adam divides each gradient by its own magnitude, so a coordinate whose
    # gradient is near zero turns rounding differences (another summation order across processes) into
    # differences of up to a fraction of one step (lr = 1e-3); 1 % of the 3 steps' reach bounds that.
    a, b = final_lora(one), final_lora(two)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=3e-5)
    names = sorted(p.name for p in (one / "validation").iterdir())
    assert names == ["step-000000.png", "step-000003.png"]
    assert names == sorted(p.name for p in (two / "validation").iterdir())
    for name in names:
        x, y = (np.asarray(Image.open(run / "validation" / name), dtype=np.int16) for run in (one, two))
        assert np.abs(x - y).max() <= 2, name  # 8-bit PNGs: at most a rounding step or two apart


@pytest.mark.parametrize("preset", sorted((REPO / "configs" / "dpo").glob("*.yaml")), ids=lambda p: p.stem)
def test_dpo_presets_load(preset):
    cfg = load_config(DPOConfig, preset)
    assert cfg.dpo.beta > 0 and cfg.train.max_steps > 0


def test_winner_error_monitor_warns_on_both_down_and_rate_limits():
    from imgpref.train.diagnostics import WinnerErrorMonitor

    monitor = WinnerErrorMonitor(window=4, repeat=10)
    assert monitor.update(1, 0.5) == (False, None), "no verdict before a full window"
    for step in (2, 3):
        assert monitor.update(step, -0.1)[1] is None
    flag, warning = monitor.update(4, 0.2)  # mean over steps 1..4 = 0.125 > 0
    assert flag and "both-down" in warning and "Δ_w = 0.125" in warning
    flag, warning = monitor.update(5, 0.2)
    assert flag and warning is None, "warnings are rate-limited"
    for step in range(6, 10):
        flag, _ = monitor.update(step, -1.0)
    assert not flag, "the flag follows the trailing mean"
    assert monitor.update(20, 1.0)[1] is not None


def test_artifact_guard_runs_at_validation_and_stops_the_run(pairs, tmp_path, monkeypatch):
    """The recipe hands validation and base images to the guard and stops when it says so (the detectors
    themselves are tested in test_artifacts.py; here a trip is forced after the guard measured the images)."""
    from imgpref.artifacts.guard import ArtifactGuard

    measured = []
    real = ArtifactGuard.measure_set

    def tripping(self, tuned, base, groups=None):
        metrics, _ = real(self, tuned, base, groups)
        measured.append((len(tuned), len(base), list(groups)))
        return metrics, ("darker",)

    monkeypatch.setattr(ArtifactGuard, "measure_set", tripping)
    out = tmp_path / "run"
    prompt = "a red circle at the top left on a white background"
    cfg = config(
        pairs,
        tmp_path,
        "train.max_steps=6",
        "validation.every=2",
        f"validation.prompts=[{prompt}]",
        "validation.seeds_per_prompt=2",
        "guard.every=2",
        "guard.action=stop",
    )
    summary = train_dpo(cfg, out, progress=False)
    assert summary["stopped"] == "guard" and summary["steps"] == 2
    assert measured == [(2, 2, [prompt, prompt])]
    rows = [r for r in read_metrics(out) if "artifacts/passed" in r]
    assert [r["step"] for r in rows] == [2] and rows[0]["artifacts/passed"] == 0.0
    assert "artifacts/mean_luma" in rows[0]
    assert (out / "validation" / "base.png").is_file() and (out / "validation" / "step-000002.png").is_file()
    assert (out / "checkpoints" / "step-000002").is_dir() and (out / "lora").is_dir()


def test_precomputed_reference_errors_give_identical_training(pairs, tmp_path):
    """Reference errors depend only on the draws: passing them precomputed changes nothing, bit for bit."""
    cfg = config(pairs, tmp_path, "train.max_steps=3")
    model = load_model("flux", "tiny")
    data, _, _ = encode_pairs(model, "tiny", read_pairs(pairs), (32, 32), cache_dir=tmp_path / "cache", progress=False)
    table = {}
    for step in range(3):
        start = step * cfg.train.batch_size
        with torch.no_grad():  # the base model (no LoRA) is the reference
            err_w, err_l, _, _ = pair_errors(model, make_batch(data, cfg, start, model))
        table[start] = (err_w, err_l)
    used = []

    def lookup(start, batch):
        used.append(start)
        return table[start]

    train_dpo(cfg, tmp_path / "computed", progress=False)
    train_dpo(cfg, tmp_path / "reused", progress=False, reference=lookup)
    assert used == sorted(table)
    a, b = final_lora(tmp_path / "computed"), final_lora(tmp_path / "reused")
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_lora_init_follows_the_seed_not_the_process_rng(pairs, tmp_path):
    """Two runs with one seed train the same LoRA even when the global RNG was used differently before
    (a model loaded from a folder draws nothing from the RNG; peft's LoRA init does)."""
    folder = tmp_path / "model"
    load_model("flux", "tiny").pipe.save_pretrained(folder)
    runs = []
    for name, draws in (("a", 0), ("b", 1000)):
        torch.rand(draws)  # a different state of the global RNG before each run
        train_dpo(config(pairs, tmp_path, "train.max_steps=1", f"model.path={folder}"), tmp_path / name, progress=False)
        runs.append(final_lora(tmp_path / name))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
