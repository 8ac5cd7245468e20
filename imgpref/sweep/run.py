"""Run a sweep: reference errors once, then every run of the grid in ``OUT/runs/<name>/``, then the report.

Runs go one after another in this process (``parallel: 1``) or in P worker processes, worker i taking
runs i, i + P, ... A run whose ``lora/`` and ``train_summary.json`` exist is finished and is not redone
when the sweep is started again on the same ``OUT``; an interrupted run resumes from its checkpoint
(:func:`imgpref.train.dpo.train_dpo` does that).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from imgpref.config import save_config
from imgpref.outdir import prepare_out_dir
from imgpref.sweep.config import SweepConfig
from imgpref.sweep.grid import Run, expand_grid
from imgpref.sweep.reference import ReferenceTable, prepare_reference, why_not_shared

COMMAND = "sweep"
#: The resolved sweep config, which worker processes read back.
SWEEP_FILE = "sweep.yaml"
RUNS = "runs"


def is_finished(run_dir: Path) -> bool:
    return (run_dir / "lora").is_dir() and (run_dir / "train_summary.json").is_file()


def run_one(run: Run, out: Path, reference: ReferenceTable | None, progress: bool) -> str:
    """Train one run unless it is finished; returns ``"skipped"`` or ``"trained"``."""
    from imgpref.train.dpo import train_dpo

    run_dir = out / RUNS / run.name
    if is_finished(run_dir):
        return "skipped"
    print(f"sweep: run {run.name}", flush=True)
    train_dpo(run.config, run_dir, progress=progress, reference=reference)
    return "trained"


def _run_parallel(out: Path, count: int) -> None:
    """P worker processes (``python -m imgpref.sweep.worker OUT i P``), logs in ``OUT/logs/``."""
    (out / "logs").mkdir(exist_ok=True)
    procs = []
    for index in range(count):
        log = (out / "logs" / f"worker-{index}.log").open("w")
        cmd = [sys.executable, "-m", "imgpref.sweep.worker", str(out), str(index), str(count)]
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()), log))
    failed = []
    for index, (proc, log) in enumerate(procs):
        if proc.wait() != 0:
            failed.append(index)
        log.close()
    if failed:
        logs = ", ".join(str(out / "logs" / f"worker-{i}.log") for i in failed)
        raise RuntimeError(f"sweep worker(s) {failed} failed; see {logs}. Run the sweep again to resume")


def run_sweep(config: SweepConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the sweep in ``out_dir``, write the report and return its summary."""
    from imgpref.sweep.report import write_report

    runs = expand_grid(config)  # fails on a bad grid before anything is written
    out, _ = prepare_out_dir(out_dir, COMMAND, resumable=True)
    save_config(config, out / SWEEP_FILE)
    print(f"sweep: {len(runs)} run(s): {', '.join(r.name for r in runs)}", flush=True)

    reason = why_not_shared(runs) if config.reuse_reference else "reuse_reference is off"
    table, reference_info = None, {"shared": False, "reason": reason}
    if reason is None:
        table, reference_info = prepare_reference(runs, out, progress)
        state = "loaded from OUT/reference" if reference_info["loaded"] else "computed once"
        print(f"sweep: reference errors {state} for {reference_info['positions']} micro-batches", flush=True)
    else:
        print(f"sweep: reference errors recomputed in every run ({reason})", flush=True)

    if config.parallel == 1:
        for run in runs:
            run_one(run, out, table, progress)
    else:
        _run_parallel(out, min(config.parallel, len(runs)))
    return write_report(out, config, runs, reference_info)
