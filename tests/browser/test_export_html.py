"""Standalone HTML export, opened from disk in headless Chromium with the network off."""

from __future__ import annotations

import numpy as np
import pytest

import cnnwidgets

from .conftest import OVERFLOW_JS

pytestmark = pytest.mark.browser


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


def _background(page, root):
    """The gap colour the view draws with (its root's ``data-background``, "r,g,b")."""
    return tuple(int(v) for v in page.get_attribute(root, "data-background").split(","))


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
    maps1 = {bg: ex.maps_image(background=bg) for bg in ((238, 238, 238), (255, 255, 255))}  # the page's gaps
    ex.close()

    ctx, page, errors, requests = _open(browser, fg)
    page.wait_for_function("() => Number(document.querySelector('.cnnw-filter-grid').dataset.frame || 0) > 0")
    px = _pixels(page, ".cnnw-filter-grid canvas.cnnw-canvas")
    bg = _background(page, ".cnnw-filter-grid")
    assert np.array_equal(px, grid.to_image(background=bg)[: px.shape[0], : px.shape[1]])
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
    assert np.array_equal(px, grid.to_image(zoom=3, background=bg)[: px.shape[0], : px.shape[1]])
    assert not errors, errors
    assert all(r.startswith(("file:", "blob:", "data:")) for r in requests), requests
    ctx.close()

    ctx, page, errors, requests = _open(browser, exp)
    page.wait_for_function("() => document.querySelector('.cnnw-activation-explorer').dataset.mapsIndex === '0'")
    page.click(".cnnw-activation-explorer button.cnnw-next")
    page.wait_for_function("() => document.querySelector('.cnnw-activation-explorer').dataset.mapsIndex === '1'")
    page.wait_for_timeout(200)
    px = _pixels(page, ".cnnw-activation-explorer canvas.cnnw-maps")
    want = maps1[_background(page, ".cnnw-activation-explorer")]
    assert np.array_equal(px, want[: px.shape[0], : px.shape[1]])
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
    # no bqplot figure was mounted: the class chart's box holds only the static SVG
    assert page.evaluate(f"() => document.querySelectorAll('{SV} .cnnw-sv-chart > *').length") == 1
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
        maps1 = {bg: ex.activations.maps_image(background=bg) for bg in ((238, 238, 238), (255, 255, 255))}
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

    # the exported dashboard reflows like the live one: two columns on a wide page, one on a
    # narrow one, nothing sticking out
    def columns():
        return page.evaluate("() => new Set([...document.querySelectorAll('.cnnw-explorer-grid > .cnnw-export-view')]"
                             ".map(e => Math.round(e.getBoundingClientRect().left))).size")

    assert columns() == 2
    page.set_viewport_size({"width": 800, "height": 1100})
    page.wait_for_timeout(400)
    assert columns() == 1
    assert page.evaluate(OVERFLOW_JS, ".cnnw-explorer-grid .cnnw-root") == []
    page.set_viewport_size({"width": 1300, "height": 1100})
    page.wait_for_timeout(400)

    # activation explorer: the next image shows the live widget's maps for image 1
    page.click(".cnnw-activation-explorer button.cnnw-next")
    page.wait_for_function("() => document.querySelector('.cnnw-activation-explorer').dataset.mapsIndex === '1'")
    px = _pixels(page, ".cnnw-activation-explorer canvas.cnnw-maps")
    want = maps1[_background(page, ".cnnw-activation-explorer")]
    assert np.array_equal(px, want[: px.shape[0], : px.shape[1]])

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


# ---------------------------------------------------------------- the exported page is a static copy
# The contract every view follows in a page with no kernel (js/src/lib/dom.js viewShell,
# js/src/lib/stepper.js imageStepper): the root has class `cnnw-static` and a `.cnnw-static-note`
# line (the state's `_export_note`); what needs a kernel carries `data-needs-kernel` and is hidden;
# the image stepper visits the state's `_export_images` and no other image.

