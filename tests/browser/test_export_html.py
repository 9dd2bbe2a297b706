"""Standalone HTML export, opened from disk in headless Chromium with the network off."""

from __future__ import annotations

import numpy as np
import pytest

import cnnwidgets

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def demo():
    return cnnwidgets.demo.mnist("val")


def _open(browser, path):
    ctx = browser.new_context(offline=True, viewport={"width": 1300, "height": 1100})
    requests = []

    def guard(route):
        requests.append(route.request.url)
        if route.request.url.startswith(("file:", "blob:", "data:")):
            route.continue_()
        else:
            route.abort()

    ctx.route("**/*", guard)
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function("() => document.body.dataset.ready === 'true'", timeout=30_000)
    return ctx, page, errors, requests


def _pixels(page, selector):
    d = page.evaluate(
        """(sel) => { const c = document.querySelector(sel);
          return {w: c.width, h: c.height, px: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)}; }""",
        selector,
    )
    return np.asarray(d["px"], np.uint8).reshape(d["h"], d["w"], 4)[..., :3]


def test_filter_grid_and_explorer_export(browser, demo, tmp_path):
    grid = cnnwidgets.FilterGrid(demo.model, "features.3", zoom=6)
    fg = grid.save_html(tmp_path / "filters.html")
    ex = cnnwidgets.ActivationExplorer(demo.model, demo.images, demo.labels, demo.classes, layer="features.3",
                                       mean=demo.mean, std=demo.std)
    exp = ex.save_html(tmp_path / "maps.html", images=[0, 1, 2])
    ex.index = 1
    ex.wait()
    maps1 = ex.maps_image()
    ex.close()

    ctx, page, errors, requests = _open(browser, fg)
    page.wait_for_function("() => Number(document.querySelector('.cnnw-filter-grid').dataset.frame || 0) > 0")
    px = _pixels(page, ".cnnw-filter-grid canvas.cnnw-canvas")
    assert np.array_equal(px, grid.to_image()[: px.shape[0], : px.shape[1]])
    # hover still names the kernel, from the exported statistics
    box = page.locator(".cnnw-filter-grid canvas.cnnw-canvas").bounding_box()
    cols = grid._grid["columns"]
    tile = 3 * 32 + 4
    cell = 3 * 6 + 1
    page.mouse.move(box["x"] + (tile % cols) * cell + 8, box["y"] + (tile // cols) * cell + 8)
    page.wait_for_function(f"() => document.querySelector('.cnnw-filter-grid').dataset.hoverTile === '{tile}'")
    assert "filter 3, input channel 4" in page.inner_text(".cnnw-tip")
    # zoom works in the page alone
    page.evaluate("() => { const z = document.querySelector('.cnnw-filter-grid input.cnnw-zoom'); z.value = '3'; z.dispatchEvent(new Event('input')); }")
    page.wait_for_timeout(200)
    px = _pixels(page, ".cnnw-filter-grid canvas.cnnw-canvas")
    assert np.array_equal(px, grid.to_image(zoom=3)[: px.shape[0], : px.shape[1]])
    assert not errors, errors
    assert all(r.startswith(("file:", "blob:", "data:")) for r in requests), requests
    ctx.close()

    ctx, page, errors, requests = _open(browser, exp)
    page.wait_for_function("() => document.querySelector('.cnnw-activation-explorer').dataset.mapsIndex === '0'")
    page.click(".cnnw-activation-explorer button.cnnw-next")
    page.wait_for_function("() => document.querySelector('.cnnw-activation-explorer').dataset.mapsIndex === '1'")
    page.wait_for_timeout(200)
    px = _pixels(page, ".cnnw-activation-explorer canvas.cnnw-maps")
    assert np.array_equal(px, maps1[: px.shape[0], : px.shape[1]])
    assert "image 1" in page.inner_text(".cnnw-activation-explorer .cnnw-input-caption")
    assert not errors, errors
    ctx.close()


def test_tsne_export_hover(browser, demo, tmp_path):
    ts = cnnwidgets.TSNEScatter(demo.model, demo.images[:400], demo.labels[:400], demo.classes,
                                mean=demo.mean, std=demo.std, method="pca")
    ts.wait()
    path = ts.save_html(tmp_path / "tsne.html")
    pos = ts.embedding
    thumbs = ts._thumbs
    ts.close()
    ctx, page, errors, _ = _open(browser, path)
    page.wait_for_function("() => document.querySelector('.cnnw-tsne-scatter').dataset.points === '400'")
    s, tx, ty = (float(page.get_attribute(".cnnw-tsne-scatter", f"data-{k}")) for k in ("scale", "tx", "ty"))
    box = page.locator(".cnnw-tsne-scatter canvas.cnnw-scatter").bounding_box()
    i = 77
    page.mouse.move(float(box["x"] + pos[i, 0] * s + tx), float(box["y"] - pos[i, 1] * s + ty))
    page.wait_for_function("() => (document.querySelector('.cnnw-tsne-scatter').dataset.hoverIndex || '-1') !== '-1'")
    j = int(page.get_attribute(".cnnw-tsne-scatter", "data-hover-index"))
    assert np.hypot(*(pos[j] - pos[i])) * s <= 8
    got = _pixels(page, ".cnnw-tsne-scatter canvas.cnnw-hover-thumb")
    want = np.repeat(thumbs[j], 3, axis=-1).repeat(3, axis=0).repeat(3, axis=1)
    assert np.array_equal(got, want)
    assert not errors, errors
    ctx.close()


# ---------------------------------------------------------------- static charts in exported pages
SV = ".cnnw-saliency-viewer"
OIP = ".cnnw-oip-optimizer"


def _scaled(img, s):
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    return img.repeat(s, axis=0).repeat(s, axis=1)


def _bars(page, root):
    """The static bar chart of ``root``: bar heights, class of each bar, highlighted classes, labels."""
    return page.evaluate(
        """(root) => { const svg = document.querySelector(root + ' .cnnw-chart svg.cnnw-static-chart');
          if (!svg) return null;
          const rects = [...svg.querySelectorAll('rect.cnnw-bar')];
          return { heights: rects.map((r) => Number(r.getAttribute('height'))),
                   classes: rects.map((r) => Number(r.getAttribute('data-class'))),
                   target: [...svg.querySelectorAll('rect.cnnw-bar-target')].map((r) => Number(r.getAttribute('data-class'))),
                   labels: [...svg.querySelectorAll('text.cnnw-tick')].map((t) => t.textContent),
                   bold: [...svg.querySelectorAll('text.cnnw-bar-predicted')].map((t) => t.textContent) }; }""",
        root,
    )


def _check_bars(bars, probs, target, classes):
    """One bar per class, heights proportional to the probabilities, tallest = predicted class."""
    assert bars is not None, "no static bar chart in the exported page"
    heights = np.asarray(bars["heights"])
    assert bars["classes"] == list(range(len(classes))) == list(range(len(probs)))
    assert int(np.argmax(heights)) == int(np.argmax(probs))
    # heights are 2-decimal pixel values of p x (plot height): proportional to p
    k = heights.max() / probs.max()
    assert np.allclose(heights, probs * k, atol=0.011), (heights, probs)
    assert bars["target"] == [target]
    assert bars["bold"] == [classes[int(np.argmax(probs))]]
    assert all(c in bars["labels"] for c in classes)


def test_saliency_export_static_bars(browser, demo, tmp_path):
    sv = cnnwidgets.SaliencyViewer(demo.model, demo.images, demo.labels, demo.classes, mean=demo.mean, std=demo.std)
    sv.wait()
    path = sv.save_html(tmp_path / "saliency.html", images=[0, 1])
    probs = {i: sv.probabilities(i) for i in (0, 1)}
    targets = {i: sv.resolve_target(i) for i in (0, 1)}
    sv.index = 1
    sv.wait()
    heat1 = sv.overlay_image()
    sv.close()
    # the two images are predicted as different classes, so the chart must change with the image
    assert int(probs[0].argmax()) != int(probs[1].argmax())
    assert targets == {i: int(probs[i].argmax()) for i in (0, 1)}

    ctx, page, errors, requests = _open(browser, path)
    page.wait_for_function(f"() => document.querySelector('{SV}').dataset.chartIndex === '0'")
    # no bqplot figure was mounted: the chart box holds only the static SVG
    assert page.evaluate(f"() => document.querySelectorAll('{SV} .cnnw-chart > *').length") == 1
    bars0 = _bars(page, SV)
    _check_bars(bars0, probs[0], targets[0], list(demo.classes))

    page.click(f"{SV} button.cnnw-next")
    page.wait_for_function(f"() => document.querySelector('{SV}').dataset.heatIndex === '1'")
    page.wait_for_function(f"() => document.querySelector('{SV}').dataset.chartIndex === '1'")
    px = _pixels(page, f"{SV} canvas.cnnw-heat")
    assert np.array_equal(px, _scaled(heat1, 224 // 28))
    bars1 = _bars(page, SV)
    _check_bars(bars1, probs[1], targets[1], list(demo.classes))
    assert bars1["heights"] != bars0["heights"]
    assert not errors, errors
    assert all(r.startswith(("file:", "blob:", "data:")) for r in requests), requests
    ctx.close()


def _not_blank(page, selector):
    px = _pixels(page, selector)
    return px.size > 0 and len(np.unique(px.reshape(-1, 3), axis=0)) > 1


def test_explorer_export_all_views(browser, demo, tmp_path):
    ex = cnnwidgets.Explorer(demo.model, demo.images, demo.labels, demo.classes, mean=demo.mean, std=demo.std,
                             tsne_images=300)
    try:
        ex.optimizer.run(steps=40)
        history = np.asarray(ex.optimizer.history, np.float32)
        assert len(history) == 40
        path = ex.save_html(tmp_path / "explorer.html", images=[0, 1])
        pos = ex.tsne.embedding
        thumbs = ex.tsne._thumbs
        grid = dict(ex.filters._grid)
        zoom, padding = ex.filters.zoom, ex.filters.padding
        probs0 = ex.saliency.probabilities(0)
        target0 = ex.saliency.resolve_target(0)
        ex.activations.index = 1
        ex.activations.wait()
        maps1 = ex.activations.maps_image()
    finally:
        ex.close()

    ctx, page, errors, requests = _open(browser, path)
    roots = {
        ".cnnw-activation-explorer": "canvas.cnnw-maps",
        ".cnnw-saliency-viewer": "canvas.cnnw-heat",
        ".cnnw-filter-grid": "canvas.cnnw-canvas",
        ".cnnw-tsne-scatter": "canvas.cnnw-scatter",
        ".cnnw-oip-optimizer": "canvas.cnnw-oip-image",
    }
    page.wait_for_function("() => document.querySelector('.cnnw-activation-explorer').dataset.mapsIndex === '0'")
    page.wait_for_function(f"() => document.querySelector('{SV}').dataset.heatIndex === '0'")
    page.wait_for_function("() => Number(document.querySelector('.cnnw-filter-grid').dataset.frame || 0) > 0")
    page.wait_for_function("() => document.querySelector('.cnnw-tsne-scatter').dataset.points === '300'")
    page.wait_for_function(f"() => Number(document.querySelector('{OIP}').dataset.frame || 0) > 0")
    for root, canvas in roots.items():
        assert page.evaluate(f"() => document.querySelectorAll('{root}').length") == 1, root
        assert _not_blank(page, f"{root} {canvas}"), f"{root} {canvas} is blank"

    # activation explorer: the next image shows the live widget's maps for image 1
    page.click(".cnnw-activation-explorer button.cnnw-next")
    page.wait_for_function("() => document.querySelector('.cnnw-activation-explorer').dataset.mapsIndex === '1'")
    px = _pixels(page, ".cnnw-activation-explorer canvas.cnnw-maps")
    assert np.array_equal(px, maps1[: px.shape[0], : px.shape[1]])

    # saliency: the static probability chart of image 0
    page.wait_for_function(f"() => document.querySelector('{SV}').dataset.chartIndex === '0'")
    _check_bars(_bars(page, SV), probs0, target0, list(demo.classes))

    # filter grid: hovering tile 1 names its kernel
    loc = page.locator(".cnnw-filter-grid canvas.cnnw-canvas")
    loc.scroll_into_view_if_needed()
    box = loc.bounding_box()
    tile = 1
    cell_w, cell_h = grid["tile_w"] * zoom + padding, grid["tile_h"] * zoom + padding
    x = (tile % grid["columns"]) * cell_w + grid["tile_w"] * zoom / 2
    y = (tile // grid["columns"]) * cell_h + grid["tile_h"] * zoom / 2
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_function(f"() => document.querySelector('.cnnw-filter-grid').dataset.hoverTile === '{tile}'")
    want = (f"filter {tile} (RGB)" if grid["rgb"] else
            f"filter {tile // grid['in_channels']}, input channel {tile % grid['in_channels']}")
    assert want in page.inner_text(".cnnw-filter-grid .cnnw-tip")

    # t-SNE: hovering a point shows its thumbnail
    loc = page.locator(".cnnw-tsne-scatter canvas.cnnw-scatter")
    loc.scroll_into_view_if_needed()
    box = loc.bounding_box()
    s, tx, ty = (float(page.get_attribute(".cnnw-tsne-scatter", f"data-{k}")) for k in ("scale", "tx", "ty"))
    i = 42
    page.mouse.move(float(box["x"] + pos[i, 0] * s + tx), float(box["y"] - pos[i, 1] * s + ty))
    page.wait_for_function("() => (document.querySelector('.cnnw-tsne-scatter').dataset.hoverIndex || '-1') !== '-1'")
    j = int(page.get_attribute(".cnnw-tsne-scatter", "data-hover-index"))
    assert np.hypot(*(pos[j] - pos[i])) * s <= 8
    got = _pixels(page, ".cnnw-tsne-scatter canvas.cnnw-hover-thumb")
    assert np.array_equal(got, np.repeat(thumbs[j], 3, axis=-1).repeat(3, axis=0).repeat(3, axis=1))

    # OIP: the static objective curve, one point per step, an affine image of the history
    curve = page.evaluate(
        f"""() => {{ const svg = document.querySelector('{OIP} .cnnw-chart svg.cnnw-static-chart');
          const line = svg && svg.querySelector('polyline.cnnw-line');
          return line ? {{ n: Number(svg.dataset.points), pts: line.getAttribute('points') }} : null; }}"""
    )
    assert curve is not None, "no static objective curve in the exported page"
    assert curve["n"] == len(history)
    pts = np.array([[float(v) for v in p.split(",")] for p in curve["pts"].split()])
    assert pts.shape == (len(history), 2)
    assert np.all(np.diff(pts[:, 0]) > 0)
    slope, icpt = np.polyfit(history.astype(np.float64), pts[:, 1], 1)
    assert slope < 0  # larger objective, higher on the page
    assert np.abs(pts[:, 1] - (slope * history + icpt)).max() < 0.02
    assert int(np.argmin(pts[:, 1])) == int(np.argmax(history))

    assert not errors, errors
    assert all(r.startswith(("file:", "blob:", "data:")) for r in requests), requests
    ctx.close()
