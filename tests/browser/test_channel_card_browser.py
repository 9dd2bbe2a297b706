"""ChannelCard in JupyterLab + headless Chromium: the top images with their receptive fields,
the optimized patterns and the filter's kernels are the Python side's exact pixels; its
statistics are Python's; the channel field and the layer menu round trip (a refused channel
shows its message next to the field); light and dark theme; 800 px; and the exported page
without a kernel."""

from __future__ import annotations

import numpy as np
import pytest

import cnnwidgets

from .conftest import OVERFLOW_JS, save_screenshot
from .test_evidence_browser import CLIPPED_JS

pytestmark = pytest.mark.browser

CARD = ".cnnw-channel-card"
TOP = f"{CARD} .cnnw-card-images canvas.cnnw-card-top-image"
PATTERNS = f"{CARD} .cnnw-card-oip canvas.cnnw-card-pattern"
KERNELS = f"{CARD} .cnnw-card-filter canvas.cnnw-card-kernel"
#: lib/charts.js barChart: the plot's height (240 - 40 - 40).
PLOT_H = 160

NOTEBOOK = [
    "import cnnwidgets\n"
    "d = cnnwidgets.demo.mnist('val')\n"
    "card = cnnwidgets.ChannelCard(d.model, d.images[:200], d.labels[:200], d.classes, layer='features.3',\n"
    "    channel=5, mean=d.mean, std=d.std, steps=64)\n"
    "card",
]

CANVASES_JS = """(sel) => [...document.querySelectorAll(sel)].map((c) => ({ w: c.width, h: c.height,
  px: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data) }))"""