ROOTS = {
    "FilterGrid": ".cnnw-filter-grid",
    "ActivationExplorer": ".cnnw-activation-explorer",
    "SaliencyViewer": ".cnnw-saliency-viewer",
    "OIPOptimizer": ".cnnw-oip-optimizer",
    "TSNEScatter": ".cnnw-tsne-scatter",
    "ChannelCard": ".cnnw-channel-card",
}

#: Controls that make the kernel compute (a layer, a method, a run, top images ...): in an
#: exported page each must be hidden or disabled.
NEEDS_KERNEL = (
    "select.cnnw-layer", "[data-trait='layer']", "select.cnnw-method", "[data-trait='method']",
    "select.cnnw-target", "select.cnnw-view", "select.cnnw-baseline", "input.cnnw-steps", "input.cnnw-samples",
    "select.cnnw-sort", "button.cnnw-top-button", "button.cnnw-batch-button",
    "button.cnnw-start", "button.cnnw-pause", "button.cnnw-stop", "button.cnnw-reset",
    "select.cnnw-mode", "select.cnnw-normalize", "select.cnnw-cmap", "[data-trait='objective']", ".cnnw-k",
    "input.cnnw-channel", "input.cnnw-window", "input.cnnw-stride", "select.cnnw-lrp-rule", "input.cnnw-evidence-toggle",
    "button.cnnw-sanity-run",
)

#: Controls the page works from its own state (besides the image stepper), by view.
KERNEL_FREE = {
    "FilterGrid": {"cnnw-zoom"},
    "ActivationExplorer": {"cnnw-opacity"},
    "SaliencyViewer": {"cnnw-opacity"},
    "OIPOptimizer": set(),
    "TSNEScatter": {"cnnw-color-by", "cnnw-box-mode", "cnnw-reset-view", "cnnw-clear-selection", "cnnw-show-all",
                    "cnnw-legend-item"},
    "ChannelCard": set(),
}

CONTROLS_JS = """
(root) => [...document.querySelectorAll(root + ' button, ' + root + ' select, ' + root + ' input, ' + root + ' textarea')]
  .filter((el) => el.getClientRects().length > 0 && getComputedStyle(el).visibility !== 'hidden' && !el.closest('[hidden]'))
  .map((el) => ({ tag: el.tagName.toLowerCase(), cls: String(el.className || ''), type: el.type || '',
                  disabled: !!el.disabled, needsKernel: !!el.closest('[data-needs-kernel]'),
                  stepper: !!el.closest('.cnnw-stepper'), text: (el.textContent || el.title || '').trim().slice(0, 40) }))
"""


def _static_copy_checks(page, kind, images=None):
    """The checks every exported view passes: returns a list of failures (empty when it passes)
    so that one page reports every view that has not adopted the contract yet. ``images``: the
    images the static-copy line must name (a per-image view); None for a view that holds no
    image of its own (the line names the view, and no image)."""
    root = ROOTS[kind]
    problems = []
    if page.evaluate(f"() => document.querySelectorAll('{root}').length") != 1:
        return [f"{kind}: no single {root} in the page"]
    if not page.evaluate(f"() => document.querySelector('{root}').classList.contains('cnnw-static')"):
        problems.append(f"{kind}: the root has no cnnw-static class (viewShell)")
    note = page.locator(f"{root} .cnnw-static-note")
    if note.count() != 1 or not note.first.is_visible():
        problems.append(f"{kind}: no visible static-copy line (.cnnw-static-note)")
    else:
        text = note.first.inner_text()
        if images is None:
            named = text.startswith("Static copy") and f"exported from {kind}" in text and "image -" not in text
        else:
            held = (f" of image {images[0]}" if len(images) == 1
                    else f" of {len(images)} images ({', '.join(map(str, images))})")
            named = text.startswith(f"Static copy{held}, exported from {kind}")
        if not (named and "Open the notebook" in text):
            problems.append(f"{kind}: the static-copy line does not name what was exported: {text!r}")
    controls = page.evaluate(CONTROLS_JS, root)
    for c in controls:
        if c["needsKernel"] and not c["disabled"]:
            problems.append(f"{kind}: visible, enabled control that needs the kernel: {c}")
    for sel in NEEDS_KERNEL:
        for el in page.locator(f"{root} {sel}").all():
            if el.is_visible() and el.is_enabled():
                problems.append(f"{kind}: {sel} ({el.inner_text()[:30]!r}) is visible and enabled in a page with no kernel")
    free = KERNEL_FREE[kind]
    for c in controls:
        if c["disabled"] or c["stepper"] or set(c["cls"].split()) & free:
            continue
        problems.append(f"{kind}: visible, enabled control neither in the image stepper nor one the page "
                        f"works alone: {c}")
    return problems


