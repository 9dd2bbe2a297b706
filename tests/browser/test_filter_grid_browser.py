"""FilterGrid in a real JupyterLab in headless Chromium: pixels, hover, click round trip, layer switch."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from .conftest import ARTIFACTS, DOCS

pytestmark = pytest.mark.browser

GRID = ".cnnw-filter-grid"
CANVAS = ".cnnw-filter-grid canvas.cnnw-canvas"


def _frame(nb) -> int:
    return int(nb.page.get_attribute(GRID, "data-frame") or 0)


def _wait_frame_after(nb, before: int) -> None:
    nb.page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel)?.dataset.frame || 0) > n",
        arg=[GRID, before],
        timeout=30_000,
    )


def _python_image(nb, tmp_name: str) -> np.ndarray:
    path = nb.lab["root"] / tmp_name
    nb.kernel(f"import numpy as _np; _np.save({str(path)!r}, grid.to_image())")
    return np.load(path)


def _assert_canvas_matches(nb, image: np.ndarray) -> tuple[int, int]:
    px = nb.canvas_pixels(CANVAS)
    x0 = int(nb.page.get_attribute(GRID, "data-x0"))
    y0 = int(nb.page.get_attribute(GRID, "data-y0"))
    h, w = px.shape[:2]
    assert h > 20 and w > 20, f"canvas too small: {px.shape}"
    expected = image[y0 : y0 + h, x0 : x0 + w]
    assert expected.shape[:2] == (h, w), (expected.shape, px.shape, x0, y0)
    assert (px[..., 3] == 255).all()
    diff = np.abs(px[..., :3].astype(int) - expected.astype(int))
    assert diff.max() == 0, f"{(diff > 0).any(-1).sum()} pixels differ from the Python render"
    return x0, y0


def test_filter_grid_pixels_click_and_layer_switch(open_notebook):
    nb = open_notebook(
        "filter_grid.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "grid = cnnwidgets.FilterGrid(demo.model, 'features.3', zoom=8, height=400)\n"
            "grid",
        ],
    )
    page = nb.page
    page.wait_for_selector(CANVAS, timeout=60_000)
    page.wait_for_function(f"() => Number(document.querySelector('{GRID}').dataset.frame || 0) > 0", timeout=30_000)
    assert nb.kernel_json("grid.n_tiles") == 64 * 32

    # 1. the canvas shows exactly the pixels Python renders
    image = _python_image(nb, "fg0.npy")
    assert _assert_canvas_matches(nb, image) == (0, 0)
    DOCS.mkdir(exist_ok=True)
    page.locator(GRID).screenshot(path=str(DOCS / "filter_grid.png"))

    # 2. scrolling draws the part scrolled to (the canvas only covers the viewport)
    before = _frame(nb)
    page.evaluate(f"() => {{ const s = document.querySelector('{GRID} .cnnw-scroll'); s.scrollTop = 150; }}")
    _wait_frame_after(nb, before)
    page.wait_for_function(f"() => document.querySelector('{GRID}').dataset.y0 === '150'", timeout=10_000)
    x0, y0 = _assert_canvas_matches(nb, image)
    assert (x0, y0) == (0, 150)

    # 3. hover names the kernel; a click selects its filter on the Python side
    out_c, in_c = 41, 7
    tile = out_c * 32 + in_c
    geo = nb.kernel_json("dict(cols=grid._grid['columns'], th=grid._grid['tile_h'], tw=grid._grid['tile_w'])")
    cell_w, cell_h = geo["tw"] * 8 + 1, geo["th"] * 8 + 1
    gx = (tile % geo["cols"]) * cell_w + cell_w // 2
    gy = (tile // geo["cols"]) * cell_h + cell_h // 2
    page.evaluate(
        f"(y) => {{ const s = document.querySelector('{GRID} .cnnw-scroll'); s.scrollTop = y; }}", max(0, gy - 100)
    )
    page.wait_for_function(
        f"(y) => Number(document.querySelector('{GRID}').dataset.y0) === y", arg=max(0, gy - 100), timeout=10_000
    )
    box = page.locator(CANVAS).bounding_box()
    cx = box["x"] + gx - int(page.get_attribute(GRID, "data-x0"))
    cy = box["y"] + gy - int(page.get_attribute(GRID, "data-y0"))
    page.mouse.move(cx, cy)
    page.wait_for_function(f"() => document.querySelector('{GRID}').dataset.hoverTile === '{tile}'", timeout=5_000)
    tip = page.inner_text(f"{GRID} ~ .cnnw-tip, .cnnw-tip")
    assert f"filter {out_c}, input channel {in_c}" in tip
    lo, hi = nb.kernel_json(f"[float(v) for v in grid.tiles.stats[{tile}]]")
    assert f"{lo:.4f}" in tip and f"{hi:.4f}" in tip
    page.mouse.click(cx, cy)
    nb.wait_kernel("grid.channel", out_c)
    assert f"selected filter {out_c}" in page.inner_text(f"{GRID} .cnnw-selected")

    # 4. the layer dropdown redraws with the new layer's weights
    before = _frame(nb)
    page.select_option(f"{GRID} select.cnnw-layer", "features.6")
    nb.wait_kernel("grid.layer", "features.6")
    nb.wait_kernel("grid.n_tiles", 128 * 64)
    _wait_frame_after(nb, before)
    page.wait_for_function(
        f"() => document.querySelector('{GRID} .cnnw-info').textContent.includes('features.6')", timeout=10_000
    )
    image6 = _python_image(nb, "fg6.npy")
    _assert_canvas_matches(nb, image6)
    assert nb.kernel_json("grid.channel") == out_c  # 41 < 128 survives the switch

    # 5. style controls round trip: per-filter scale and diverging colours
    before = _frame(nb)
    page.select_option(f"{GRID} select.cnnw-cmap", "diverging")
    nb.wait_kernel("grid.cmap", "diverging")
    _wait_frame_after(nb, before)
    page.wait_for_timeout(200)
    _assert_canvas_matches(nb, _python_image(nb, "fg6d.npy"))
    assert not nb.errors, nb.errors


def test_filter_grid_262144_tiles_scroll_to_the_end(open_notebook):
    nb = open_notebook(
        "filter_grid_vgg.ipynb",
        [
            "import torch, cnnwidgets\n"
            "torch.manual_seed(0)\n"
            "net = torch.nn.Sequential(torch.nn.Conv2d(512, 512, 3))\n"
            "grid = cnnwidgets.FilterGrid(net, zoom=2, height=300)\n"
            "grid",
        ],
    )
    page = nb.page
    page.wait_for_selector(CANVAS, timeout=60_000)
    page.wait_for_function(f"() => Number(document.querySelector('{GRID}').dataset.frame || 0) > 0", timeout=60_000)
    assert nb.kernel_json("grid.n_tiles") == 262_144
    image = _python_image(nb, "vgg.npy")
    _assert_canvas_matches(nb, image)
    # jump to the bottom-right corner: the last tiles are drawn, and match
    before = _frame(nb)
    page.evaluate(
        f"() => {{ const s = document.querySelector('{GRID} .cnnw-scroll'); s.scrollTop = 1e9; s.scrollLeft = 1e9; }}"
    )
    _wait_frame_after(nb, before)
    x0, y0 = _assert_canvas_matches(nb, image)
    assert y0 > image.shape[0] - 400 and x0 > 0
    # draw time of one viewport in the page (reported, not asserted: machines are shared)
    ms = page.evaluate(
        f"""async () => {{
          const s = document.querySelector('{GRID} .cnnw-scroll');
          const root = document.querySelector('{GRID}');
          const t0 = performance.now(); let n = Number(root.dataset.frame);
          for (let i = 0; i < 20; i++) {{
            s.scrollTop = (i * 997) % 3000;
            await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
          }}
          return (performance.now() - t0) / 20;
        }}"""
    )
    print(f"\n262,144-tile grid: {ms:.1f} ms per scrolled frame in the page")
    ARTIFACTS.mkdir(exist_ok=True)
    assert not nb.errors, nb.errors
