"""TSNEScatter in JupyterLab + headless Chromium: live points and progress, hover thumbnail while
the kernel is busy, click to select (Selection), keyboard cursor, box select with its count and
clearing, legend toggling; light and dark themes, widths of 1,400 and 800 pixels, a failed map.

Screen positions come from the view's data-scale/tx/ty (screen = canvas corner + (x s + tx,
-y s + ty)) and the kernel's ``ts.embedding``."""

from __future__ import annotations

import re

import numpy as np
import pytest

from .conftest import save_screenshot

pytestmark = pytest.mark.browser

TS = ".cnnw-tsne-scatter"
CANVAS = f"{TS} canvas.cnnw-scatter"


def _np(nb, expr: str, name: str) -> np.ndarray:
    path = nb.lab["root"] / name
    nb.kernel(f"import numpy as _np; _np.save({str(path)!r}, {expr})")
    return np.load(path)


def _wait_attr(nb, sel: str, attr: str, value: str, timeout=30_000):
    nb.page.wait_for_function(
        "([s, a, v]) => document.querySelector(s)?.dataset[a] === v", arg=[sel, attr, value], timeout=timeout
    )


def _view(nb) -> tuple[float, float, float]:
    return tuple(float(nb.page.get_attribute(TS, f"data-{k}")) for k in ("scale", "tx", "ty"))


def _screen_all(nb, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Page coordinates of every point, and the canvas's bounding box."""
    s, tx, ty = _view(nb)
    box = nb.page.locator(CANVAS).first.bounding_box()
    return box["x"] + pos[:, 0] * s + tx, box["y"] - pos[:, 1] * s + ty, box


def _screen(nb, i: int) -> tuple[float, float]:
    x, y = nb.kernel_json(f"[float(v) for v in ts.embedding[{i}]]")
    s, tx, ty = _view(nb)
    box = nb.page.locator(CANVAS).first.bounding_box()
    return box["x"] + x * s + tx, box["y"] - y * s + ty


def _drag(page, x0, y0, x1, y1):
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x1, y1, steps=5)
    page.mouse.up()


def _text(page, sel: str) -> str:
    return page.inner_text(sel).strip()


def _isolated(sx: np.ndarray, sy: np.ndarray, idx: np.ndarray, order: np.ndarray, gap: float = 5.0) -> int:
    """The first index of ``idx`` (in ``order``) with no other point within ``gap`` screen pixels."""
    for i in idx[order]:
        d = np.hypot(sx - sx[i], sy - sy[i])
        d[i] = np.inf
        if d.min() > gap:
            return int(i)
    raise AssertionError("no isolated point in the cluster")


