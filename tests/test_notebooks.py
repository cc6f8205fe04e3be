"""Executes every notebook in notebooks/ top to bottom, so none of them rots."""

from __future__ import annotations

import os
import pathlib

import nbformat
import pytest
from nbclient import NotebookClient

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: pathlib.Path, monkeypatch: pytest.MonkeyPatch):
  # The kernel is a fresh process: it finds the package through PYTHONPATH (the
  # checkout is not pip-installed) and runs JAX on CPU like the rest of the suite.
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  notebook = nbformat.read(path, as_version=4)
  client = NotebookClient(notebook, kernel_name="python3", timeout=120,
                          resources={"metadata": {"path": str(REPO_ROOT)}})
  client.execute()  # raises CellExecutionError, with the failing cell, on any error
  figures = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs
             if "image/png" in out.get("data", {})]
  assert figures, f"{path.name} drew no figures"
