"""The recipes under FSDP2 on 2 CPU processes (gloo), launched with the shipped configs/accelerate/fsdp.yaml:
DPO gives the same losses and LoRA as one process, a checkpoint that holds whole tensors and resumes, and a
LoRA that diffusers loads; GRPO (same run plumbing) gives the same rewards, LoRA and validation images as
one process, and the artifact guard's restore reaches every process's shards."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pair_folders import make_pair_folder
from peft.utils import get_peft_model_state_dict
from PIL import Image
from safetensors.torch import load_file

from imgpref.config import load_config
from imgpref.models import load_model
from imgpref.train.dpo import train_dpo
from imgpref.train.dpo_config import DPOConfig
from imgpref.train.grpo import train_grpo
from imgpref.train.grpo_config import GRPOConfig
from imgpref.train.metrics_log import read_metrics

REPO = Path(__file__).resolve().parent.parent

# Each launch of 2 processes takes about 45 s on a shared 2-core machine.
pytestmark = pytest.mark.slow

STEPS = 3
#: The FSDP run stops after this many steps and is resumed to STEPS by a second launch.
STOP_AT = 2


def common(pairs: Path, tmp_path: Path) -> list[str]:
    return [
        f"data.path={pairs}",
        "model.path=tiny",
        "model.device=cpu",
        f"data.cache_dir={tmp_path / 'cache'}",
        "lora.rank=4",
        "optim.lr=1e-3",
        "dpo.beta=500",
    ]


#: GRPO on the tiny FLUX model, with validation and the guard at every step: 3 validation samples split
#: 2 + 1 (padded) over the two processes and gathered in order.
GRPO_TINY = [
    "model.path=tiny",
    "model.device=cpu",
    "rollout.resolution=16",
    "rollout.prompts_per_step=2",
    "rollout.group_size=2",
    "rollout.steps=4",
    "rollout.window_size=3",
    "train.checkpoint_every=0",
    "lora.rank=4",
    "optim.lr=1e-2",
    "rewards=[{name: luma_band, params: {low: 0.45, high: 0.55}}]",
    "validation.every=1",
    "validation.prompts=[a red circle, a blue square, a green cross]",
    "validation.steps=2",
    "guard.every=1",
]


def launch_fsdp(out: Path, settings: list[str], recipe: str = "dpo") -> str:
    """``accelerate launch`` with the shipped FSDP config on 2 CPU processes; returns stdout + stderr."""
    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    launch += ["--config_file", str(REPO / "configs" / "accelerate" / "fsdp.yaml")]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    args = ["-m", "imgpref.cli", "train", recipe, "--quiet", "--out", str(out)]
    args += [x for kv in settings for x in ("--set", kv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run([*launch, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def metric(out: Path, key: str) -> torch.Tensor:
    return torch.tensor([r[key] for r in read_metrics(out) if "loss" in r])


def final_lora(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "lora" / "pytorch_lora_weights.safetensors"))


def test_fsdp_two_processes_match_one_and_resume(tmp_path):
    pairs = make_pair_folder(tmp_path / "pairs", 12)
    one = tmp_path / "one"
    train_dpo(
        load_config(DPOConfig, None, [*common(pairs, tmp_path), "train.batch_size=4", f"train.max_steps={STEPS}"]),
        one,
        progress=False,
    )

    two = tmp_path / "two"
    settings = [*common(pairs, tmp_path), "train.batch_size=2", "train.checkpoint_every=0"]
    first = launch_fsdp(two, [*settings, f"train.max_steps={STOP_AT}"])
    # FSDP really shards (one group per transformer block plus the root), it is not DDP in disguise.
    assert "FSDP2: the denoiser is sharded over 2 processes" in first
    groups = int(first.split("sharded over 2 processes in ")[1].split()[0])
    assert groups > 1, "TRANSFORMER_BASED_WRAP should give each transformer block its own group"
    second = launch_fsdp(two, [*settings, f"train.max_steps={STEPS}"])
    assert f"(step {STOP_AT})" in second and "resuming from" in second

    # One metrics row per step across the two launches; the same pairs, t and ε as the one-process run,
    # so losses and the policy-minus-reference errors (which a wrong reference would change) agree to
    # float rounding, with the tolerances of the DDP test (test_dpo_recipe.test_two_processes_match_one).
    assert metric(two, "step").tolist() == list(range(1, STEPS + 1))
    for key in ("loss", "delta_w", "delta_l", "grad_norm"):
        torch.testing.assert_close(metric(two, key), metric(one, key), rtol=1e-4, atol=1e-6, msg=key)

    # The final LoRA: a resumed run that lost its sharded Adam state would be off by up to lr = 1e-3 per
    # coordinate in step 3, far outside this bound.
    lora_one, lora_two = final_lora(one), final_lora(two)
    assert lora_one.keys() == lora_two.keys()
    for key in lora_one:
        torch.testing.assert_close(lora_two[key], lora_one[key], rtol=1e-4, atol=3e-5)

    # Checkpoints hold whole tensors in the one-process layout (the shards were gathered before writing).
    ckpt = Path("checkpoints") / f"step-{STEPS:06d}"
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == [f"step-{STOP_AT:06d}", ckpt.name]
    opt_one = torch.load(one / ckpt / "optimizer.pt", weights_only=True)
    opt_two = torch.load(two / ckpt / "optimizer.pt", weights_only=True)
    assert opt_one["state"].keys() == opt_two["state"].keys()
    for index, state in opt_one["state"].items():
        assert int(opt_two["state"][index]["step"]) == STEPS
        torch.testing.assert_close(opt_two["state"][index]["exp_avg"], state["exp_avg"], rtol=1e-3, atol=1e-5)
    ckpt_lora = load_file(str(two / ckpt / "lora.safetensors"))  # peft names; diffusers adds "transformer."
    assert ckpt_lora.keys() == {k.removeprefix("transformer.") for k in lora_two}
    assert all(torch.equal(ckpt_lora[k], lora_two[f"transformer.{k}"]) for k in ckpt_lora)

    # diffusers' own loader reads the FSDP run's LoRA into the pipeline, weights unchanged.
    model = load_model("flux", "tiny")
    model.pipe.load_lora_weights(str(two / "lora"), adapter_name="fsdp")
    loaded = get_peft_model_state_dict(model.pipe.transformer, adapter_name="fsdp")
    assert len(loaded) == len(lora_two)
    for key, value in loaded.items():
        torch.testing.assert_close(value, lora_two[f"transformer.{key}"], rtol=0, atol=0)


def test_grpo_under_fsdp_matches_one_process(tmp_path):
    """Rollouts, the KL to the reference (adapters off) and the update go through the sharded denoiser."""
    settings = [*GRPO_TINY, "train.max_steps=2", "grpo.clip_range=1e-2", "grpo.kl_beta=0.1"]
    one = tmp_path / "one"
    train_grpo(load_config(GRPOConfig, None, [*settings, "train.batch_size=4"]), one, progress=False)
    two = tmp_path / "two"
    output = launch_fsdp(two, [*settings, "train.batch_size=2"], recipe="grpo")
    assert "FSDP2: the denoiser is sharded over 2 processes" in output
    # Step 2's rollouts come from the policy after step 1's update: equal rewards mean equal updates.
    for key in ("reward/total", "grad_norm", "kl"):
        torch.testing.assert_close(metric(two, key), metric(one, key), rtol=1e-4, atol=1e-6, msg=key)
    lora_one, lora_two = final_lora(one), final_lora(two)
    assert lora_one.keys() == lora_two.keys()
    for key in lora_one:  # lr = 1e-2: rounding differences reach 10x further than in the DPO test
        torch.testing.assert_close(lora_two[key], lora_one[key], rtol=1e-4, atol=3e-4)
    # The validation images (made by both processes, each its share) are the one-process images.
    names = sorted(p.name for p in (one / "validation").iterdir())
    assert names == ["base.png", "step-000000.png", "step-000001.png", "step-000002.png"]
    assert names == sorted(p.name for p in (two / "validation").iterdir())
    for name in names:
        a, b = (torch.from_numpy(np.array(Image.open(r / "validation" / name))).float() for r in (one, two))
        assert (a - b).abs().max() <= 2, name  # 8-bit PNGs: at most a rounding step or two apart
    guard_keys = {k for r in read_metrics(one) for k in r if k.startswith("artifacts/")}
    assert "artifacts/mean_luma_change" in guard_keys, "the guard did not run"
    for key in sorted(guard_keys):
        torch.testing.assert_close(
            torch.tensor([r[key] for r in read_metrics(two) if key in r]),
            torch.tensor([r[key] for r in read_metrics(one) if key in r]),
            rtol=1e-3,
            atol=1e-4,
            msg=key,
        )


def test_guard_restore_under_fsdp_reaches_every_shard(tmp_path):
    """The guard decides on the main process; every process must load the restored LoRA into its shards.
    ``crushed_blacks=0`` trips at the first check (the tiny model draws no crushed blacks, so the change is
    0 >= 0); no checkpoint passed, so the restore is the base model: every lora_B row, on both shards, 0."""
    trip = ["guard.action=restore", "guard.thresholds.crushed_blacks=0"]
    settings = [*GRPO_TINY, "train.max_steps=3", "train.batch_size=2", *trip]
    output = launch_fsdp(tmp_path / "two", settings, recipe="grpo")
    assert "no checkpoint passed" in output, output[-2000:]
    lora = final_lora(tmp_path / "two")
    lora_b = {k: v for k, v in lora.items() if "lora_B" in k}
    assert lora_b and all(v.abs().max() == 0 for v in lora_b.values())
    assert any(v.abs().max() > 0 for k, v in lora.items() if "lora_A" in k)


def one_process_fsdp_env(version: int) -> dict[str, str]:
    """The variables ``accelerate launch --use_fsdp`` sets, for a world of one CPU process (no launcher)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    world = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    fsdp = {
        "ACCELERATE_USE_FSDP": "true",
        "FSDP_VERSION": str(version),
        "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
    }
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **world, **fsdp}


def test_fsdp1_is_refused_with_the_fix_and_dpo_validates_under_fsdp2(tmp_path):
    pairs = make_pair_folder(tmp_path / "pairs", 2)
    cmd = [sys.executable, "-m", "imgpref.cli", "train", "dpo", "--quiet", "--out", str(tmp_path / "run")]
    cmd += [x for kv in [*common(pairs, tmp_path), "train.max_steps=1"] for x in ("--set", kv)]
    v1 = subprocess.run(cmd, capture_output=True, text=True, env=one_process_fsdp_env(1), cwd=REPO, timeout=120)
    assert v1.returncode == 2 and "FSDP2 only" in v1.stderr and "fsdp_version: 2" in v1.stderr, v1.stderr[-2000:]
    validation = ["--set", "validation.every=1", "--set", "validation.prompts=[a red circle]"]
    v2 = subprocess.run(
        [*cmd, *validation], capture_output=True, text=True, env=one_process_fsdp_env(2), cwd=REPO, timeout=120
    )
    assert v2.returncode == 0, v2.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "run" / "validation").iterdir()) == [
        "step-000000.png",
        "step-000001.png",
    ]