def test_tsne_hover_click_keyboard_and_box_select(open_notebook):
    nb = open_notebook(
        "tsne.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "sel = cnnwidgets.Selection()\n"
            "ts = cnnwidgets.TSNEScatter(demo.model, demo.images[:600], demo.labels[:600], demo.classes,\n"
            "    selection=sel, mean=demo.mean, std=demo.std, n_iter=1000)\n"
            "ts",
        ],
        viewport=(1300, 1100),
    )
    page = nb.page
    page.wait_for_selector(CANVAS, timeout=60_000)
    page.wait_for_function(f"() => document.querySelector('{TS}').dataset.points === '600'", timeout=60_000)
    # progress while t-SNE runs: "iteration i of 1000" and a bar at i / 1000
    page.wait_for_function(
        f"() => /^iteration \\d+ of 1000$/.test(document.querySelector('{TS} .cnnw-progress-text')?.textContent || '')",
        timeout=60_000)
    # both read in one go: the run goes on between two reads
    text, bar = page.evaluate(
        f"() => [document.querySelector('{TS} .cnnw-progress-text').textContent.trim(),"
        f" document.querySelector('{TS} progress.cnnw-progress').value]")
    it = int(re.match(r"iteration (\d+) of 1000", text).group(1))
    assert 0 < it <= 1000 and abs(bar - it / 1000) < 1e-6, (text, bar)
    assert _text(page, f"{TS} .cnnw-phase") == "running"
    # the points move while t-SNE runs (live updates), then it finishes
    frames_running = int(page.get_attribute(TS, "data-frame"))
    nb.kernel("ts.wait()")
    _wait_attr(nb, TS, "running", "false", timeout=60_000)
    _wait_attr(nb, TS, "phase", "done")
    assert int(page.get_attribute(TS, "data-frame")) > frames_running
    assert nb.kernel_json("ts.iteration") == 1000
    assert _text(page, f"{TS} .cnnw-phase") == "done"
    assert _text(page, f"{TS} .cnnw-status") == nb.kernel_json("ts.status")
    assert page.is_hidden(f"{TS} progress.cnnw-progress")
    page.wait_for_timeout(300)

    # hover while the kernel is busy: the thumbnail comes from the page's own copy
    target = 123
    x, y = _screen(nb, target)
    page.evaluate(
        "() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;"
        " k.requestExecute({code: 'import time; time.sleep(5)'}); }"
    )
    page.wait_for_timeout(300)
    page.mouse.move(x, y)
    page.wait_for_function(f"() => (document.querySelector('{TS}').dataset.hoverIndex || '-1') !== '-1'", timeout=3_000)
    hovered = int(page.get_attribute(TS, "data-hover-index"))
    hover_ms = float(page.get_attribute(TS, "data-hover-ms"))
    print(f"\nhover to thumbnail: {hover_ms:.2f} ms in the page, kernel busy")
    thumb = nb.canvas_pixels(f"{TS} canvas.cnnw-hover-thumb")  # read while the kernel still sleeps
    assert "kernel" not in page.inner_text(f"{TS} .cnnw-hover").lower()
    nb.kernel("pass", timeout=30)  # waits for the sleep to end
    want = _np(nb, f"ts._thumbs[{hovered}]", "t.npy")
    want = np.repeat(want, 3, axis=-1).repeat(3, axis=0).repeat(3, axis=1)
    assert np.array_equal(thumb[..., :3], want)
    pos = np.asarray(nb.kernel_json("[[float(a), float(b)] for a, b in ts.embedding]"))
    d = np.hypot(*(pos - pos[target]).T)
    assert d[hovered] <= 8 / float(page.get_attribute(TS, "data-scale")) + 1e-6  # the point under the cursor

    # click the point: the Selection (and so every linked view) gets its index
    page.mouse.click(x, y)
    nb.wait_kernel("[ts.index, sel.index]", [hovered, hovered])
    page.wait_for_selector(f"{TS} .cnnw-neighbors-feature .cnnw-thumb", timeout=10_000)
    shown = [int(e.get_attribute("data-index")) for e in page.query_selector_all(f"{TS} .cnnw-neighbors-feature .cnnw-thumb")]
    assert shown == nb.kernel_json(f"[int(i) for i in ts.neighbors({hovered}, 8, 'feature')]")

    # keyboard: the focused canvas's cursor starts on the selected point; ArrowRight moves it to
    # the nearest point within 45 degrees to the right on screen, Enter selects that one
    page.focus(CANVAS)
    _wait_attr(nb, TS, "cursor", str(hovered))
    assert page.evaluate(f"() => getComputedStyle(document.querySelector('{CANVAS}')).outlineStyle") == "solid"
    dx, dy = (pos - pos[hovered]).T
    dy = -dy  # screen y grows downwards
    right = (dx > 0) & (np.abs(dy) <= dx)
    assert right.any()
    want_next = int(np.flatnonzero(right)[np.argmin((dx**2 + dy**2)[right])])
    page.keyboard.press("ArrowRight")
    _wait_attr(nb, TS, "cursor", str(want_next))
    assert nb.kernel_json("ts.index") == hovered  # moving the cursor does not select yet
    page.keyboard.press("Enter")
    nb.wait_kernel("[ts.index, sel.index]", [want_next, want_next])
    assert _text(page, f"{TS} .cnnw-hover").startswith(f"#{want_next} ")  # the cursor's image is shown

    # box selection (drag in box mode) sets `selected` to the points inside the box, with a count
    page.click(f"{TS} button.cnnw-box-mode")
    _wait_attr(nb, TS, "boxMode", "true")
    box = page.locator(CANVAS).bounding_box()
    x0, y0, x1, y1 = box["x"] + 100, box["y"] + 100, box["x"] + 300, box["y"] + 260

    def box_select():
        _drag(page, x0, y0, x1, y1)
        s, tx, ty = _view(nb)
        sx, sy = pos[:, 0] * s + tx + box["x"], -pos[:, 1] * s + ty + box["y"]
        inside = sorted(np.flatnonzero((sx >= x0) & (sx <= x1) & (sy >= y0) & (sy <= y1)).tolist())
        assert inside, "the box should hold some points"
        nb.wait_kernel("sorted(ts.selected)", inside)
        _wait_attr(nb, TS, "selectedCount", str(len(inside)))
        assert _text(page, f"{TS} .cnnw-selection-count") == f"{len(inside)} points selected"
        return inside

    box_select()
    # Tab reaches every control, each with a one-line tooltip
    controls = page.evaluate(f"""() => [...document.querySelector('{TS}').querySelectorAll('button, select, input, canvas.cnnw-scatter')]
        .filter((e) => e.offsetParent !== null).map((e) => [e.className, e.title])""")
    assert controls and all(title and "\n" not in title for _, title in controls), controls
    page.focus(f"{TS} select.cnnw-color-by")
    reached = []
    for _ in range(len(controls) + 2):
        reached.append(page.evaluate(f"() => document.querySelector('{TS}').contains(document.activeElement) ? document.activeElement.className : ''"))
        page.keyboard.press("Tab")
    for cls in ("cnnw-color-by", "cnnw-box-mode", "cnnw-reset-view", "cnnw-k", "cnnw-clear-selection", "cnnw-scatter",
                "cnnw-legend-item"):
        assert any(cls in r for r in reached), (cls, reached)
    assert page.get_attribute(f"{TS} label:has(.cnnw-k)", "data-needs-kernel") is not None

    page.click(f"{TS} button.cnnw-clear-selection")  # clear: the button
    nb.wait_kernel("ts.selected", [])
    _wait_attr(nb, TS, "selectedCount", "0")
    assert page.is_hidden(f"{TS} button.cnnw-clear-selection")  # nothing to clear
    box_select()
    page.keyboard.press("Escape")  # clear: Escape
    nb.wait_kernel("ts.selected", [])
    box_select()
    assert page.locator(CANVAS).bounding_box() == box  # the map did not move when the selection began
    page.mouse.click(box["x"] + 2, box["y"] + 2)  # clear: a click on empty space
    nb.wait_kernel("ts.selected", [])
    assert nb.kernel_json("ts.index") == want_next  # ... which selects no image either

    # hiding a class in the legend drops its points from the selection and their marks
    _drag(page, box["x"] + 1, box["y"] + 1, box["x"] + box["width"] - 1, box["y"] + box["height"] - 1)
    nb.wait_kernel("len(ts.selected)", 600)
    labels = np.asarray(nb.kernel_json("ts._labels.tolist()"))
    rest = [int(i) for i in np.flatnonzero(labels != 3)]
    assert 0 < len(rest) < 600
    assert "3" in _text(page, f"{TS} .cnnw-legend-item[data-class='3']")
    page.click(f"{TS} .cnnw-legend-item[data-class='3']")
    nb.wait_kernel("ts.hidden_classes", [3])
    nb.wait_kernel("sorted(ts.selected)", rest)
    _wait_attr(nb, TS, "marks", str(len(rest)))
    assert _text(page, f"{TS} .cnnw-selection-count") == f"{len(rest)} points selected"
    assert page.get_attribute(f"{TS} .cnnw-legend-item[data-class='3']", "aria-pressed") == "false"
    page.click(f"{TS} .cnnw-legend-item[data-class='3']")  # shown again; its points stay unselected
    nb.wait_kernel("ts.hidden_classes", [])
    assert nb.kernel_json("len(ts.selected)") == len(rest)
    assert _text(page, f"{TS} .cnnw-legend-title") == "colour: label"
    page.select_option(f"{TS} select.cnnw-color-by", "correct")
    nb.wait_kernel("ts.color_by", "correct")
    assert _text(page, f"{TS} .cnnw-legend-title") == "colour: correct?"
    assert not nb.errors, nb.errors


