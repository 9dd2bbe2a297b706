"""ActivationExplorer and a FilterGrid sharing one Selection, in JupyterLab + headless Chromium."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import save_screenshot

pytestmark = pytest.mark.browser

EX = ".cnnw-activation-explorer"
GRID = ".cnnw-filter-grid"


def _np(nb, expr: str, name: str) -> np.ndarray:
    path = nb.lab["root"] / name
    nb.kernel(f"import numpy as _np; _np.save({str(path)!r}, {expr})")
    return np.load(path)


def _same(nb, selector: str, expected: np.ndarray, *, x0: int = 0, y0: int = 0) -> None:
    px = nb.canvas_pixels(selector)
    h, w = px.shape[:2]
    exp = expected[y0 : y0 + h, x0 : x0 + w]
    assert exp.shape[:2] == (h, w), (selector, exp.shape, px.shape)
    diff = np.abs(px[..., :3].astype(int) - exp.astype(int))
    assert diff.max() == 0, f"{selector}: {(diff > 0).any(-1).sum()} of {h * w} pixels differ from Python"


def _scaled(img: np.ndarray, s: int) -> np.ndarray:
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    return img.repeat(s, axis=0).repeat(s, axis=1)


def _maps_expr(nb, who: str = "ex", sel: str = EX) -> str:
    """Python expression of the maps grid as the page draws it: ``maps_image`` with the gap
    colour of the page's theme (the view's ``data-background``)."""
    bg = nb.page.evaluate("(s) => document.querySelector(s).dataset.background", sel)
    assert bg and bg.count(",") == 2, bg
    return f"{who}.maps_image(background=({bg}))"


def _maps_geometry(nb, who: str = "ex") -> tuple[dict, list[int]]:
    """(the maps' layout: columns, zoom, h, w), and the channel of each tile."""
    geo = nb.kernel_json(f"dict({who}._maps_info, h={who}._maps.shape[1], w={who}._maps.shape[2])")
    return geo, nb.kernel_json(f"{who}._order.tolist()")


def _tile_centre(page, canvas_sel: str, geo: dict, cell: int) -> tuple[float, float]:
    cw, ch = geo["w"] * geo["zoom"] + 1, geo["h"] * geo["zoom"] + 1
    box = page.locator(canvas_sel).first.bounding_box()
    return box["x"] + (cell % geo["columns"]) * cw + cw // 2, box["y"] + (cell // geo["columns"]) * ch + ch // 2


def _wait_attr(nb, sel: str, attr: str, value: str, timeout=30_000):
    nb.page.wait_for_function(
        "([s, a, v]) => document.querySelector(s)?.dataset[a] === v", arg=[sel, attr, value], timeout=timeout
    )


def test_explorer_linked_with_filter_grid(open_notebook):
    nb = open_notebook(
        "explorer.ipynb",
        [
            "import cnnwidgets, ipywidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "sel = cnnwidgets.Selection()\n"
            "ex = cnnwidgets.ActivationExplorer(demo.model, demo.images, demo.labels, demo.classes,\n"
            "    layer='features.3', selection=sel, mean=demo.mean, std=demo.std)\n"
            "grid = cnnwidgets.FilterGrid(demo.model, 'features.3', zoom=4, selection=sel, height=300)\n"
            "ipywidgets.VBox([ex, grid])",
        ],
        viewport=(1400, 1400),
    )
    page = nb.page
    page.wait_for_selector(f"{EX} canvas.cnnw-maps", timeout=60_000)
    _wait_attr(nb, EX, "mapsIndex", "0")
    page.wait_for_function(f"() => Number(document.querySelector('{EX}').dataset.frame || 0) > 0", timeout=30_000)
    page.wait_for_function(f"() => Number(document.querySelector('{GRID}').dataset.frame || 0) > 0", timeout=30_000)

    # maps and input image: the same pixels as Python (gaps in the theme's colour)
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, _maps_expr(nb), "m0.npy"))
    img0 = _np(nb, "ex.display_image(0)", "i0.npy")
    scale = 168 // 28
    _same(nb, f"{EX} canvas.cnnw-input", _scaled(img0, scale))
    caption = page.inner_text(f"{EX} .cnnw-input-caption")
    label, pred = nb.kernel_json("[demo.classes[int(demo.labels[0])], demo.classes[ex.predict(0)[0]]]")
    assert f"label {label}" in caption and f"predicted {pred}" in caption

    # the next image: Python, the Selection and the page move together
    page.click(f"{EX} button.cnnw-next")
    _wait_attr(nb, EX, "mapsIndex", "1")
    assert nb.kernel_json("[ex.index, sel.index]") == [1, 1]
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, _maps_expr(nb), "m1.npy"))

    # layer dropdown: ReLU after the second conv (64 maps of 11 x 11)
    page.select_option(f"{EX} select.cnnw-layer", "features.4")
    _wait_attr(nb, EX, "mapsLayer", "features.4")
    assert nb.kernel_json("[ex.layer, sel.layer, grid.layer]") == ["features.4", "features.4", "features.3"]
    maps = _np(nb, _maps_expr(nb), "m2.npy")
    _same(nb, f"{EX} canvas.cnnw-maps", maps)

    # click map 37: the channel is selected in Python, in the Selection and in the FilterGrid
    channel = 37
    geo, order = _maps_geometry(nb)
    cell = order.index(channel)
    x, y = _tile_centre(page, f"{EX} canvas.cnnw-maps", geo, cell)
    page.mouse.move(x, y)
    page.wait_for_function(f"() => document.querySelector('.cnnw-tip') && [...document.querySelectorAll('{EX} .cnnw-tip')].some(t => t.textContent.startsWith('channel {channel} '))", timeout=5_000)
    page.mouse.click(x, y)
    nb.wait_kernel("[ex.channel, sel.channel, grid.channel]", [channel] * 3)
    page.wait_for_function(
        f"() => document.querySelector('{GRID} .cnnw-selected').textContent.includes('selected filter {channel}')",
        timeout=10_000,
    )
    _wait_attr(nb, EX, "overlayChannel", str(channel))
    _same(nb, f"{EX} canvas.cnnw-overlay-view", _scaled(_np(nb, "ex.overlay_image()", "o1.npy"), scale))

    # the opacity slider redraws the overlay with the new blend
    before = int(page.get_attribute(EX, "data-overlay-frame"))
    page.evaluate(
        f"() => {{ const s = document.querySelector('{EX} input.cnnw-opacity'); s.value = '0.25';"
        " s.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    nb.wait_kernel("ex.opacity", 0.25)
    page.wait_for_function(
        f"(n) => Number(document.querySelector('{EX}').dataset.overlayFrame) > n", arg=before, timeout=10_000
    )
    _same(nb, f"{EX} canvas.cnnw-overlay-view", _scaled(_np(nb, "ex.overlay_image()", "o2.npy"), scale))

    # the deconvnet projection of the selected map is drawn beside the input
    nb.kernel("ex.wait()")
    page.wait_for_function(
        f"() => document.querySelector('{EX} .cnnw-recon-caption').textContent.includes('channel {channel} of features.4')",
        timeout=20_000,
    )
    recon = _np(nb, "ex._recon", "r.npy")
    assert recon.shape == (28, 28, 1)
    assert recon.max() > 0
    _same(nb, f"{EX} canvas.cnnw-recon", _scaled(recon, scale))

    # the reverse link: a click on a FilterGrid tile selects that channel in the explorer
    geo = nb.kernel_json("dict(cols=grid._grid['columns'], th=grid._grid['tile_h'], tw=grid._grid['tile_w'], n_in=grid._grid['in_channels'])")
    tile = 12 * geo["n_in"]  # filter 12, input channel 0
    gcw, gch = geo["tw"] * 4 + 1, geo["th"] * 4 + 1
    gx, gy = (tile % geo["cols"]) * gcw + gcw // 2, (tile // geo["cols"]) * gch + gch // 2
    # the grid may have scrolled to the selected filter: bring the tile into view, then click
    # it where the grid draws it (its canvas covers the visible part, from data-x0/data-y0)
    page.evaluate(f"(y) => {{ document.querySelector('{GRID} .cnnw-scroll').scrollTop = Math.max(0, y - 40); }}", gy)
    page.wait_for_timeout(200)
    x0, y0 = (int(page.get_attribute(GRID, a) or 0) for a in ("data-x0", "data-y0"))
    gbox = page.locator(f"{GRID} canvas.cnnw-canvas").bounding_box()
    page.mouse.click(gbox["x"] + gx - x0, gbox["y"] + gy - y0)
    nb.wait_kernel("[grid.channel, sel.channel, ex.channel]", [12, 12, 12])
    _wait_attr(nb, EX, "overlayChannel", "12")
    layer = nb.kernel_json("ex.layer")  # the explorer follows the grid's layer, or keeps one with the same channels
    assert layer in ("features.3", "features.4")

    # dataset examples for the selected channel, with a progress display, from the page
    page.click(f"{EX} button.cnnw-top-button")
    page.wait_for_selector(f"{EX} .cnnw-top-item", timeout=60_000)
    shown = [int(e.get_attribute("data-index")) for e in page.query_selector_all(f"{EX} .cnnw-top-item")]
    expected = nb.kernel_json(f"[int(i) for i in ex.top_images({layer!r}, 12, k=9)]")
    assert shown == expected
    top_heading = f"top 9 images for channel 12 of {layer} (by max activation)"
    assert page.inner_text(f"{EX} .cnnw-top-section > legend") == top_heading
    # clicking a thumbnail opens that image
    page.click(f"{EX} .cnnw-thumb[data-index='{shown[0]}']")
    _wait_attr(nb, EX, "mapsIndex", str(shown[0]))
    assert nb.kernel_json("sel.index") == shown[0]

    # batch view: the strongest map of 12 images from the current one, projected to pixels
    page.click(f"{EX} button.cnnw-batch-button")
    page.wait_for_function(f"() => document.querySelectorAll('{EX} .cnnw-batch-item').length === 12", timeout=60_000)
    items = page.query_selector_all(f"{EX} .cnnw-batch-item")
    got = [[int(e.get_attribute("data-index")), int(e.get_attribute("data-channel"))] for e in items]
    want = nb.kernel_json(
        f"[[i, int(c)] for i, c in zip(range({shown[0]}, {shown[0]} + 12), ex.reconstruct_batch(range({shown[0]}, {shown[0]} + 12))[1])]"
    )
    assert got == want
    assert page.inner_text(f"{EX} .cnnw-batch-section > legend").startswith(f"batch view: the strongest map of {layer}")
    # the top images keep their heading, and no status line about the batch sits above them
    assert page.inner_text(f"{EX} .cnnw-top-section > legend") == top_heading
    assert len(page.query_selector_all(f"{EX} .cnnw-top-item")) == 9
    nb.wait_kernel("ex.status", "")
    page.wait_for_function(f"() => document.querySelector('{EX} .cnnw-status').textContent === ''", timeout=5_000)
    save_screenshot(page, EX, "activation_explorer")

    # another layer: both panels are cleared and say why (no picture of the old layer stays)
    page.select_option(f"{EX} select.cnnw-layer", "features.6")
    _wait_attr(nb, EX, "mapsLayer", "features.6")
    page.wait_for_function(f"() => document.querySelectorAll('{EX} .cnnw-top-item, {EX} .cnnw-batch-item').length === 0",
                           timeout=10_000)
    top_note = page.inner_text(f"{EX} .cnnw-top-note")
    assert f"channel 12 of {layer!r}" in top_note and "'features.6'" in top_note, top_note
    assert repr(layer) in page.inner_text(f"{EX} .cnnw-batch-note")

    # a shared index this view does not hold: the view says so, and keeps its picture
    index = nb.kernel_json("ex.index")
    nb.kernel("sel.index = 5000")
    page.wait_for_selector(f"{EX} .cnnw-selection-note:not([hidden])", timeout=10_000)
    note = page.inner_text(f"{EX} .cnnw-selection-note")
    assert note == nb.kernel_json("ex.selection_note") and "image 5000" in note and f"still shows image {index}" in note
    assert nb.kernel_json("ex.index") == index
    nb.kernel("sel.index = 3")
    _wait_attr(nb, EX, "mapsIndex", "3")
    page.wait_for_selector(f"{EX} .cnnw-selection-note", state="hidden", timeout=10_000)
    assert nb.kernel_json("ex.last_error") is None
    assert not nb.errors, nb.errors


UI_CELLS = [
    "import cnnwidgets, ipywidgets\n"
    "demo = cnnwidgets.demo.mnist('val')\n"
    "ex = cnnwidgets.ActivationExplorer(demo.model, demo.images[:500], demo.labels[:500], demo.classes,\n"
    "    layer='features.3', mean=demo.mean, std=demo.std)\n"
    "ex",
    "ex2 = cnnwidgets.ActivationExplorer(demo.model, demo.images[:50], demo.labels[:50], demo.classes,\n"
    "    layer='features.0', mean=demo.mean, std=demo.std)\n"
    "sv = cnnwidgets.SaliencyViewer(demo.model, demo.images[:50], demo.labels[:50], demo.classes,\n"
    "    mean=demo.mean, std=demo.std)\n"
    "ipywidgets.HBox([ex2, sv])",
]
PAIR = ".widget-hbox .cnnw-activation-explorer"


def _bar(page, sel: str) -> dict:
    return page.evaluate(
        """(s) => { const b = document.querySelector(s);
          return { hidden: b.hidden, min: Number(b.dataset.min), max: Number(b.dataset.max), channel: b.dataset.channel ?? null,
                   tmin: b.querySelector('.cnnw-tick-min')?.textContent, tmax: b.querySelector('.cnnw-tick-max')?.textContent,
                   vmin: Number(b.querySelector('.cnnw-tick-min')?.dataset.value), vmax: Number(b.querySelector('.cnnw-tick-max')?.dataset.value),
                   title: b.querySelector('.cnnw-colorbar-title').textContent }; }""",
        sel,
    )


def _same_scale(page, nb, sel: str, key: str) -> dict:
    """The colorbar ``sel`` shows exactly Python's ``color_scales[key]`` (min, max, label)."""
    want = nb.kernel_json(f"ex.color_scales[{key!r}]")
    got = _bar(page, sel)
    assert not got["hidden"], sel
    assert (got["min"], got["max"]) == (want["min"], want["max"]), (sel, got, want)
    assert (got["vmin"], got["vmax"]) == (want["min"], want["max"]), (sel, got, want)
    assert got["tmin"] and got["tmax"] and got["title"].startswith(want["label"]), got
    return got


def test_explorer_colour_scales_keyboard_errors_theme_and_layout(open_notebook):
    nb = open_notebook("explorer_ui.ipynb", UI_CELLS, viewport=(1400, 1600))
    page = nb.page
    page.wait_for_selector(f"{EX} canvas.cnnw-maps", timeout=60_000)
    _wait_attr(nb, EX, "mapsIndex", "0")
    page.wait_for_function(f"() => Number(document.querySelector('{EX}').dataset.frame || 0) > 0", timeout=30_000)
    page.wait_for_selector(f"{PAIR} canvas.cnnw-maps", timeout=60_000)
    nb.kernel("ex.wait()")

    # the layer picker says each layer's type and output shape; every control has a tooltip
    options = page.eval_on_selector_all(f"{EX} select.cnnw-layer option", "os => os.map(o => o.textContent)")
    assert "features.3 · Conv2d 64x11x11" in options and "features.5 · MaxPool2d 64x5x5" in options
    untitled = page.evaluate(
        f"""() => [...document.querySelector('{EX}').querySelectorAll('select, input, button')]
              .filter(c => !(c.title || c.closest('[title]'))).map(c => c.className)""")
    assert untitled == []
    needs = page.eval_on_selector_all(f"{EX} [data-needs-kernel]", "ns => ns.map(n => n.textContent + n.className)")
    assert any("layer" in n for n in needs) and any("cnnw-dataset-toolbar" in n for n in needs)

    # colour scales: the maps' (shared) and the projection's labels are Python's exact min and max
    _same_scale(page, nb, f"{EX} .cnnw-maps-colorbar", "maps")
    page.wait_for_function(f"() => !document.querySelector('{EX} .cnnw-recon-colorbar').hidden", timeout=20_000)
    _same_scale(page, nb, f"{EX} .cnnw-recon-colorbar", "projection")
    assert _bar(page, f"{EX} .cnnw-overlay-colorbar")["hidden"]  # no map selected: no overlay

    # keyboard on the maps: arrows move the cursor, Enter selects that channel in Python
    geo, order = _maps_geometry(nb)
    page.focus(f"{EX} canvas.cnnw-maps")
    for key in ("ArrowRight", "ArrowRight", "ArrowRight", "ArrowDown"):
        page.keyboard.press(key)
    cursor = 3 + geo["columns"]
    _wait_attr(nb, EX, "cursorTile", str(cursor))
    page.keyboard.press("Enter")
    nb.wait_kernel("ex.channel", order[cursor])
    _wait_attr(nb, EX, "overlayChannel", str(order[cursor]))
    _same_scale(page, nb, f"{EX} .cnnw-overlay-colorbar", "overlay")

    # sorted maps, each its own range: channel numbers on the tiles, the scale of the selected map
    page.focus(f"{EX} select.cnnw-sort")  # as a user does: the maps' keyboard cursor no longer points
    page.select_option(f"{EX} select.cnnw-sort", "max")
    _wait_attr(nb, EX, "mapsSort", "max")
    page.select_option(f"{EX} select.cnnw-scale", "per_map")
    nb.wait_kernel("ex._maps_info['scale']", "per_map")
    page.wait_for_function(f"() => document.querySelector('{EX} .cnnw-maps-colorbar').dataset.channel === '{order[cursor]}'",
                           timeout=10_000)
    got = _same_scale(page, nb, f"{EX} .cnnw-maps-colorbar", "maps")
    assert "per map" in got["title"]
    _same_scale(page, nb, f"{EX} .cnnw-overlay-colorbar", "overlay")
    nb.kernel("ex.wait()")
    page.wait_for_timeout(300)
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, _maps_expr(nb), "sorted.npy"))  # labels are not in the pixels
    geo, order = _maps_geometry(nb)
    assert int(page.get_attribute(EX, "data-channel-labels")) >= geo["columns"]  # the first rows, at least
    label = nb.canvas_pixels(f"{EX} canvas.cnnw-overlay")[2:10, 2:10]
    assert label[..., 3].max() > 0  # the first tile's label is drawn, without hovering
    caption = page.inner_text(f"{EX} .cnnw-maps-order")
    assert caption.startswith("sorted by max activation, strongest first: channels " + ", ".join(map(str, order[:16])))
    # hovering a map shows that map's range
    x, y = _tile_centre(page, f"{EX} canvas.cnnw-maps", geo, 5)
    page.mouse.move(x, y)
    page.wait_for_function(f"() => document.querySelector('{EX} .cnnw-maps-colorbar').dataset.channel === '{order[5]}'",
                           timeout=5_000)
    lo, hi = nb.kernel_json(f"[float(ex._map_stats[{order[5]}, 2]), float(ex._map_stats[{order[5]}, 1])]")
    hovered = _bar(page, f"{EX} .cnnw-maps-colorbar")
    assert (hovered["min"], hovered["max"]) == (lo, hi)
    page.mouse.move(5, 5)

    # the image stepper: ArrowRight on the focused slider, a typed number with Enter
    page.focus(f"{EX} input.cnnw-index")
    page.keyboard.press("ArrowRight")
    nb.wait_kernel("ex.index", 1)
    _wait_attr(nb, EX, "mapsIndex", "1")
    page.fill(f"{EX} input.cnnw-index-number", "7")
    page.press(f"{EX} input.cnnw-index-number", "Enter")
    nb.wait_kernel("ex.index", 7)
    _wait_attr(nb, EX, "mapsIndex", "7")

    # rejected values show their message next to their control: an image one past the end ...
    page.fill(f"{EX} input.cnnw-index-number", "500")
    page.press(f"{EX} input.cnnw-index-number", "Enter")
    err = page.locator(f"{EX} .cnnw-image-field > .cnnw-control-error").first
    err.wait_for(state="visible", timeout=5_000)
    assert "0..499" in err.inner_text() and '"500"' in err.inner_text()
    assert nb.kernel_json("ex.index") == 7
    # ... and a layer the kernel refuses (the page offers one the model does not have)
    page.evaluate(f"""() => {{ const s = document.querySelector('{EX} select.cnnw-layer');
        s.append(new Option('bogus', 'bogus')); s.value = 'bogus'; s.dispatchEvent(new Event('change')); }}""")
    layer_err = page.locator(f"{EX} select.cnnw-layer").first.locator("xpath=..").locator(".cnnw-control-error")
    layer_err.wait_for(state="visible", timeout=10_000)
    assert "'bogus'" in layer_err.inner_text() and "'features.7'" in layer_err.inner_text()
    assert nb.kernel_json("ex.layer") == "features.3"
    page.select_option(f"{EX} select.cnnw-layer", "features.4")  # the next valid change clears it
    _wait_attr(nb, EX, "mapsLayer", "features.4")
    layer_err.wait_for(state="hidden", timeout=10_000)

    # a failed projection shows in the view, in the error colour, until one succeeds
    nb.kernel("_real = ex._reconstruct\n"
              "def _broken(*a):\n    raise RuntimeError('no deconvnet rule here')\n"
              "ex._reconstruct = _broken")
    page.focus(f"{EX} canvas.cnnw-maps")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    view_err = page.locator(f"{EX} .cnnw-view-error").first
    view_err.wait_for(state="visible", timeout=10_000)
    assert view_err.inner_text() == "projection failed: RuntimeError: no deconvnet rule here"
    nb.kernel("ex._reconstruct = _real; ex.channel = (ex.channel + 1) % 64; ex.wait()")
    view_err.wait_for(state="hidden", timeout=10_000)

    # a wrong prediction stays marked (and readable, below, in both themes)
    wrong = nb.kernel_json("next(i for i in range(500) if ex.predict(i)[0] != int(demo.labels[i]))")
    page.fill(f"{EX} input.cnnw-index-number", str(wrong))
    page.press(f"{EX} input.cnnw-index-number", "Enter")
    page.wait_for_selector(f"{EX} .cnnw-input-caption .cnnw-wrong", timeout=20_000)
    nb.kernel("ex.wait()")

    # light and dark: every text readable, no white canvas on dark, gaps in the theme's colour
    report = nb.contrast_report(EX)
    assert report["checked"] > 20 and report["failures"] == [] and report["white_canvases"] == [], report
    light_bg = page.get_attribute(EX, "data-background")
    nb.set_theme("JupyterLab Dark")
    page.wait_for_function(f"(bg) => document.querySelector('{EX}').dataset.background !== bg", arg=light_bg, timeout=10_000)
    page.wait_for_timeout(300)
    report = nb.contrast_report(EX)
    assert report["checked"] > 20 and report["failures"] == [] and report["white_canvases"] == [], report
    assert page.is_visible(f"{EX} .cnnw-input-caption .cnnw-wrong")
    dark_bg = [int(v) for v in page.get_attribute(EX, "data-background").split(",")]
    assert sum(dark_bg) < 3 * 100, dark_bg
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, _maps_expr(nb), "dark.npy"))
    save_screenshot(page, EX, "activation_explorer_dark")
    nb.set_theme("JupyterLab Light")

    # the view fits its cell at 1400 px and at 800 px, alone and beside a SaliencyViewer
    assert nb.overflow_report(EX) == []
    assert nb.overflow_report(PAIR) == []
    page.set_viewport_size({"width": 800, "height": 1600})
    page.wait_for_timeout(600)
    assert nb.overflow_report(EX) == []
    assert nb.overflow_report(PAIR) == []
    fit = page.evaluate(
        f"""() => {{ const v = document.querySelector('{PAIR}'), box = v.closest('.widget-hbox');
            const r = v.getBoundingClientRect(), b = box.getBoundingClientRect();
            return {{ right: r.right, limit: b.right, width: r.width }}; }}""")
    assert fit["right"] <= fit["limit"] + 1 and fit["width"] < 800, fit
    assert not nb.errors, nb.errors


