"""FilterGrid in a real JupyterLab in headless Chromium: pixels, hover, click round trip, layer
switch, colour scale, row/column indices, themes, layout at 800 and 1,400 px, keyboard and the
message of a refused value."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import save_screenshot

pytestmark = pytest.mark.browser

GRID = ".cnnw-filter-grid"
CANVAS = ".cnnw-filter-grid canvas.cnnw-canvas"
SCROLL = ".cnnw-filter-grid .cnnw-scroll"
BAR = ".cnnw-filter-grid .cnnw-fg-colorbar"


def _contrast(nb, selector: str) -> dict:
    return nb.contrast_report(selector)


def _frame(nb) -> int:
    return int(nb.page.get_attribute(GRID, "data-frame") or 0)


def _wait_frame_after(nb, before: int) -> None:
    nb.page.wait_for_function(
        "([sel, n]) => Number(document.querySelector(sel)?.dataset.frame || 0) > n",
        arg=[GRID, before],
        timeout=30_000,
    )


def _background(nb) -> tuple[int, int, int]:
    """The colour the page draws between tiles (the theme's sunken background)."""
    r, g, b = (int(v) for v in nb.page.get_attribute(GRID, "data-background").split(","))
    return r, g, b


def _python_image(nb, tmp_name: str) -> np.ndarray:
    """The grid as Python renders it, with the page's gap colour."""
    path = nb.lab["root"] / tmp_name
    nb.kernel(f"import numpy as _np; _np.save({str(path)!r}, grid.to_image(background={_background(nb)}))")
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


def _wait_drawn(nb) -> None:
    nb.page.wait_for_selector(CANVAS, timeout=60_000)
    nb.page.wait_for_function(f"() => Number(document.querySelector('{GRID}').dataset.frame || 0) > 0", timeout=30_000)


def _tick3(v: float) -> float:
    """A tick label's value: 3 significant digits (lib/colorbar.js formatTick)."""
    return float(f"{v:.3g}")


def _assert_colorbar_is_python_scale(nb) -> dict:
    """The colorbar's ends (exact data-min/data-max, tick values and labels) are the Python
    side's color_range; the zero tick is there exactly for a diverging map."""
    lo, hi = nb.kernel_json("list(grid.color_range)")
    nb.page.wait_for_function(
        "([sel, lo]) => { const b = document.querySelector(sel); return b && !b.hidden && Number(b.dataset.min) === lo; }",
        arg=[BAR, lo], timeout=10_000)
    bar = nb.page.evaluate(
        """(sel) => { const b = document.querySelector(sel);
             const tick = (k) => { const t = b.querySelector('.cnnw-tick-' + k); return t ? [t.textContent, Number(t.dataset.value)] : null; };
             return { min: Number(b.dataset.min), max: Number(b.dataset.max), title: b.querySelector('.cnnw-colorbar-title').textContent,
                      tmin: tick('min'), tmax: tick('max'), tzero: tick('zero') }; }""",
        BAR,
    )
    assert bar["min"] == lo and bar["max"] == hi, (bar, lo, hi)
    assert bar["tmin"][1] == lo and bar["tmax"][1] == hi
    assert float(bar["tmin"][0]) == _tick3(lo) and float(bar["tmax"][0]) == _tick3(hi), bar
    assert bar["title"].startswith("weight")
    diverging = nb.kernel_json("grid._grid['symmetric']")
    assert (bar["tzero"] is not None) == (diverging and lo < 0 < hi), bar
    if diverging:
        assert lo == -hi and bar["tzero"] == ["0", 0]
    return bar


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
    _wait_drawn(nb)
    nb.set_theme("JupyterLab Light")  # the theme is a user setting: an earlier run may have left another
    assert nb.kernel_json("grid.n_tiles") == 64 * 32

    # 1. the canvas shows exactly the pixels Python renders (gaps in the theme's colour)
    image = _python_image(nb, "fg0.npy")
    assert _assert_canvas_matches(nb, image) == (0, 0)
    assert _background(nb) != (255, 255, 255)  # the light theme's sunken background, not white
    save_screenshot(page, GRID, "filter_grid")

    # the colour scale is the one of the picture: the layer's min and max weight
    w = nb.kernel_json("[float(grid.tiles.stats[:, 0].min()), float(grid.tiles.stats[:, 1].max())]")
    bar = _assert_colorbar_is_python_scale(nb)
    assert [bar["min"], bar["max"]] == w
    # the layer picker says what each layer is
    options = page.eval_on_selector_all(f"{GRID} select.cnnw-layer option", "os => os.map(o => o.textContent)")
    assert options == ["features.0 · Conv2d 1→32 · 3×3", "features.3 · Conv2d 32→64 · 3×3",
                       "features.6 · Conv2d 64→128 · 3×3"]

    # 2. scrolling draws the part scrolled to (the canvas only covers the viewport); the row
    # indices (filters) follow
    before = _frame(nb)
    page.evaluate(f"() => {{ document.querySelector('{SCROLL}').scrollTop = 150; }}")
    _wait_frame_after(nb, before)
    page.wait_for_function(f"() => document.querySelector('{GRID}').dataset.y0 === '150'", timeout=10_000)
    x0, y0 = _assert_canvas_matches(nb, image)
    assert (x0, y0) == (0, 150)
    # rows are filters (one per row, 32 input channels side by side), cells 3 * 8 + 1 = 25 px
    page.wait_for_function(
        f"() => !document.querySelector('{GRID} .cnnw-fg-rows span[data-index=\"0\"]')", timeout=5_000)
    rows = page.eval_on_selector_all(f"{GRID} .cnnw-fg-rows span", "s => s.map(e => [Number(e.dataset.index), e.textContent])")
    assert rows and all(str(r) == text for r, text in rows), rows
    assert rows[0][0] == 6  # 150 / 25: the first row in view
    cols = page.eval_on_selector_all(f"{GRID} .cnnw-fg-cols span", "s => s.map(e => [Number(e.dataset.index), e.textContent])")
    assert [c for c, _ in cols][:3] == [0, 2, 4] and all(str(c) == text for c, text in cols), cols  # every 2nd: 25 px < 26
    assert "rows: filters · columns: input channels" in page.inner_text(f"{GRID} .cnnw-fg-axes-note")

    # 3. hover names the kernel; a click selects its filter on the Python side
    out_c, in_c = 41, 7
    tile = out_c * 32 + in_c
    geo = nb.kernel_json("dict(cols=grid._grid['columns'], th=grid._grid['tile_h'], tw=grid._grid['tile_w'])")
    cell_w, cell_h = geo["tw"] * 8 + 1, geo["th"] * 8 + 1
    gx = (tile % geo["cols"]) * cell_w + cell_w // 2
    gy = (tile // geo["cols"]) * cell_h + cell_h // 2
    page.evaluate(f"(y) => {{ document.querySelector('{SCROLL}').scrollTop = y; }}", max(0, gy - 100))
    page.wait_for_function(
        f"(y) => Number(document.querySelector('{GRID}').dataset.y0) === y", arg=max(0, gy - 100), timeout=10_000
    )
    box = page.locator(CANVAS).bounding_box()
    cx = box["x"] + gx - int(page.get_attribute(GRID, "data-x0"))
    cy = box["y"] + gy - int(page.get_attribute(GRID, "data-y0"))
    page.mouse.move(cx, cy)
    page.wait_for_function(f"() => document.querySelector('{GRID}').dataset.hoverTile === '{tile}'", timeout=5_000)
    tip = page.inner_text(f"{GRID} .cnnw-tip")
    assert f"filter {out_c}, input channel {in_c}" in tip
    lo, hi = nb.kernel_json(f"[float(v) for v in grid.tiles.stats[{tile}]]")
    assert f"{lo:.4f}" in tip and f"{hi:.4f}" in tip
    scroll_before = page.evaluate(f"() => document.querySelector('{SCROLL}').scrollTop")
    page.mouse.click(cx, cy)
    nb.wait_kernel("grid.channel", out_c)
    assert f"selected filter {out_c}" in page.inner_text(f"{GRID} .cnnw-selected")
    page.wait_for_timeout(100)
    # a click on a visible tile does not scroll the grid
    assert page.evaluate(f"() => document.querySelector('{SCROLL}').scrollTop") == scroll_before

    # 4. the layer dropdown redraws with the new layer's weights, and scrolls to the selected
    # filter (41 of 128: row 41, 1,025 px down)
    page.evaluate(f"() => {{ document.querySelector('{SCROLL}').scrollTop = 0; }}")
    page.wait_for_function(f"() => document.querySelector('{GRID}').dataset.y0 === '0'", timeout=10_000)
    before = _frame(nb)
    page.select_option(f"{GRID} select.cnnw-layer", "features.6")
    nb.wait_kernel("grid.layer", "features.6")
    nb.wait_kernel("grid.n_tiles", 128 * 64)
    _wait_frame_after(nb, before)
    page.wait_for_function(
        f"() => document.querySelector('{GRID} .cnnw-info').textContent.includes('features.6')", timeout=10_000
    )
    assert nb.kernel_json("grid.channel") == out_c  # 41 < 128 survives the switch
    page.wait_for_function(
        f"""() => {{ const s = document.querySelector('{SCROLL}'); const y = {out_c} * 25;
                   return s.scrollTop <= y && y + 24 <= s.scrollTop + s.clientHeight; }}""", timeout=10_000)
    page.wait_for_function(
        f"() => document.querySelector('{GRID}').dataset.y0 === String(document.querySelector('{SCROLL}').scrollTop)",
        timeout=10_000)
    image6 = _python_image(nb, "fg6.npy")
    _assert_canvas_matches(nb, image6)
    _assert_colorbar_is_python_scale(nb)

    # 5. style controls round trip: diverging colours (zero tick, symmetric ends)
    before = _frame(nb)
    page.select_option(f"{GRID} select.cnnw-cmap", "diverging")
    nb.wait_kernel("grid.cmap", "diverging")
    _wait_frame_after(nb, before)
    page.wait_for_timeout(200)
    _assert_canvas_matches(nb, _python_image(nb, "fg6d.npy"))
    _assert_colorbar_is_python_scale(nb)

    # per-filter scale: the colorbar shows the selected filter's range, and says so
    page.select_option(f"{GRID} select.cnnw-normalize", "filter")
    nb.wait_kernel("grid.normalize", "filter")
    bar = _assert_colorbar_is_python_scale(nb)
    mag = nb.kernel_json(f"float(abs(grid.tiles.stats[{out_c} * 64:{out_c + 1} * 64]).max())")
    assert bar["max"] == mag
    assert f"filter {out_c}" in bar["title"] and "own range" in bar["title"]
    assert not nb.errors, nb.errors


def test_filter_grid_themes_keyboard_errors_and_selection(open_notebook):
    nb = open_notebook(
        "filter_grid_keys.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "sel = cnnwidgets.Selection()\n"
            "grid = cnnwidgets.FilterGrid(demo.model, 'features.3', zoom=8, height=300, selection=sel)\n"
            "grid",
            "sel",
        ],
    )
    page = nb.page
    _wait_drawn(nb)
    page.wait_for_selector(".cnnw-selection .cnnw-selection-line", timeout=30_000)
    nb.set_theme("JupyterLab Light")

    # ---- themes: every text readable, the grid's gaps in the theme's colour, no white canvas
    light_bg = _background(nb)
    report = _contrast(nb, GRID)
    assert report["checked"] > 30 and report["failures"] == [] and report["white_canvases"] == [], report
    assert _contrast(nb, ".cnnw-selection")["failures"] == []
    nb.set_theme("JupyterLab Dark")
    page.wait_for_function(f"(bg) => document.querySelector('{GRID}').dataset.background !== bg",
                           arg=",".join(map(str, light_bg)), timeout=10_000)
    dark_bg = _background(nb)
    assert sum(dark_bg) < 3 * 100, dark_bg  # dark gaps
    report = _contrast(nb, GRID)
    assert report["checked"] > 30 and report["failures"] == [] and report["white_canvases"] == [], report
    assert nb.contrast_report(GRID)["failures"] == []  # conftest's own check agrees
    sel_report = _contrast(nb, ".cnnw-selection")
    assert sel_report["checked"] == 1 and sel_report["failures"] == [], sel_report
    _assert_canvas_matches(nb, _python_image(nb, "dark.npy"))
    save_screenshot(page, GRID, "filter_grid_dark")
    nb.set_theme("JupyterLab Light")
    page.wait_for_function(f"(bg) => document.querySelector('{GRID}').dataset.background === bg",
                           arg=",".join(map(str, light_bg)), timeout=10_000)

    # ---- keyboard: arrows move the cursor, Enter selects its filter; JupyterLab sees none of it
    page.focus(CANVAS)  # focus in a cell's output makes that cell the active one
    cell_index = page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex")
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "ArrowDown"):
        page.keyboard.press(key)
    assert page.get_attribute(GRID, "data-cursor-tile") == str(2 + 2 * 32)
    page.keyboard.press("ArrowLeft")
    assert page.get_attribute(GRID, "data-cursor-tile") == str(1 + 2 * 32)
    page.keyboard.press("Enter")
    nb.wait_kernel("[grid.channel, sel.channel]", [2, 2])
    assert page.evaluate("() => document.activeElement.matches('.cnnw-filter-grid canvas.cnnw-canvas')")
    state = page.evaluate("() => { const nb = window.jupyterapp.shell.currentWidget.content;"
                          " return [nb.activeCellIndex, nb.mode]; }")
    assert state == [cell_index, "command"], state
    # the zoom slider takes the arrow keys
    page.focus(f"{GRID} input.cnnw-zoom")
    page.keyboard.press("ArrowRight")  # JupyterLab would move to the next cell's output
    nb.wait_kernel("grid.zoom", 9)
    page.keyboard.press("ArrowLeft")
    nb.wait_kernel("grid.zoom", 8)
    assert page.evaluate("() => window.jupyterapp.shell.currentWidget.content.activeCellIndex") == cell_index

    # Tab reaches every control of the view, in order
    controls = page.evaluate(
        f"""() => [...document.querySelector('{GRID}').querySelectorAll('select, input, button, [tabindex]')]
              .filter(e => !e.disabled && e.offsetParent !== null).map(e => e.className)""")
    assert controls == ["cnnw-layer", "cnnw-mode", "cnnw-normalize", "cnnw-cmap", "cnnw-zoom", "cnnw-canvas"], controls
    page.focus(f"{GRID} select.cnnw-layer")
    reached = [page.evaluate("() => document.activeElement.className")]
    for _ in controls[1:]:
        page.keyboard.press("Tab")
        reached.append(page.evaluate("() => document.activeElement.className"))
    assert reached == controls
    # every control says what it changes
    titles = page.eval_on_selector_all(f"{GRID} select, {GRID} input", "es => es.map(e => e.title)")
    assert all(t and "\n" not in t for t in titles), titles

    # ---- the channel set from another view scrolls its filter into view (row 60 of 64)
    page.evaluate(f"() => {{ document.querySelector('{SCROLL}').scrollTop = 0; }}")
    nb.kernel("sel.channel = 60")
    nb.wait_kernel("grid.channel", 60)
    page.wait_for_function(
        f"""() => {{ const s = document.querySelector('{SCROLL}'); const y = 60 * 25;
                   return s.scrollTop <= y && y + 24 <= s.scrollTop + s.clientHeight; }}""", timeout=10_000)
    page.wait_for_function(f"() => !!document.querySelector('{GRID} .cnnw-fg-rows span[data-index=\"60\"]')", timeout=5_000)
    assert page.inner_text(f"{GRID} .cnnw-fg-rows span[data-index=\"60\"]") == "60"
    assert "channel 60" in page.inner_text(".cnnw-selection")

    # ---- a value the kernel refuses shows its message next to the control, until a valid change
    page.evaluate(
        f"""() => {{ const s = document.querySelector('{GRID} select.cnnw-layer');
                   s.append(new Option('features.1 (a ReLU)', 'features.1'));
                   s.value = 'features.1'; s.dispatchEvent(new Event('change')); }}""")
    page.wait_for_function(
        f"() => (document.querySelector('{GRID} .cnnw-control-error')?.textContent || '').length > 0", timeout=10_000)
    errors = nb.kernel_json("grid.control_errors")
    assert set(errors) == {"layer"} and "features.1" in errors["layer"]
    shown = page.inner_text(f"{GRID} .cnnw-control-error")
    assert shown == errors["layer"], (shown, errors)
    assert page.is_visible(f"{GRID} .cnnw-control-error")
    assert page.eval_on_selector(f"{GRID} select.cnnw-layer", "s => s.value") == "features.3"  # the kernel's value back
    assert nb.kernel_json("grid.layer") == "features.3"
    color = page.eval_on_selector(f"{GRID} .cnnw-control-error", "e => getComputedStyle(e).color")
    error_color = page.evaluate(
        f"""() => {{ const p = document.createElement('span'); p.style.color = 'var(--cnnw-error-text)';
                   document.querySelector('{GRID}').append(p); const c = getComputedStyle(p).color; p.remove(); return c; }}""")
    assert color == error_color
    assert _contrast(nb, GRID)["failures"] == []
    page.select_option(f"{GRID} select.cnnw-layer", "features.6")
    nb.wait_kernel("grid.layer", "features.6")
    nb.wait_kernel("grid.control_errors", {})
    page.wait_for_function(
        f"() => {{ const e = document.querySelector('{GRID} .cnnw-control-error'); return !e || e.hidden && !e.textContent; }}",
        timeout=10_000)
    assert not nb.errors, nb.errors


