"""TSNEScatter in JupyterLab + headless Chromium: live points, hover thumbnail while the kernel is
busy, click to select (Selection), box select, legend toggling."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import DOCS
from .test_activation_explorer_browser import _np, _wait_attr

pytestmark = pytest.mark.browser

TS = ".cnnw-tsne-scatter"


def _screen(nb, i: int) -> tuple[float, float]:
    s, tx, ty = (float(nb.page.get_attribute(TS, f"data-{k}")) for k in ("scale", "tx", "ty"))
    x, y = nb.kernel_json(f"[float(v) for v in ts.embedding[{i}]]")
    box = nb.page.locator(f"{TS} canvas.cnnw-scatter").bounding_box()
    return box["x"] + x * s + tx, box["y"] - y * s + ty


def test_tsne_hover_click_and_box_select(open_notebook):
    nb = open_notebook(
        "tsne.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "sel = cnnwidgets.Selection()\n"
            "ts = cnnwidgets.TSNEScatter(demo.model, demo.images[:600], demo.labels[:600], demo.classes,\n"
            "    selection=sel, mean=demo.mean, std=demo.std)\n"
            "ts",
        ],
        viewport=(1300, 1100),
    )
    page = nb.page
    page.wait_for_selector(f"{TS} canvas.cnnw-scatter", timeout=60_000)
    page.wait_for_function(f"() => document.querySelector('{TS}').dataset.points === '600'", timeout=60_000)
    # the points move while t-SNE runs (live updates), then it finishes
    frames_running = int(page.get_attribute(TS, "data-frame"))
    nb.kernel("ts.wait()")
    _wait_attr(nb, TS, "running", "false", timeout=60_000)
    assert int(page.get_attribute(TS, "data-frame")) > frames_running
    assert nb.kernel_json("ts.iteration") >= 700
    page.wait_for_timeout(300)

    # hover while the kernel is busy: the thumbnail comes from the page's atlas
    target = 123
    x, y = _screen(nb, target)
    page.evaluate(
        "() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;"
        " k.requestExecute({code: 'import time; time.sleep(5)'}); }"
    )
    page.wait_for_timeout(300)
    page.mouse.move(x, y)
    page.wait_for_function(f"() => document.querySelector('{TS}').dataset.hoverIndex !== undefined && document.querySelector('{TS}').dataset.hoverIndex !== '-1'", timeout=3_000)
    hovered = int(page.get_attribute(TS, "data-hover-index"))
    hover_ms = float(page.get_attribute(TS, "data-hover-ms"))
    print(f"\nhover to thumbnail: {hover_ms:.2f} ms in the page, kernel busy")
    thumb = nb.canvas_pixels(f"{TS} canvas.cnnw-hover-thumb")  # read while the kernel still sleeps
    assert "kernel" not in page.inner_text(f"{TS} .cnnw-hover").lower()
    nb.kernel("pass", timeout=30)  # waits for the sleep to end
    want = _np(nb, f"ts._thumbs[{hovered}]", "t.npy")
    want = np.repeat(want, 3, axis=-1).repeat(3, axis=0).repeat(3, axis=1)
    assert np.array_equal(thumb[..., :3], want)
    pos = nb.kernel_json("[[float(a), float(b)] for a, b in ts.embedding]")
    d = np.hypot(*(np.asarray(pos) - np.asarray(pos[target])).T)
    assert d[hovered] <= 8 / float(page.get_attribute(TS, "data-scale")) + 1e-6  # the point under the cursor

    # click the point: the Selection (and so every linked view) gets its index
    page.mouse.click(x, y)
    nb.wait_kernel("[ts.index, sel.index]", [hovered, hovered])
    page.wait_for_selector(f"{TS} .cnnw-neighbors-feature .cnnw-thumb", timeout=10_000)
    shown = [int(e.get_attribute("data-index")) for e in page.query_selector_all(f"{TS} .cnnw-neighbors-feature .cnnw-thumb")]
    assert shown == nb.kernel_json(f"[int(i) for i in ts.neighbors({hovered}, 8, 'feature')]")

    # box selection (drag in box mode) sets `selected` to the points inside the box
    page.click(f"{TS} button.cnnw-box-mode")
    _wait_attr(nb, TS, "boxMode", "true")
    box = page.locator(f"{TS} canvas.cnnw-scatter").bounding_box()
    x0, y0, x1, y1 = box["x"] + 100, box["y"] + 100, box["x"] + 300, box["y"] + 260
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()
    s, tx, ty = (float(page.get_attribute(TS, f"data-{k}")) for k in ("scale", "tx", "ty"))
    p = np.asarray(pos)
    sx, sy = p[:, 0] * s + tx + box["x"], -p[:, 1] * s + ty + box["y"]
    inside = sorted(np.flatnonzero((sx >= x0) & (sx <= x1) & (sy >= y0) & (sy <= y1)).tolist())
    assert inside, "the box should hold some points"
    nb.wait_kernel("sorted(ts.selected)", inside)

    # legend: clicking a class hides it, clicking again shows it
    page.click(f"{TS} .cnnw-legend-item[data-class='3']")
    nb.wait_kernel("ts.hidden_classes", [3])
    page.click(f"{TS} .cnnw-legend-item[data-class='3']")
    nb.wait_kernel("ts.hidden_classes", [])
    DOCS.mkdir(exist_ok=True)
    page.locator(TS).screenshot(path=str(DOCS / "tsne_scatter.png"))
    assert not nb.errors, nb.errors


def test_50000_points_hover_while_kernel_busy(open_notebook):
    """Scale: 50,000 points with thumbnails; hover answers from the page while the kernel sleeps."""
    nb = open_notebook(
        "tsne_50k.ipynb",
        [
            "import torch, cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('all')\n"
            "images = demo.images.repeat(5, 1, 1, 1)   # 50,000 points\n"
            "labels = demo.labels.repeat(5)\n"
            "ts = cnnwidgets.TSNEScatter(demo.model, images, labels, demo.classes, method='pca',\n"
            "    mean=demo.mean, std=demo.std)\n"
            "ts",
        ],
        viewport=(1300, 1000),
    )
    page = nb.page
    page.wait_for_function(f"() => document.querySelector('{TS}')?.dataset.points === '50000'", timeout=180_000)
    _wait_attr(nb, TS, "running", "false", timeout=180_000)
    assert nb.kernel_json("[len(ts._atlas), ts._atlas_meta['page_w'] <= 4096, ts._atlas_meta['page_h'] <= 4096]") == [3, True, True]
    page.evaluate(
        "() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;"
        " k.requestExecute({code: 'import time; time.sleep(5)'}); }"
    )
    page.wait_for_timeout(300)
    box = page.locator(f"{TS} canvas.cnnw-scatter").bounding_box()
    times = []
    hits = 0
    for fx, fy in [(0.5, 0.5), (0.4, 0.55), (0.6, 0.45), (0.45, 0.4), (0.55, 0.6), (0.5, 0.35)]:
        page.mouse.move(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
        page.wait_for_timeout(50)
        idx = page.get_attribute(TS, "data-hover-index")
        if idx and idx != "-1":
            hits += 1
            times.append(float(page.get_attribute(TS, "data-hover-ms")))
    assert hits >= 3, "hovering the dense centre of the map finds points"
    print(f"\n50,000 points: hover-to-thumbnail {np.median(times):.2f} ms median (max {max(times):.2f}) with the kernel busy")
    assert nb.kernel_json("ts.last_error") is None  # runs after the sleep ends
    assert not nb.errors, nb.errors
