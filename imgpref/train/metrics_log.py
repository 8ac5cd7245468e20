"""Per-step metrics: one JSON object per line in ``metrics.jsonl`` and the same scalars in TensorBoard.

On resume from step k, lines of steps after k (written before the interruption, then lost with the
unsaved training) are dropped, so ``metrics.jsonl`` always describes the run that produced the weights.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from imgpref.outdir import atomic_write_text

METRICS = "metrics.jsonl"
TENSORBOARD = "tensorboard"


class MetricsLog:
    """Append metrics rows; a no-op on non-main processes (``enabled=False``)."""

    def __init__(self, out: Path, *, enabled: bool = True, resume_step: int | None = None) -> None:
        self.path = out / METRICS
        self.enabled = enabled
        self._writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= resume_step
            ]
            atomic_write_text(self.path, "".join(line + "\n" for line in kept))
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(str(out / TENSORBOARD), purge_step=resume_step + 1 if resume_step else None)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}
        with self.path.open("a") as handle:
            handle.write(json.dumps({"step": step, **clean}) + "\n")
        for key, value in clean.items():
            if value is not None:
                self._writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def read_metrics(out: Path) -> list[dict]:
    """The rows of ``OUT/metrics.jsonl``."""
    path = Path(out) / METRICS
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