def test_filter_grid_layout_800_and_1400(open_notebook):
    nb = open_notebook(
        "filter_grid_layout.ipynb",
        [
            "import torch, ipywidgets, cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "grid = cnnwidgets.FilterGrid(demo.model, 'features.3', zoom=12, height=300)\n"
            "grid",
            "grids = [cnnwidgets.FilterGrid(demo.model, l, zoom=8, height=250) for l in ('features.0', 'features.3', 'features.6')]\n"
            "box = ipywidgets.HBox(grids)\n"
            "box",
            "torch.manual_seed(0)\n"
            "rgb = cnnwidgets.FilterGrid(torch.nn.Sequential(torch.nn.Conv2d(3, 16, 5)), zoom=6)\n"
            "rgb",
        ],
        viewport=(800, 1000),
    )
    page = nb.page
    page.wait_for_function(f"() => document.querySelectorAll('{GRID}').length === 5 && "
                           f"[...document.querySelectorAll('{GRID}')].every(g => Number(g.dataset.frame || 0) > 0)",
                           timeout=60_000)
    nb.set_theme("JupyterLab Light")

    def check_layout(width: int) -> None:
        page.set_viewport_size({"width": width, "height": 1000})
        page.wait_for_timeout(500)
        report = nb.overflow_report(GRID)
        assert report == [], [(r["cls"], r["scroll"], r["client"], r["right"]) for r in report]
        # the three grids of the HBox sit side by side, each inside the box
        boxes = page.evaluate(
            """() => { const hb = document.querySelector('.widget-hbox'); const b = hb.getBoundingClientRect();
                 return { box: [b.left, b.right], grids: [...hb.querySelectorAll('.cnnw-filter-grid')].map(g => {
                   const r = g.getBoundingClientRect(); const s = g.querySelector('.cnnw-scroll').getBoundingClientRect();
                   return [r.left, r.right, s.right]; }) }; }""")
        (left, right), grids = boxes["box"], boxes["grids"]
        assert len(grids) == 3
        for (gl, gr, sr), nxt in zip(grids, grids[1:] + [None]):
            assert left - 1 <= gl and gr <= right + 1 and sr <= gr + 1, boxes
            if nxt:
                assert gr <= nxt[0] + 1, boxes  # no overlap
        assert page.evaluate("() => { const hb = document.querySelector('.widget-hbox'); "
                             "return hb.scrollWidth <= hb.clientWidth + 1; }")

    check_layout(800)
    # at 800 px a 32-column grid at zoom 12 (1,247 px) scrolls inside its own box
    sc = page.evaluate(f"() => {{ const s = document.querySelector('{SCROLL}'); return [s.scrollWidth, s.clientWidth]; }}")
    assert sc[0] > sc[1] + 100, sc
    report = _contrast(nb, GRID)
    assert report["failures"] == [] and report["checked"] > 20
    check_layout(1400)

    # a filter that reads one channel is one tile: rows are numbered by their first filter
    # (6 per row), columns by the offset in the row
    first = page.locator(GRID).nth(1)
    assert first.locator(".cnnw-fg-axes-note").inner_text() == "rows: the first filter in the row · columns: + filters"
    assert first.locator(".cnnw-fg-rows span").all_inner_texts()[:3] == ["0", "6", "12"]
    assert first.locator(".cnnw-fg-cols span").all_inner_texts()[:3] == ["+0", "+2", "+4"]

    # RGB filters: no colour scale (the colours are the input channels), a note says so
    rgb = page.locator(GRID).nth(4)
    assert rgb.locator(".cnnw-fg-colorbar").is_hidden()
    lo, hi = nb.kernel_json("list(rgb.color_range)")
    note = rgb.locator(".cnnw-fg-scale-note").inner_text()
    assert "red, green, blue" in note and f"{lo:.3g}" in note and f"{hi:.3g}" in note, note
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
    page.evaluate(f"() => {{ const s = document.querySelector('{SCROLL}'); s.scrollTop = 1e9; s.scrollLeft = 1e9; }}")
    _wait_frame_after(nb, before)
    x0, y0 = _assert_canvas_matches(nb, image)
    assert y0 > image.shape[0] - 400 and x0 > 0
    # the indices follow: the last rows are the last filters, the last columns the last channels
    page.wait_for_function(f"() => !!document.querySelector('{GRID} .cnnw-fg-rows span[data-index=\"510\"]')", timeout=5_000)
    rows = page.eval_on_selector_all(f"{GRID} .cnnw-fg-rows span", "s => s.map(e => Number(e.textContent))")
    cols = page.eval_on_selector_all(f"{GRID} .cnnw-fg-cols span", "s => s.map(e => Number(e.textContent))")
    assert max(rows) >= 500 and max(cols) >= 490, (rows, cols)
    # draw time of one viewport in the page (reported, not asserted: machines are shared)
    ms = page.evaluate(
        f"""async () => {{
          const s = document.querySelector('{SCROLL}');
          const t0 = performance.now();
          for (let i = 0; i < 20; i++) {{
            s.scrollTop = (i * 997) % 3000;
            await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
          }}
          return (performance.now() - t0) / 20;
        }}"""
    )
    print(f"\n262,144-tile grid: {ms:.1f} ms per scrolled frame in the page")
    assert not nb.errors, nb.errors
