"""The views render in Jupyter Notebook 7 as well as JupyterLab 4, and the tour opens in JupyterLab."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from .test_activation_explorer_browser import _np, _same

pytestmark = pytest.mark.browser

ROOTS = [".cnnw-filter-grid", ".cnnw-activation-explorer", ".cnnw-saliency-viewer", ".cnnw-tsne-scatter", ".cnnw-oip-optimizer"]
ALL_VIEWS = (
    "import cnnwidgets, ipywidgets\n"
    "demo = cnnwidgets.demo.mnist('val')\n"
    "ex = cnnwidgets.Explorer(demo.model, demo.images[:300], demo.labels[:300], demo.classes,\n"
    "    mean=demo.mean, std=demo.std, tsne_images=300)\n"
    "ex"
)


def _all_rendered(nb):
    page = nb.page
    for root in ROOTS:
        page.wait_for_selector(root, timeout=90_000)
    page.wait_for_function(
        "(roots) => roots.every(r => Number(document.querySelector(r).dataset.frame || 0) > 0)",
        arg=ROOTS, timeout=90_000,
    )
    # and the filter grid shows Python's pixels
    # the gaps between tiles are the theme's background, as the page says
    gaps = page.get_attribute(".cnnw-filter-grid", "data-background")
    _same(nb, ".cnnw-filter-grid canvas.cnnw-canvas", _np(nb, f"ex.filters.to_image(background=({gaps}))", "fg.npy"))
    # a click in one view reaches the others through the shared Selection
    page.click(".cnnw-activation-explorer button.cnnw-next")
    nb.wait_kernel("[ex.selection.index, ex.saliency.index, ex.activations.index]", [1, 1, 1])
    page.wait_for_function("() => document.querySelector('.cnnw-saliency-viewer').dataset.heatIndex === '1'", timeout=30_000)
    # Notebook 7.x itself logs one settings-schema TypeError from its own bundle on every page
    # (seen with a notebook holding only print(1)); anything else is ours
    ours = [e for e in nb.errors if "/static/notebook/notebook_core" not in e]
    assert not ours, ours


def test_all_views_in_notebook7(open_notebook7):
    nb = open_notebook7("nb7.ipynb", [ALL_VIEWS], viewport=(1400, 2400))
    _all_rendered(nb)
    nb.kernel("ex.close()")


def test_explorer_in_jupyterlab(open_notebook):
    nb = open_notebook("explorer_all.ipynb", [ALL_VIEWS], viewport=(1400, 2400))
    _all_rendered(nb)
    nb.kernel("ex.close()")


def test_tour_notebook_opens_in_jupyterlab(open_notebook, lab):
    tour = Path(__file__).resolve().parents[2] / "notebooks" / "00_tour.ipynb"
    shutil.copy(tour, lab["root"] / "00_tour.ipynb")
    import nbformat

    cells = [c.source for c in nbformat.read(tour, as_version=4).cells if c.cell_type == "code"]
    nb = open_notebook("00_tour.ipynb", cells)  # rewrites it with the same code cells
    nb.page.wait_for_selector(".cnnw-filter-grid", timeout=90_000)
    nb.page.wait_for_function(
        "() => [...document.querySelectorAll('.cnnw-root')].length > 0 && "
        "[...document.querySelectorAll('.cnnw-filter-grid')].every(e => Number(e.dataset.frame || 0) > 0)",
        timeout=90_000,
    )
    assert not nb.errors, nb.errors
