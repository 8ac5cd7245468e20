"""β sweeps on the tiny FLUX model: grid naming, reference-error reuse, resume, report."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pair_folders import make_pair_folder
from safetensors.torch import load_file

from imgpref.config import ConfigError, load_config
from imgpref.sweep.config import SweepConfig
from imgpref.sweep.grid import expand_grid, format_value
from imgpref.sweep.report import pick_best, summarize_run
from imgpref.sweep.run import run_sweep
from imgpref.train.metrics_log import read_metrics

REPO = Path(__file__).resolve().parent.parent


def sweep_config(pairs: Path, cache: Path, *overrides: str) -> SweepConfig:
    base = [
        f"base.data.path={pairs}",
        f"base.data.cache_dir={cache}",
        "base.model.path=tiny",
        "base.model.device=cpu",
        "base.train.batch_size=2",
        "base.train.max_steps=3",
        "base.train.checkpoint_every=0",
        "base.lora.rank=4",
        "base.optim.lr=1e-3",
        "grid={dpo.beta: [10, 5000]}",
        "objective.metric=implicit_accuracy",
    ]
    return load_config(SweepConfig, None, [*base, *overrides])


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tests are sized for one CPU thread (the runs are small: more threads only add overhead)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return make_pair_folder(tmp_path_factory.mktemp("pairs"), 8)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One latent cache for every sweep of this module (the pairs are encoded once)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def reused(pairs, cache, tmp_path_factory) -> tuple[Path, dict]:
    """A finished two-run sweep with shared reference errors (shared by the tests below)."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    return out, run_sweep(sweep_config(pairs, cache), out, progress=False)


def test_grid_expands_in_order_with_safe_names(tmp_path):
    config = load_config(
        SweepConfig,
        None,
        ["base.data.path=p", "grid={dpo.beta: [1000, 10.5], optim.lr: [1.0e-4, 0.001], dpo.convention: [a/b]}"],
    )
    with pytest.raises(ConfigError, match="dpo.convention"):
        expand_grid(config)  # every run's config is validated (here: a value outside the allowed choices)
    config.grid = {"dpo.beta": [1000, 10.5], "optim.lr": [1.0e-4, 0.001]}
    runs = expand_grid(config)
    assert [r.name for r in runs] == [
        "dpo.beta=1000,optim.lr=0.0001",
        "dpo.beta=1000,optim.lr=0.001",
        "dpo.beta=10.5,optim.lr=0.0001",
        "dpo.beta=10.5,optim.lr=0.001",
    ]
    assert runs[2].config.dpo.beta == 10.5 and runs[2].config.optim.lr == 1e-4
    assert all(r.config.train.seed == runs[0].config.train.seed for r in runs)
    assert format_value(1000.0) == "1000" and format_value(True) == "true"
    config.grid = {"data.path": ["a/../b"]}
    assert expand_grid(config)[0].name == "data.path=a_.._b"  # one folder, never a path
    config.grid = {"dpo.beta": [100, 100.0]}
    with pytest.raises(ValueError, match="same run name"):
        expand_grid(config)
    # a typo under base.* is caught at --set time, against the DPO config, with the full key and a suggestion
    typo = r"--set 'base.dpo.bta=3': unknown key 'base.dpo.bta' \(did you mean 'base.dpo.beta'\?\); allowed keys under"
    with pytest.raises(ConfigError, match=typo + " 'base.dpo': beta,"):
        load_config(SweepConfig, None, ["base.dpo.bta=3", "grid={dpo.beta: [1]}"])
    with pytest.raises(ConfigError, match="'base.lr' .did you mean 'base.optim.lr'.*keys under 'base': model,"):
        load_config(SweepConfig, None, ["base.lr=3", "grid={dpo.beta: [1]}"])
    with pytest.raises(ConfigError, match="dotted"):
        load_config(SweepConfig, None, ["base.data.path=p", "grid={beta: [1]}"])
    with pytest.raises(ConfigError, match="non-empty"):
        load_config(SweepConfig, None, ["base.data.path=p", "grid={dpo.beta: []}"])
    config.base_config = str(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="missing.yaml' not found; pass an existing YAML file as base_config"):
        expand_grid(config)  # names the sweep key to fix, not --config (which was given)


