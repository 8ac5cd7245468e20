"""The sweep's report: ``OUT/report.md``, ``OUT/report.html``, ``OUT/summary.json`` and PNG plots in ``OUT/plots``.

Per run: the objective's value, whether the artifact guard ever failed a check and the first step it did
("artifacts first appear"), the final loss and implicit accuracy; comparison curves over steps; the
validation grids each run wrote (``runs/<name>/validation/step-XXXXXX.png``), one row per run.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from imgpref.outdir import atomic_write_text
from imgpref.sweep.config import SweepConfig
from imgpref.sweep.grid import Run
from imgpref.sweep.plots import plot_sweep
from imgpref.train.metrics_log import read_metrics

PLOTS = "plots"
FIRST_ARTIFACT = "first validation step whose artifact guard check failed (`artifacts/passed` = 0)"


def _last(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return values[-1] if values else None


def summarize_run(name: str, overrides: dict[str, Any], run_dir: Path, metric: str) -> dict[str, Any]:
    """The numbers of one run from its folder (also for a run that is not finished)."""
    rows = read_metrics(run_dir)
    summary_file = run_dir / "train_summary.json"
    trained = yaml.safe_load(summary_file.read_text()) if summary_file.is_file() else {}
    checks = [r for r in rows if r.get("artifacts/passed") is not None]
    failed = [r["step"] for r in checks if r["artifacts/passed"] == 0]
    grids = sorted((run_dir / "validation").glob("step-*.png")) if (run_dir / "validation").is_dir() else []
    return {
        "name": name,
        "overrides": overrides,
        "finished": bool(trained),
        "steps": trained.get("steps", max((r["step"] for r in rows), default=0)),
        "stopped": trained.get("stopped"),
        "final_loss": _last(rows, "loss"),
        "final_implicit_accuracy": _last(rows, "implicit_accuracy"),
        "objective_value": _last(rows, metric),
        "guard_checks": len(checks),
        "guard_failed_steps": failed,
        "first_artifact_step": failed[0] if failed else None,
        "validation_grids": [str(p.relative_to(run_dir.parent.parent)) for p in grids],
    }


def pick_best(runs: list[dict[str, Any]], config: SweepConfig) -> str | None:
    """The best run's name under the objective, or None when no eligible run logged the metric."""
    objective = config.objective
    eligible = [
        r
        for r in runs
        if r["objective_value"] is not None
        and math.isfinite(r["objective_value"])
        and not (objective.require_no_artifacts and r["guard_failed_steps"])
    ]
    if not eligible:
        return None
    sign = 1 if objective.mode == "max" else -1
    return max(eligible, key=lambda r: sign * r["objective_value"])["name"]


def objective_text(config: SweepConfig) -> str:
    o = config.objective
    clean = " among runs whose artifact guard never failed a check" if o.require_no_artifacts else ""
    word = "highest" if o.mode == "max" else "lowest"
    return f"{word} `{o.metric}` at the run's last logged point{clean}"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _table(runs: list[dict[str, Any]], best: str | None, metric: str) -> list[list[str]]:
    header = ["run", "steps", "stopped", "final loss", "implicit acc.", metric, "guard fails", "artifacts first at"]
    rows = [header]
    for r in runs:
        first = r["first_artifact_step"]
        rows.append(
            [
                r["name"] + (" (best)" if r["name"] == best else ""),
                _fmt(r["steps"]) + ("" if r["finished"] else " (unfinished)"),
                _fmt(r["stopped"]) if r["stopped"] else "no",
                _fmt(r["final_loss"]),
                _fmt(r["final_implicit_accuracy"]),
                _fmt(r["objective_value"]),
                f"{len(r['guard_failed_steps'])} of {r['guard_checks']}",
                f"step {first}" if first is not None else "none",
            ]
        )
    return rows


def _reference_line(info: dict[str, Any]) -> str:
    if info.get("shared"):
        how = "loaded from" if info.get("loaded") else "computed once into"
        return (
            f"Reference errors: {how} `{info['file']}` for {info['positions']} micro-batches "
            f"({info['seconds']:.1f} s) and reused by every run."
        )
    return f"Reference errors: recomputed in every run ({info.get('reason')})."


def write_report(out: Path, config: SweepConfig, runs: list[Run], reference: dict[str, Any]) -> dict[str, Any]:
    """Write the report files and return the summary (the content of ``summary.json``)."""
    metric = config.objective.metric
    run_rows = [summarize_run(r.name, r.overrides, out / "runs" / r.name, metric) for r in runs]
    best = pick_best(run_rows, config)
    plots_dir = out / PLOTS
    plots_dir.mkdir(exist_ok=True)
    metrics = {r.name: read_metrics(out / "runs" / r.name) for r in runs}
    figures = [str(p.relative_to(out)) for p in plot_sweep(metrics, plots_dir)]
    summary = {
        "grid": config.grid,
        "objective": objective_text(config),
        "best": best,
        "reference": reference,
        "runs": run_rows,
        "plots": figures,
    }
    table = _table(run_rows, best, metric)
    best_line = (
        f"Best run: **{best}** ({objective_text(config)})."
        if best
        else f"No best run: no run qualifies under the objective ({objective_text(config)})."
    )
    md = ["# DPO sweep report", "", best_line, "", _reference_line(reference), ""]
    md += ["| " + " | ".join(row) + " |" for row in table[:1]]
    md += ["|" + "---|" * len(table[0])]
    md += ["| " + " | ".join(row) + " |" for row in table[1:]]
    md += ["", f"`artifacts first at`: {FIRST_ARTIFACT}.", ""]
    for fig in figures:
        md += [f"## {Path(fig).stem.replace('_', ' ')}", "", f"![{Path(fig).stem}]({fig})", ""]
    md += ["## Validation samples (per run and step)", ""]
    for r in run_rows:
        md += [f"### {r['name']}", ""]
        md += [f"![{Path(g).stem}]({quote(g)})" for g in r["validation_grids"]] or ["(no validation grids)"]
        md += [""]
    atomic_write_text(out / "report.md", "\n".join(md) + "\n")
    atomic_write_text(out / "report.html", _html(summary, table, best_line, figures))
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _html(summary: dict[str, Any], table: list[list[str]], best_line: str, figures: list[str]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in table[0])
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table[1:])
    plots = "".join(f"<h2>{esc(Path(f).stem.replace('_', ' '))}</h2><img src='{esc(f)}'>" for f in figures)
    samples = ""
    for r in summary["runs"]:
        cells = "".join(
            f"<figure><img src='{quote(g)}' width='256'><figcaption>{esc(Path(g).stem)}</figcaption></figure>"
            for g in r["validation_grids"]
        )
        samples += f"<h3>{esc(r['name'])}</h3><div class='row'>{cells or 'no validation grids'}</div>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>imgpref sweep</title>
<style>body{{font-family:sans-serif;max-width:1300px;margin:2em auto}}td,th{{padding:4px 10px;
border-bottom:1px solid #ddd}}img{{max-width:100%;image-rendering:pixelated}}.row{{display:flex;gap:8px;
overflow-x:auto}}figure{{margin:0}}</style></head><body><h1>DPO sweep report</h1>
<p>{esc(best_line.replace("**", ""))}</p><p>{esc(_reference_line(summary["reference"]))}</p>
<table><tr>{head}</tr>{body}</table>
<p>artifacts first at: {esc(FIRST_ARTIFACT.replace("`", ""))}.</p>
{plots}<h2>Validation samples (per run and step)</h2>{samples}</body></html>
"""