def _fit_scale(h: int, w: int, target: int) -> int:
    """lib/image.js fitScale."""
    return max(1, target // max(h, w, 1))


def _scaled(img: np.ndarray, s: int) -> np.ndarray:
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img[..., :3]
    return img.repeat(s, axis=0).repeat(s, axis=1)


def _canvases(page, sel: str) -> list[np.ndarray]:
    return [np.asarray(c["px"], np.uint8).reshape(c["h"], c["w"], 4) for c in page.evaluate(CANVASES_JS, sel)]


def _same_images(page, sel: str, images: np.ndarray, target: int, what: str) -> None:
    """Each canvas under ``sel`` shows exactly image k of ``images`` (uint8 (k, H, W, C)), drawn
    at the page's integer scale ``fitScale(H, W, target)``."""
    got = _canvases(page, sel)
    assert len(got) == len(images) > 0, (what, len(got), len(images))
    s = _fit_scale(images.shape[1], images.shape[2], target)
    for k, (px, img) in enumerate(zip(got, images)):
        want = _scaled(img, s)
        assert px.shape[:2] == want.shape[:2], (what, k, px.shape, want.shape)
        assert (px[..., 3] == 255).all(), (what, k)
        diff = np.abs(px[..., :3].astype(int) - want.astype(int))
        assert diff.max() == 0, f"{what} {k}: {(diff > 0).any(-1).sum()} of {px.shape[0] * px.shape[1]} pixels differ"


def _np(nb, expr: str, name: str) -> np.ndarray:
    path = nb.lab["root"] / name
    nb.kernel(f"import numpy as _np; _np.save({str(path)!r}, _np.asarray({expr}))")
    return np.load(path)


def _wait_attr(page, sel: str, attr: str, value: str, timeout=60_000):
    page.wait_for_function(
        "([s, a, v]) => document.querySelector(s)?.dataset[a] === v", arg=[sel, attr, value], timeout=timeout
    )


def _settle(nb, layer: str, channel: int) -> None:
    """Python has the card of ``layer``/``channel`` done (top images, statistics, patterns),
    and the page shows it."""
    nb.wait_kernel("[card.layer, card.channel]", [layer, channel])
    assert nb.kernel_json("card.wait()") is True
    meta = nb.kernel_json("[card._top_meta.get('state'), card._patterns_meta.get('state'), card._stats_meta.get('state')]")
    assert meta == ["done", "done", "done"], meta
    page = nb.page
    _wait_attr(page, CARD, "layer", layer)
    _wait_attr(page, CARD, "channel", str(channel))
    _wait_attr(page, CARD, "topState", "done")
    _wait_attr(page, CARD, "patternsState", "done")
    step = nb.kernel_json("card._patterns_meta['step']")
    _wait_attr(page, CARD, "patternStep", str(step))


def _check_card(nb) -> np.ndarray:
    """Everything the card draws is what Python computed for its channel. Returns the top
    overlays."""
    page = nb.page
    root = page.locator(CARD)
    # the top images, each with its receptive field outlined (card.top_overlays())
    top = _np(nb, "card.top_overlays()", "top.npy")
    k = nb.kernel_json("card.k")
    assert top.shape == (k, 28, 28, 3) and top.dtype == np.uint8
    assert root.get_attribute("data-top") == str(k)
    _same_images(page, TOP, top, 84, "top image")
    # the outline is there: the accent colour on the box's edge, as Python drew it
    items = nb.kernel_json("card._top_meta['items']")
    x0, y0, x1, y1 = items[0]["box"]
    assert top[0, y0, x0].tolist() == [245, 133, 24] and top[0, y1 - 1, x1 - 1].tolist() == [245, 133, 24]
    figures = page.eval_on_selector_all(f"{CARD} .cnnw-card-images figure", "fs => fs.map(f => Number(f.dataset.index))")
    assert figures == [it["index"] for it in items]
    # the optimized patterns (card.pattern_images())
    patterns = _np(nb, "card.pattern_images()", "patterns.npy")
    assert patterns.shape[0] == nb.kernel_json("card.patterns") == 4
    _same_images(page, PATTERNS, patterns, 96, "pattern")
    # the filter: one tile per input channel, its codes through the diverging colours
    wmeta = nb.kernel_json("{k: v for k, v in card._weights_meta.items() if k in ('kind', 'in_channels', 'layer', 'channel')}")
    assert root.get_attribute("data-weights-kind") == wmeta["kind"] == "kernels"
    codes = _np(nb, "card._weights", "codes.npy")
    lut = _np(nb, "card._weights_lut", "lut.npy")
    assert codes.shape[0] == wmeta["in_channels"] and root.get_attribute("data-weight-tiles") == str(wmeta["in_channels"])
    T, kh, kw = codes.shape
    _same_images(page, KERNELS, lut[codes], 24 if T > 16 else 48, "kernel")
    # the statistics: the histogram's bars are Python's counts, the best class Python's
    stats = nb.kernel_json("{k: card._stats_meta[k] for k in ('n_valid', 'by_class')}")
    assert root.get_attribute("data-stats-images") == str(stats["n_valid"]) == "200"
    hist = _np(nb, "card._hist", "hist.npy")
    bars = page.eval_on_selector_all(f"{CARD} .cnnw-card-hist svg rect.cnnw-bar", "rs => rs.map(r => Number(r.getAttribute('height')))")
    assert len(bars) == len(hist) >= 2
    assert np.abs(np.asarray(bars) - PLOT_H * hist / hist.max()).max() <= 0.011, (bars, hist.tolist())
    by_class = np.array([np.nan if v is None else v for v in stats["by_class"]])
    best = int(np.nanargmax(by_class))
    assert root.get_attribute("data-best-class") == str(best)
    assert page.get_attribute(f"{CARD} .cnnw-card-classes svg", "data-highlight") == str(best)
    for chart in (".cnnw-card-hist", ".cnnw-card-classes"):  # no text cut off at the chart's edge
        assert page.evaluate(CLIPPED_JS, f"{CARD} {chart} svg") == [], chart
    return top


def _theme_checks(nb, tag: str) -> None:
    report = nb.contrast_report(CARD)
    assert report["checked"] >= 30 and report["failures"] == [], (tag, report["failures"])
    assert report["white_canvases"] == [], (tag, report["white_canvases"])


# ---------------------------------------------------------------- the live card
def test_channel_card_pixels_round_trips_themes(open_notebook):
    nb = open_notebook("channel_card.ipynb", NOTEBOOK, viewport=(1400, 1300))
    page = nb.page
    nb.set_theme("JupyterLab Light")  # a user setting: another run may have left it dark
    page.wait_for_selector(CARD, timeout=90_000)

    # 1. the card of features.3 channel 5
    _settle(nb, "features.3", 5)
    first = _check_card(nb)
    assert "features.3 · channel 5 of 64" in page.inner_text(f"{CARD} .cnnw-card-title")
    options = page.eval_on_selector_all(f"{CARD} select.cnnw-layer option", "os => os.map(o => o.value)")
    assert options == nb.kernel_json("list(card.layers)")

    # 2. another channel, typed in the page (Enter commits): Python follows, the images follow
    channel = page.locator(f"{CARD} input.cnnw-channel")
    channel.fill("9")
    channel.press("Enter")
    _settle(nb, "features.3", 9)
    nine = _check_card(nb)
    assert not np.array_equal(first, nine)  # other images, other regions

    # 3. a channel the layer does not have: the message next to the field, Python unchanged
    channel.fill("999")
    channel.press("Enter")
    err = page.locator(f"{CARD} .cnnw-field:has(input.cnnw-channel) .cnnw-control-error")
    err.wait_for(state="visible", timeout=20_000)
    assert "channel must be in -1..63, got 999" in err.inner_text()
    assert "layer 'features.3' has 64 channels" in err.inner_text()
    assert nb.kernel_json("card.channel") == 9 and page.get_attribute(CARD, "data-channel") == "9"
    assert page.evaluate("(e) => getComputedStyle(e).color", err.element_handle()) != page.evaluate(
        f"() => getComputedStyle(document.querySelector('{CARD}')).color")  # in the error colour
    _theme_checks(nb, "light, with the error shown")
    _same_images(page, TOP, nine, 84, "top image after the refusal")
    channel.fill("7")
    channel.press("Enter")
    _settle(nb, "features.3", 7)
    err.wait_for(state="hidden", timeout=20_000)
    _check_card(nb)
    nb.kernel("card.last_error = None")  # the refusal above was the one expected

    # 4. another layer from the menu: channel 7 exists there too; one kernel per input channel
    page.select_option(f"{CARD} select.cnnw-layer", "features.0")
    _settle(nb, "features.0", 7)
    _check_card(nb)
    assert page.get_attribute(CARD, "data-weight-tiles") == "1"
    page.select_option(f"{CARD} select.cnnw-layer", "features.3")
    _settle(nb, "features.3", 7)

    # 5. themes: every text readable, no white canvas; the pixels stay Python's
    _theme_checks(nb, "light")
    save_screenshot(page, CARD, "channel_card")
    nb.set_theme("JupyterLab Dark")
    _theme_checks(nb, "dark")
    _same_images(page, TOP, _np(nb, "card.top_overlays()", "top_dark.npy"), 84, "top image (dark)")
    save_screenshot(page, CARD, "channel_card_dark")
    nb.set_theme("JupyterLab Light")

    # 6. 1,400 and 800 px: nothing sticks out; at 800 px the sections stack
    assert nb.overflow_report(CARD) == []
    page.set_viewport_size({"width": 800, "height": 1300})
    page.wait_for_function("() => window.innerWidth === 800", timeout=10_000)
    page.wait_for_timeout(600)
    assert nb.overflow_report(CARD) == []
    lefts = page.eval_on_selector_all(f"{CARD} .cnnw-card-section", "ss => ss.map(s => Math.round(s.getBoundingClientRect().left))")
    assert len(lefts) == 4 and len(set(lefts)) == 1, lefts  # one column
    page.set_viewport_size({"width": 1400, "height": 1300})
    assert nb.kernel_json("card.last_error") is None
    assert not nb.errors, nb.errors


# ---------------------------------------------------------------- the exported page
def test_channel_card_exported_page(browser, tmp_path):
    """No kernel: the exported card shows the same top images, patterns and kernels; the
    controls that would need a kernel are hidden."""
    d = cnnwidgets.demo.mnist("val")
    card = cnnwidgets.ChannelCard(d.model, d.images[:200], d.labels[:200], d.classes, layer="features.3",
                                  channel=5, mean=d.mean, std=d.std, steps=64)
    assert card.wait()
    assert card._patterns_meta["state"] == "done" and card._top_meta["state"] == "done"
    path = card.save_html(tmp_path / "card.html")
    top, patterns = card.top_overlays(), card.pattern_images()
    kernels = np.asarray(card._weights_lut)[np.asarray(card._weights)]
    card.close()

    ctx = browser.new_context(offline=True, viewport={"width": 1200, "height": 1100})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function("() => document.body.dataset.ready === 'true'", timeout=30_000)
    _wait_attr(page, CARD, "topState", "done")
    assert page.locator(f"{CARD}.cnnw-static").count() == 1
    assert page.get_attribute(CARD, "data-channel") == "5" and page.get_attribute(CARD, "data-layer") == "features.3"
    _same_images(page, TOP, top, 84, "exported top image")
    _same_images(page, PATTERNS, patterns, 96, "exported pattern")
    _same_images(page, KERNELS, kernels, 24, "exported kernel")
    for sel in ("select.cnnw-layer", "input.cnnw-channel"):
        assert page.locator(f"{CARD} {sel}").is_hidden(), sel
    assert page.evaluate(OVERFLOW_JS, CARD) == []
    assert not errors, errors
    ctx.close()