def _stepper_visits(page, root):
    """Press ‹ until it stops, then › until it stops; the image numbers shown on the way, the
    slider's max, and the canvas-ready marker per image (the caller reads the pictures)."""
    stepper = f"{root} .cnnw-stepper"
    if page.locator(stepper).count() != 1:
        return None
    prev, nxt = page.locator(f"{stepper} button.cnnw-prev"), page.locator(f"{stepper} button.cnnw-next")
    for _ in range(50):
        if not prev.is_enabled():
            break
        prev.click()
    shown = [int(page.input_value(f"{stepper} input.cnnw-index-number"))]
    for _ in range(50):
        if not nxt.is_enabled():
            break
        nxt.click()
        shown.append(int(page.input_value(f"{stepper} input.cnnw-index-number")))
    return {"shown": shown, "max": int(page.get_attribute(f"{stepper} input.cnnw-index", "max"))}


def _visit_each(page, root, images, ready_attr, canvas):
    """Go to each exported image with the stepper (›), wait for the picture of that image and
    return {index: pixels}."""
    stepper = f"{root} .cnnw-stepper"
    prev = page.locator(f"{stepper} button.cnnw-prev")
    while prev.is_enabled():
        prev.click()
    pictures = {}
    for k, i in enumerate(images):
        if k:
            page.click(f"{stepper} button.cnnw-next")
        page.wait_for_function(f"() => document.querySelector('{root}').dataset.{ready_attr} === '{i}'", timeout=10_000)
        page.wait_for_timeout(100)
        pictures[i] = _pixels(page, f"{root} {canvas}")
    return pictures


IMAGES = [0, 3, 5]  # not contiguous: the stepper must skip 1, 2 and 4


@pytest.fixture(scope="module")
def exported(demo, tmp_path_factory):
    """Each view exported on its own (the per-image ones with IMAGES); the per-image widgets stay
    open so that the test draws each exported image with the page's own gap colour."""
    out = tmp_path_factory.mktemp("static")
    pages = {}
    kw = dict(mean=demo.mean, std=demo.std)
    ae = cnnwidgets.ActivationExplorer(demo.model, demo.images[:50], demo.labels[:50], demo.classes, layer="features.1", **kw)
    sv = cnnwidgets.SaliencyViewer(demo.model, demo.images[:50], demo.labels[:50], demo.classes, **kw)
    fg = cnnwidgets.FilterGrid(demo.model, "features.0", zoom=8)
    oip = cnnwidgets.OIPOptimizer(demo.model, "features.3", channel=2, images=demo.images[:1], steps=20, **kw)
    ts = cnnwidgets.TSNEScatter(demo.model, demo.images[:200], demo.labels[:200], demo.classes, method="pca", **kw)
    card = cnnwidgets.ChannelCard(demo.model, demo.images[:50], demo.labels[:50], demo.classes, layer="features.3",
                                  channel=2, steps=20, **kw)
    try:
        pages["ActivationExplorer"] = ae.save_html(out / "maps.html", images=IMAGES)
        pages["SaliencyViewer"] = sv.save_html(out / "saliency.html", images=IMAGES)
        pages["FilterGrid"] = fg.save_html(out / "filters.html")
        oip.run()
        pages["OIPOptimizer"] = oip.save_html(out / "oip.html")
        ts.wait()
        pages["TSNEScatter"] = ts.save_html(out / "tsne.html")
        card.wait()
        pages["ChannelCard"] = card.save_html(out / "card.html")
        yield pages, {"ActivationExplorer": ae, "SaliencyViewer": sv}
    finally:
        for w in (ae, sv, fg, oip, ts, card):
            w.close()


