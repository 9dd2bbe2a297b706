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
