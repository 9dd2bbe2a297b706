"""A notebook saved after running keeps each view's picture: converted with nbconvert and opened
with the network off, every view shows what it showed in the kernel; a live JupyterLab shows the
widget and never the picture, and the notebook it saves carries the pictures."""

from __future__ import annotations

import base64
import io
import json
import re
import time
import uuid

import nbformat
import numpy as np
import pytest
from PIL import Image

from .conftest import write_notebook

pytestmark = pytest.mark.browser

WIDGET = "application/vnd.jupyter.widget-view+json"
SETUP = (
    "import cnnwidgets\n"
    "demo = cnnwidgets.demo.mnist('val')\n"
    "kw = dict(mean=demo.mean, std=demo.std)\n"
    "x, y = demo.images[:150], demo.labels[:150]"
)
#: One cell per view (each displayed as the cell's value) and the Explorer, as a user writes them.
VIEW_CELLS = {
    "FilterGrid": "cnnwidgets.FilterGrid(demo.model, 'features.3')",
    "ActivationExplorer": "maps = cnnwidgets.ActivationExplorer(demo.model, x, y, demo.classes, **kw)\nmaps.index = 3\nmaps",
    "SaliencyViewer": "cnnwidgets.SaliencyViewer(demo.model, x, y, demo.classes, method='grad_x_input', **kw)",
    "OIPOptimizer": ("oip = cnnwidgets.OIPOptimizer(demo.model, 'features.6', channel=5, images=x[:1], **kw)\n"
                     "oip.run(steps=30)\noip"),
    "TSNEScatter": "tsne = cnnwidgets.TSNEScatter(demo.model, x, y, demo.classes, **kw)\ntsne.wait()\ntsne",
}
EXPLORER = ("ex = cnnwidgets.Explorer(demo.model, x, y, demo.classes, tsne_images=150, **kw)\n"
            "ex.tsne.wait()\nex")


def _png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _pictures(output: dict) -> dict[str, np.ndarray]:
    """{view kind: picture} of one display output's text/html."""
    text = output["data"]["text/html"]
    text = "".join(text) if isinstance(text, list) else text
    found = re.findall(r'data-view="(\w+)"[^>]*><img src="data:image/png;base64,([^"]+)"', text)
    return {kind: _png(b64) for kind, b64 in found}


def _outputs(nb) -> list[dict]:
    """The display outputs of the view cells (after the setup cell), in order."""
    outs = []
    for cell in nb.cells[1:]:
        shown = [o for o in cell.outputs if o.get("output_type") in ("execute_result", "display_data")]
        assert len(shown) == 1, f"{cell.source!r}: {len(shown)} outputs"
        outs.append(shown[0])
    return outs


def _offline(browser, path):
    """``path`` opened from disk with every request but file:/data: refused."""
    ctx = browser.new_context(offline=True, viewport={"width": 1300, "height": 1000})
    blocked = []

    def guard(route):
        if route.request.url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    ctx.route("**/*", guard)
    page = ctx.new_page()
    page.goto(path.as_uri())
    return ctx, page, blocked


def _shown(page, kind: str, index: int) -> np.ndarray:
    """The pixels the browser drew for the ``index``-th picture of ``kind`` (read back through a
    canvas at its natural size)."""
    d = page.evaluate(
        """async ([kind, i]) => {
          const img = document.querySelectorAll(`.cnnw-fallback-${kind} img`)[i];
          if (!img) return null;
          if (!img.complete) await new Promise((r) => { img.onload = r; img.onerror = r; });
          const c = document.createElement('canvas');
          c.width = img.naturalWidth; c.height = img.naturalHeight;
          const g = c.getContext('2d'); g.drawImage(img, 0, 0);
          const box = img.getBoundingClientRect();
          return { w: c.width, h: c.height, shown: box.width * box.height,
                   px: Array.from(g.getImageData(0, 0, c.width, c.height).data) };
        }""",
        [kind, index],
    )
    assert d is not None, f"no picture of {kind} in the page"
    assert d["shown"] > 0, f"the picture of {kind} takes no room on the page"
    return np.asarray(d["px"], np.uint8).reshape(d["h"], d["w"], 4)[..., :3]


