"""Execute the notebooks headless on their tiny smoke setting; any cell error fails the test."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # end-to-end runs (see the fast tier in README.md)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["partitioning.ipynb", "scaling.ipynb"]
"""Notebooks that read ACP_NOTEBOOK_SMOKE=1 in their parameters cell."""


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs_in_smoke_mode(name, monkeypatch, tmp_path):
    # Prepare: the kernel inherits this environment (tiny config, package importable, no display)
    monkeypatch.setenv("ACP_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("ACP_DATA_DIR", str(tmp_path / "data"))
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the tiny run gains nothing from threads on a shared CPU
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    client = NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}})
    # Execute: raises CellExecutionError (with the cell and traceback) on the first failing cell
    client.execute()
    # Assert
    errors = [out for cell in nb.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors
    assert any(out.get("output_type") == "display_data" for cell in nb.cells
               for out in cell.get("outputs", [])), "no figure was produced"
