"""One worker process of a parallel sweep: ``python -m imgpref.sweep.worker OUT INDEX COUNT`` trains runs
INDEX, INDEX + COUNT, ... of the sweep in OUT (its ``sweep.yaml`` and saved reference errors)."""

from __future__ import annotations

import sys
from pathlib import Path

from imgpref.config import load_config
from imgpref.sweep.config import SweepConfig
from imgpref.sweep.grid import expand_grid
from imgpref.sweep.reference import prepare_reference, why_not_shared
from imgpref.sweep.run import SWEEP_FILE, run_one


def main(argv: list[str]) -> int:
    out, index, count = Path(argv[0]), int(argv[1]), int(argv[2])
    config = load_config(SweepConfig, out / SWEEP_FILE)
    runs = expand_grid(config)
    table = None
    if config.reuse_reference and why_not_shared(runs) is None:
        table, _ = prepare_reference(runs, out)  # saved by the parent process: loaded, not recomputed
    for run in runs[index::count]:
        run_one(run, out, table, progress=False)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