def test_nbconvert_html_shows_every_view_offline(browser, tmp_path):
    import subprocess
    import sys

    write_notebook(tmp_path, "saved.ipynb", [SETUP, *VIEW_CELLS.values(), EXPLORER])
    # as the README says: executed without the widget state (a stored state makes nbconvert pick
    # the widget, an empty box without its kernel), then converted, both by the command line
    nbconvert = [sys.executable, "-m", "jupyter", "nbconvert"]
    for args in (["--to", "notebook", "--execute", "--ExecutePreprocessor.store_widget_state=False",
                  "--ExecutePreprocessor.timeout=600", "--output", "executed.ipynb", "saved.ipynb"],
                 ["--to", "html", "executed.ipynb", "--output", "saved.html"]):
        run = subprocess.run([*nbconvert, *args], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert run.returncode == 0, run.stderr[-3000:]
    nb = nbformat.read(tmp_path / "executed.ipynb", as_version=4)
    outs = _outputs(nb)
    for kind, out in zip(VIEW_CELLS, outs):
        assert WIDGET in out["data"] and "image/png" in out["data"], kind
        assert set(_pictures(out)) == {kind}, kind
    explorer = _pictures(outs[-1])
    assert set(VIEW_CELLS) <= set(explorer)

    ctx, page, _blocked = _offline(browser, tmp_path / "saved.html")
    try:
        page.wait_for_selector(".cnnw-fallback img", timeout=30_000)
        for kind, out in zip(VIEW_CELLS, outs):
            expected = _pictures(out)[kind]
            assert expected.std() > 10, f"{kind}: a blank picture"
            np.testing.assert_array_equal(_shown(page, kind, 0), expected, err_msg=kind)
        for kind, expected in explorer.items():
            np.testing.assert_array_equal(_shown(page, kind, 1), expected, err_msg=f"Explorer: {kind}")
        # and each says what it is: the summary under the picture
        text = page.inner_text(".cnnw-fallback-OIPOptimizer")
        assert "channel 5 of 'features.6'" in text and "step 30" in text
    finally:
        ctx.close()


def test_jupyterlab_shows_the_widget_only_and_saves_the_pictures(open_notebook, lab):
    nb = open_notebook("live_only.ipynb", [SETUP, VIEW_CELLS["FilterGrid"], VIEW_CELLS["SaliencyViewer"]])
    page = nb.page
    for root in (".cnnw-filter-grid", ".cnnw-saliency-viewer"):
        page.wait_for_selector(root, timeout=90_000)
    page.wait_for_function(
        "() => ['.cnnw-filter-grid', '.cnnw-saliency-viewer'].every(r => Number(document.querySelector(r).dataset.frame || 0) > 0)",
        timeout=90_000)
    # the live front end picked the widget: no picture, no summary, one output per cell
    assert page.locator(".cnnw-fallback").count() == 0
    assert page.evaluate("() => document.querySelectorAll('.jp-OutputArea-output img').length") == 0
    counts = page.evaluate("() => [...document.querySelectorAll('.jp-Cell .jp-OutputArea')].map(a => a.querySelectorAll(':scope > .jp-OutputArea-child').length)")
    assert counts == [0, 1, 1], counts
    # saved from JupyterLab, the notebook holds the widget and the pictures beside it
    page.evaluate("() => window.jupyterapp.commands.execute('docmanager:save')")
    saved = lab["root"] / "live_only.ipynb"
    deadline = time.time() + 30
    while time.time() < deadline:
        cells = json.loads(saved.read_text())["cells"]
        if all(c["outputs"] for c in cells[1:]):
            break
        time.sleep(0.5)
    saved_nb = nbformat.read(saved, as_version=4)
    for kind, out in zip(["FilterGrid", "SaliencyViewer"], _outputs(saved_nb)):
        assert {WIDGET, "image/png", "text/html"} <= set(out["data"]), kind
        assert _pictures(out)[kind].std() > 10, kind
    assert not [e for e in nb.errors], nb.errors



def test_jupyterlab_reopened_shows_the_pictures_until_the_cells_run(lab, browser):
    """A notebook saved with its outputs and opened again: before its cells run, JupyterLab has
    no widget model for the outputs and shows the pictures (its widget renderer falls back to
    the next mime type); once they run, the live views replace them."""
    from nbclient import NotebookClient

    from .conftest import Notebook

    path = write_notebook(lab["root"], "reopened.ipynb", [SETUP, VIEW_CELLS["FilterGrid"], VIEW_CELLS["SaliencyViewer"]])
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", store_widget_state=False).execute()
    nbformat.write(nb, path)
    saved = [_pictures(out) for out in _outputs(nb)]
    ctx = browser.new_context(viewport={"width": 1300, "height": 1400})
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(f"{lab['url']}/lab/workspaces/t{uuid.uuid4().hex[:10]}/tree/reopened.ipynb?reset&token={lab['token']}",
                  timeout=90_000)
        page.wait_for_selector(".cnnw-fallback img", timeout=60_000)
        assert page.locator(".cnnw-root").count() == 0
        for i, (kind, expected) in enumerate((k, v) for pics in saved for k, v in pics.items()):
            np.testing.assert_array_equal(_shown(page, kind, 0), expected, err_msg=kind)
        Notebook(page, lab, "reopened.ipynb").run_all()
        page.wait_for_function(
            "() => ['.cnnw-filter-grid', '.cnnw-saliency-viewer'].every(r => Number(document.querySelector(r)?.dataset.frame || 0) > 0)",
            timeout=90_000)
        page.wait_for_function("() => document.querySelectorAll('.cnnw-fallback').length === 0", timeout=30_000)
        assert not errors, errors
    finally:
        try:
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        finally:
            ctx.close()