def test_explorer_rapid_slider_keeps_only_the_latest(open_notebook):
    nb = open_notebook(
        "explorer_slider.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "ex = cnnwidgets.ActivationExplorer(demo.model, demo.images, demo.labels, demo.classes,\n"
            "    layer='features.0', mean=demo.mean, std=demo.std)\n"
            "ex",
        ],
    )
    page = nb.page
    _wait_attr(nb, EX, "mapsIndex", "0", timeout=60_000)
    # 60 slider moves as fast as the page can send them; the last one must win
    page.evaluate(
        f"""async () => {{
          const s = document.querySelector('{EX} input.cnnw-index');
          for (let i = 1; i <= 60; i++) {{
            s.value = String(i * 7); s.dispatchEvent(new Event('input', {{bubbles: true}}));
            if (i % 3 === 0) await new Promise(r => requestAnimationFrame(r));
          }}
        }}"""
    )
    _wait_attr(nb, EX, "mapsIndex", str(60 * 7))
    nb.kernel("ex.wait()")
    assert nb.kernel_json("ex.index") == 420
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, _maps_expr(nb), "s.npy"))
    done, dropped = nb.kernel_json("[ex._worker.done, ex._worker.dropped]")
    print(f"\nslider: {done} updates computed, {dropped} superseded requests dropped")
    assert not nb.errors, nb.errors
