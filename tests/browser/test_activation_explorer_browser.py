"""ActivationExplorer and a FilterGrid sharing one Selection, in JupyterLab + headless Chromium."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import DOCS

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

    # maps and input image: the same pixels as Python
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, "ex.maps_image()", "m0.npy"))
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
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, "ex.maps_image()", "m1.npy"))

    # layer dropdown: ReLU after the second conv (64 maps of 11 x 11)
    page.select_option(f"{EX} select.cnnw-layer", "features.4")
    _wait_attr(nb, EX, "mapsLayer", "features.4")
    assert nb.kernel_json("[ex.layer, sel.layer, grid.layer]") == ["features.4", "features.4", "features.3"]
    maps = _np(nb, "ex.maps_image()", "m2.npy")
    _same(nb, f"{EX} canvas.cnnw-maps", maps)

    # click map 37: the channel is selected in Python, in the Selection and in the FilterGrid
    channel = 37
    meta = nb.kernel_json("ex._maps_meta")
    order = nb.kernel_json("[int(i) for i in _np.frombuffer(ex._order, _np.int32)]")
    cell = order.index(channel)
    cw, ch = meta["w"] * meta["zoom"] + 1, meta["h"] * meta["zoom"] + 1
    box = page.locator(f"{EX} canvas.cnnw-maps").bounding_box()
    page.mouse.move(box["x"] + (cell % meta["columns"]) * cw + cw // 2, box["y"] + (cell // meta["columns"]) * ch + ch // 2)
    page.wait_for_function(f"() => document.querySelector('.cnnw-tip') && [...document.querySelectorAll('{EX} .cnnw-tip')].some(t => t.textContent.startsWith('channel {channel} '))", timeout=5_000)
    page.mouse.click(box["x"] + (cell % meta["columns"]) * cw + cw // 2, box["y"] + (cell // meta["columns"]) * ch + ch // 2)
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
    recon = _np(nb, "_np.frombuffer(ex._recon, _np.uint8).reshape(28, 28, 1)", "r.npy")
    assert recon.max() > 0
    _same(nb, f"{EX} canvas.cnnw-recon", _scaled(recon, scale))

    # the reverse link: a click on a FilterGrid tile selects that channel in the explorer
    geo = nb.kernel_json("dict(cols=grid._grid['columns'], th=grid._grid['tile_h'], tw=grid._grid['tile_w'], n_in=grid._grid['in_channels'])")
    tile = 12 * geo["n_in"]  # filter 12, input channel 0
    gcw, gch = geo["tw"] * 4 + 1, geo["th"] * 4 + 1
    gbox = page.locator(f"{GRID} canvas.cnnw-canvas").bounding_box()
    page.mouse.click(gbox["x"] + (tile % geo["cols"]) * gcw + gcw // 2, gbox["y"] + (tile // geo["cols"]) * gch + gch // 2)
    nb.wait_kernel("[grid.channel, sel.channel, ex.channel]", [12, 12, 12])
    _wait_attr(nb, EX, "overlayChannel", "12")

    # dataset examples for the selected channel, with a progress display, from the page
    page.click(f"{EX} button.cnnw-top-button")
    page.wait_for_selector(f"{EX} .cnnw-thumb", timeout=60_000)
    shown = [int(e.get_attribute("data-index")) for e in page.query_selector_all(f"{EX} .cnnw-thumb")]
    expected = nb.kernel_json("[int(i) for i in ex.top_images('features.4', 12, k=9)]")
    assert shown == expected
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
    DOCS.mkdir(exist_ok=True)
    page.locator(EX).screenshot(path=str(DOCS / "activation_explorer.png"))
    assert nb.kernel_json("ex.last_error") is None
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
    _same(nb, f"{EX} canvas.cnnw-maps", _np(nb, "ex.maps_image()", "s.npy"))
    done, dropped = nb.kernel_json("[ex._worker.done, ex._worker.dropped]")
    print(f"\nslider: {done} updates computed, {dropped} superseded requests dropped")
    assert not nb.errors, nb.errors