def _contrast_ok(nb):
    report = nb.contrast_report(TS)
    assert report["checked"] > 0
    assert report["failures"] == [], report["failures"]
    assert report["white_canvases"] == [], report["white_canvases"]


def _class_points_stand_out(nb, pos: np.ndarray, labels: np.ndarray) -> None:
    """For each class, an isolated point's pixel differs from the canvas background by >= 3:1."""
    px = nb.canvas_pixels(CANVAS).astype(float)
    ratio = float(nb.page.evaluate(f"() => document.querySelector('{CANVAS}').width / document.querySelector('{CANVAS}').clientWidth"))
    s, tx, ty = _view(nb)
    sx, sy = pos[:, 0] * s + tx, -pos[:, 1] * s + ty
    bg = px[1, 1, :3]

    def lum(c):
        c = c / 255
        c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        i = _isolated(sx, sy, idx, np.arange(len(idx)), gap=6)
        p = px[int(sy[i] * ratio), int(sx[i] * ratio), :3]
        a, b = lum(p), lum(bg)
        assert (max(a, b) + 0.05) / (min(a, b) + 0.05) >= 2.9, (int(c), p, bg)


def test_tsne_themes_widths_and_failure(open_notebook):
    nb = open_notebook(
        "tsne_layout.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "ts = cnnwidgets.TSNEScatter(demo.model, demo.images[:600], demo.labels[:600], demo.classes,\n"
            "    method='pca', mean=demo.mean, std=demo.std)\n"
            "ts",
            "import torch\n"
            "from torch import nn\n"
            "class NaNFeatures(nn.Module):\n"
            "    def forward(self, x):\n"
            "        out = x.clone(); out[::2] = float('nan'); return out\n"
            "torch.manual_seed(0)\n"
            "bad = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 4), NaNFeatures(),\n"
            "                    nn.Linear(4, 3))\n"
            "broken = cnnwidgets.TSNEScatter(bad, torch.randn(8, 1, 8, 8), [0, 1, 2, 0, 1, 2, 0, 1], method='tsne')\n"
            "broken",
        ],
        viewport=(1400, 1000),
    )
    page = nb.page
    page.wait_for_function(f"() => document.querySelector('{TS}')?.dataset.points === '600'", timeout=90_000)
    _wait_attr(nb, TS, "phase", "done", timeout=60_000)
    nb.kernel("broken.wait()")
    # the failed map says so: its phase, its status, and the error line of the view
    page.wait_for_function(f"() => document.querySelectorAll('{TS}')[1]?.dataset.phase === 'failed'", timeout=30_000)
    failed = page.locator(TS).nth(1)
    assert failed.locator(".cnnw-phase").inner_text().strip() == "failed"
    err = failed.locator(".cnnw-view-error").inner_text().strip()
    assert err == nb.kernel_json("broken.view_error") and err.startswith("ValueError") and "NaN" in err
    assert failed.locator(".cnnw-status").inner_text().strip() == f"error: {err}"

    pos = np.asarray(nb.kernel_json("[[float(a), float(b)] for a, b in ts.embedding]"))
    labels = np.asarray(nb.kernel_json("ts._labels.tolist()"))
    # light theme, 1,400 px
    nb.set_theme("JupyterLab Light")
    _contrast_ok(nb)
    assert nb.overflow_report(TS) == []
    wide = int(page.get_attribute(TS, "data-width"))
    assert wide >= 700 and int(page.get_attribute(TS, "data-height")) == round(wide * 0.75)
    assert abs(page.locator(CANVAS).first.bounding_box()["width"] - wide) <= 1
    _class_points_stand_out(nb, pos, labels)
    save_screenshot(page, TS, "tsne_scatter")

    # dark theme: text readable, the canvas dark, every class's points visible on it
    nb.set_theme("JupyterLab Dark")
    _wait_attr(nb, TS, "dark", "true")
    _contrast_ok(nb)
    corner = nb.canvas_pixels(CANVAS)[2, 2, :3]
    assert corner.max() < 90, corner  # the theme's background, not white
    _class_points_stand_out(nb, pos, labels)
    save_screenshot(page, TS, "tsne_scatter_dark")
    nb.set_theme("JupyterLab Light")

    # 800 px: the map follows the narrower cell, nothing overflows, every point is reachable
    page.set_viewport_size({"width": 800, "height": 900})
    page.wait_for_function(f"(w) => Number(document.querySelector('{TS}').dataset.width) < w", arg=wide, timeout=10_000)
    page.wait_for_timeout(300)
    assert nb.overflow_report(TS) == []
    page.locator(CANVAS).first.scroll_into_view_if_needed()
    sx, sy, box = _screen_all(nb, pos)
    assert box["x"] >= 0 and box["x"] + box["width"] <= 800
    assert box["y"] >= 0 and box["y"] + box["height"] <= 900
    assert (sx >= box["x"]).all() and (sx <= box["x"] + box["width"]).all()
    assert (sy >= box["y"]).all() and (sy <= box["y"] + box["height"]).all()
    # a click on the farthest point of three clusters selects it
    for c in (0, 1, 7):
        idx = np.flatnonzero(labels == c)
        far = np.argsort(-np.hypot(*(pos[idx] - pos[idx].mean(0)).T), kind="stable")
        i = _isolated(sx, sy, idx, far)
        page.mouse.move(sx[i], sy[i])
        _wait_attr(nb, TS, "hoverIndex", str(i), timeout=5_000)
        page.mouse.click(sx[i], sy[i])
        nb.wait_kernel("ts.index", i)
    assert not nb.errors, nb.errors


