"""The notebooks run: every code cell of each one is executed in order, in one namespace, and outputs are
stripped in git (a committed notebook carries no outputs or execution counts)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped_and_runs(path, tmp_path, monkeypatch, toy_micro):
    notebook = json.loads(path.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell["outputs"] == [] and cell["execution_count"] is None, f"{path.name}: outputs not stripped"
    matplotlib.use("Agg")
    monkeypatch.setenv("IMGPREF_NOTEBOOK_OUT", str(tmp_path))
    namespace: dict = {"__name__": "__main__"}
    for index, cell in enumerate(code):
        source = "".join(cell["source"])
        exec(compile(source, f"{path.name}[code cell {index}]", "exec"), namespace)
    assert (tmp_path / "sweep" / "report.md").is_file()
    assert len(namespace["summary"]["runs"]) == 2
