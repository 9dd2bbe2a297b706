"""Every teaching notebook runs top to bottom on the embedded data (nbclient)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert any(p.name == "00_tour.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", "notebooks need a kernelspec"
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors


MARIMO = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("marimo_*.py"))


@pytest.mark.parametrize("path", MARIMO, ids=[p.stem for p in MARIMO])
def test_marimo_notebook_runs_and_lints_clean(path):
    """A marimo notebook runs top to bottom as a script (every cell, no page) and ``marimo
    check`` finds nothing to say about it (the rendering is tests/browser/test_marimo_browser.py)."""
    import subprocess
    import sys

    pytest.importorskip("marimo")
    run = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    check = subprocess.run([sys.executable, "-m", "marimo", "check", str(path)], capture_output=True, text=True,
                           timeout=120)
    assert check.returncode == 0 and not check.stdout.strip(), check.stdout + check.stderr


def test_there_is_a_marimo_notebook():
    assert any(p.name == "marimo_tour.py" for p in MARIMO)