def test_reference_reuse_is_identical_to_recomputation(pairs, cache, reused, tmp_path):
    out, summary = reused
    assert summary["reference"]["shared"] and summary["reference"]["positions"] == 3
    assert len(load_file(str(out / "reference" / "errors.safetensors"))) == 2 * 3
    recomputed = run_sweep(sweep_config(pairs, cache, "reuse_reference=false"), tmp_path / "out", False)
    assert not recomputed["reference"]["shared"]
    for name in ("dpo.beta=10", "dpo.beta=5000"):
        a = load_file(str(out / "runs" / name / "lora" / "pytorch_lora_weights.safetensors"))
        b = load_file(str(tmp_path / "out" / "runs" / name / "lora" / "pytorch_lora_weights.safetensors"))
        assert all(torch.equal(a[k], b[k]) for k in a), name
        losses = [[r["loss"] for r in read_metrics(d / "runs" / name) if "loss" in r] for d in (out, tmp_path / "out")]
        assert losses[0] == losses[1] and len(losses[0]) == 3


def test_different_draws_are_not_shared(pairs, cache, tmp_path):
    config = sweep_config(pairs, cache, "grid={train.seed: [0, 1]}", "base.train.max_steps=1")
    summary = run_sweep(config, tmp_path / "out", progress=False)
    assert not summary["reference"]["shared"] and "train.seed" in summary["reference"]["reason"]


def test_resume_skips_finished_runs(pairs, cache, reused, tmp_path, monkeypatch):
    out, _ = reused
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    import imgpref.train.dpo as recipe

    calls, real = [], recipe.train_dpo

    def counted(config, run_dir, **kwargs):
        calls.append(run_dir)
        return real(config, run_dir, **kwargs)

    monkeypatch.setattr(recipe, "train_dpo", counted)
    config = sweep_config(pairs, cache)
    run_sweep(config, copy, progress=False)
    assert calls == []
    (copy / "runs" / "dpo.beta=5000" / "train_summary.json").unlink()
    summary = run_sweep(config, copy, progress=False)
    assert [Path(c).name for c in calls] == ["dpo.beta=5000"]
    assert summary["reference"]["loaded"], "the saved reference errors are reused on resume"


def test_parallel_workers_run_every_run(pairs, cache, reused, tmp_path):
    config = sweep_config(pairs, cache, "parallel=2", "base.train.max_steps=1")
    summary = run_sweep(config, tmp_path / "out", progress=False)
    assert all(r["finished"] and r["steps"] == 1 for r in summary["runs"])
    assert sorted(p.name for p in (tmp_path / "out" / "logs").iterdir()) == ["worker-0.log", "worker-1.log"]


def test_report_has_every_run(reused):
    out, _ = reused
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    saved = json.loads((out / "summary.json").read_text())
    for name in ("dpo.beta=10", "dpo.beta=5000"):
        assert name in md and name in page
    assert [r["name"] for r in saved["runs"]] == ["dpo.beta=10", "dpo.beta=5000"]
    assert saved["best"] in ("dpo.beta=10", "dpo.beta=5000") and "implicit_accuracy" in saved["objective"]
    for fig in ("curves.png", "pair_states.png"):
        assert (out / "plots" / fig).stat().st_size > 0 and f"plots/{fig}" in md


def test_objective_skips_runs_with_artifacts(tmp_path):
    rows = {
        "clean": [{"step": 0, "val/all_correct": 0.2}, {"step": 4, "val/all_correct": 0.5, "artifacts/passed": 1.0}],
        "damaged": [
            {"step": 2, "val/all_correct": 0.6, "artifacts/passed": 0.0},
            {"step": 4, "val/all_correct": 0.9, "artifacts/passed": 0.0},
        ],
    }
    runs = []
    for name, metrics in rows.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
        runs.append(summarize_run(name, {}, tmp_path / "runs" / name, "val/all_correct"))
    assert runs[0]["first_artifact_step"] is None and runs[1]["first_artifact_step"] == 2
    assert runs[1]["objective_value"] == 0.9
    config = load_config(SweepConfig, None, ["base.data.path=p", "grid={dpo.beta: [1]}"])
    assert pick_best(runs, config) == "clean"
    config.objective.require_no_artifacts = False
    assert pick_best(runs, config) == "damaged"


def test_presets_load(monkeypatch):
    monkeypatch.chdir(REPO)  # base_config paths are relative to the repository root
    for preset in sorted((REPO / "configs" / "sweeps").glob("*.yaml")):
        config = load_config(SweepConfig, preset)
        assert len(expand_grid(config)) >= 2, preset.name


def test_cli_reports_a_bad_run_config_before_loading_torch(tmp_path):
    """A typo in the sweep file's base section (not only in --set) is reported before the runner's imports."""
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("base:\n  dpo:\n    bta: 3\ngrid:\n  dpo.beta: [10, 100]\n")
    code = (
        "import sys\nfrom imgpref.cli import main\n"
        f"rc = main(['sweep', '--config', {str(sweep)!r}, '--out', {str(tmp_path / 'out')!r}])\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.split() == ["2", "False"]
    assert "unknown key 'dpo.bta' (did you mean 'beta'?)" in proc.stderr and not (tmp_path / "out").exists()