def _kernel_picture(view, i, background):
    """What the live widget draws for image ``i`` (the page's gaps in ``background``)."""
    view.index = i
    view.wait()
    if isinstance(view, cnnwidgets.ActivationExplorer):
        return view.maps_image(background=background)
    return _scaled(view.overlay_image(), 224 // 28)


PER_IMAGE = {  # view -> (root data attribute naming the image drawn, canvas)
    "ActivationExplorer": ("mapsIndex", "canvas.cnnw-maps"),
    "SaliencyViewer": ("heatIndex", "canvas.cnnw-heat"),
}


@pytest.mark.parametrize("kind", list(ROOTS))
def test_exported_view_is_a_static_copy(browser, exported, kind):
    """Static-copy line naming the view and its images; only kernel-free controls usable; the
    image stepper (per-image views) visits exactly the exported images, each with its picture."""
    pages, live_views = exported
    ctx, page, errors, requests = _open(browser, pages[kind])
    try:
        page.wait_for_selector(ROOTS[kind], timeout=10_000)
        problems = _static_copy_checks(page, kind, IMAGES if kind in PER_IMAGE else None)
        if kind in PER_IMAGE:
            attr, canvas = PER_IMAGE[kind]
            visits = _stepper_visits(page, ROOTS[kind])
            if visits is None:
                problems.append(f"{kind}: no image stepper (.cnnw-stepper) in the exported page")
            else:
                if visits["shown"] != IMAGES:
                    problems.append(f"{kind}: the stepper visited {visits['shown']}, the page holds {IMAGES}")
                if visits["max"] != len(IMAGES) - 1:
                    problems.append(f"{kind}: the stepper's slider max is {visits['max']}, expected {len(IMAGES) - 1}")
                pictures = _visit_each(page, ROOTS[kind], IMAGES, attr, canvas)
                bg = _background(page, ROOTS[kind]) if kind == "ActivationExplorer" else None
                for i in IMAGES:
                    px, ref = pictures[i], _kernel_picture(live_views[kind], i, bg)
                    if not np.array_equal(px, ref[: px.shape[0], : px.shape[1]]):
                        problems.append(f"{kind}: the picture shown for image {i} is not the kernel's picture of image {i}")
                if len({p.tobytes() for p in pictures.values()}) != len(IMAGES):
                    problems.append(f"{kind}: the picture did not change with every exported image")
        print(f"{kind}: {len(problems)} problem(s)", *problems, sep="\n  ")
        assert problems == []
        assert not errors, errors
        assert all(r.startswith(("file:", "blob:", "data:")) for r in requests), requests
    finally:
        ctx.close()


def test_exported_explorer_is_a_static_copy(browser, demo, tmp_path):
    """The Explorer's page: every view says it is a static copy of what it holds, no control that
    needs the kernel is usable, and the per-image views step through exactly the exported images."""
    ex = cnnwidgets.Explorer(demo.model, demo.images[:60], demo.labels[:60], demo.classes, mean=demo.mean,
                             std=demo.std, tsne_images=120)
    try:
        ex.activations.wait()
        path = ex.save_html(tmp_path / "explorer.html", images=IMAGES)
        kinds = [type(v).__name__ for v in ex.views]
    finally:
        ex.close()
    assert sorted(kinds) == sorted(ROOTS)
    ctx, page, errors, requests = _open(browser, path)
    try:
        problems = []
        for kind in ROOTS:
            problems += _static_copy_checks(page, kind, IMAGES if kind in PER_IMAGE else None)
        for kind in PER_IMAGE:
            visits = _stepper_visits(page, ROOTS[kind])
            if visits is None:
                problems.append(f"{kind}: no image stepper (.cnnw-stepper) in the exported page")
            elif visits["shown"] != IMAGES or visits["max"] != len(IMAGES) - 1:
                problems.append(f"{kind}: the stepper visited {visits['shown']} (slider max {visits['max']}), "
                                f"the page holds {IMAGES}")
        print(f"Explorer page: {len(problems)} problem(s)", *problems, sep="\n  ")
        assert problems == []
        assert not errors, errors
        assert all(r.startswith(("file:", "blob:", "data:")) for r in requests), requests
    finally:
        ctx.close()