def test_50000_points_hover_while_kernel_busy(open_notebook):
    """Scale: 50,000 points with thumbnails; hover answers from the page while the kernel sleeps;
    the thumbnails are packed into three canvas pages of at most 4096 pixels."""
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
    # 28 x 28 thumbnails: 146 x 146 a page, so three pages for 50,000
    assert page.get_attribute(TS, "data-atlas-pages") == "3"
    assert int(page.get_attribute(TS, "data-atlas-side")) <= 4096
    page.evaluate(
        "() => { const k = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;"
        " k.requestExecute({code: 'import time; time.sleep(5)'}); }"
    )
    page.wait_for_timeout(300)
    box = page.locator(CANVAS).bounding_box()
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
    # image 9000's nearest neighbours are its copies, on the second and third pages
    nb.kernel("ts.index = 9000")
    page.wait_for_selector(f"{TS} .cnnw-neighbors-feature .cnnw-thumb", timeout=30_000)
    shown = [int(e.get_attribute("data-index")) for e in page.query_selector_all(f"{TS} .cnnw-neighbors-feature .cnnw-thumb")]
    per_page = (4096 // 28) ** 2
    assert any(j >= 2 * per_page for j in shown), shown
    for j in shown:
        got = nb.canvas_pixels(f"{TS} .cnnw-neighbors-feature .cnnw-thumb[data-index='{j}'] canvas")
        want = _np(nb, f"ts._thumbs[{j}]", "t.npy")
        assert np.array_equal(got[..., :3], np.repeat(want, 3, axis=-1).repeat(2, axis=0).repeat(2, axis=1)), j
    assert not nb.errors, nb.errors
