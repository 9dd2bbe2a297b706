"""OIPOptimizer in JupyterLab + headless Chromium: Start, live image and loss curve while another
cell runs, Stop within a step, pixels of the final image, Selection targeting; light and dark
contrast, no overflow at 800 and 1,400 px, keyboard, errors next to their control, fields per
objective, the dead-map message and the loss chart's tick labels after a reset."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import save_screenshot
from .test_activation_explorer_browser import _np, _same, _scaled, _wait_attr

pytestmark = pytest.mark.browser

OIP = ".cnnw-oip-optimizer"


def test_oip_start_live_stop(open_notebook):
    nb = open_notebook(
        "oip.ipynb",
        [
            "import cnnwidgets, ipywidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "sel = cnnwidgets.Selection()\n"
            "oip = cnnwidgets.OIPOptimizer(demo.model, 'features.6', channel=5, images=demo.images,\n"
            "    selection=sel, mean=demo.mean, std=demo.std, steps=100000, lr=0.02)\n"
            "grid = cnnwidgets.FilterGrid(demo.model, 'features.6', selection=sel, zoom=6, height=200)\n"
            "ipywidgets.VBox([oip, grid])",
        ],
        viewport=(1300, 1300),
    )
    page = nb.page
    page.wait_for_selector(f"{OIP} canvas.cnnw-oip-image", timeout=60_000)
    page.wait_for_function(f"() => document.querySelector('{OIP} .cnnw-chart svg') !== null", timeout=30_000)
    # live, the bqplot figure is the chart; the static SVG is for exported pages only
    assert page.locator(f"{OIP} .cnnw-chart svg.cnnw-static-chart").count() == 0

    # a click on a filter of the linked FilterGrid targets that channel here
    geo = nb.kernel_json("dict(cols=grid._grid['columns'], th=grid._grid['tile_h'], tw=grid._grid['tile_w'], n_in=grid._grid['in_channels'])")
    tile = 9 * geo["n_in"]
    cw, ch = geo["tw"] * 6 + 1, geo["th"] * 6 + 1
    gbox = page.locator(".cnnw-filter-grid canvas.cnnw-canvas").bounding_box()
    page.mouse.click(gbox["x"] + (tile % geo["cols"]) * cw + cw // 2, gbox["y"] + (tile // geo["cols"]) * ch + ch // 2)
    nb.wait_kernel("[grid.channel, sel.channel, oip.channel]", [9, 9, 9])

    # Start from the page: the image and the loss curve change while another cell executes
    frame0 = int(page.get_attribute(OIP, "data-frame"))
    page.click(f"{OIP} button.cnnw-start")
    _wait_attr(nb, OIP, "running", "true")
    out = nb.kernel("import time; t0 = time.time(); s = sum(i * i for i in range(200000)); print('other cell ran', round(time.time() - t0, 3))")
    assert "other cell ran" in out
    page.wait_for_function(f"(n) => Number(document.querySelector('{OIP}').dataset.frame) > n + 3", arg=frame0, timeout=30_000)
    path_len = page.evaluate(f"() => (document.querySelector('{OIP} .cnnw-chart path.line')?.getAttribute('d') || '').length")
    page.wait_for_timeout(500)
    path_len2 = page.evaluate(f"() => (document.querySelector('{OIP} .cnnw-chart path.line')?.getAttribute('d') || '').length")
    assert path_len2 > path_len > 0, "the loss curve grows while the optimization runs"
    steps_a = nb.kernel_json("len(oip.history)")
    page.wait_for_timeout(400)
    steps_b = nb.kernel_json("len(oip.history)")
    assert steps_b > steps_a
    info = page.inner_text(f"{OIP} .cnnw-run-info")
    assert "steps/s" in info

    # Stop: it stops within a step, and the page shows the final image
    page.click(f"{OIP} button.cnnw-stop")
    _wait_attr(nb, OIP, "running", "false", timeout=20_000)
    done = nb.kernel_json("len(oip.history)")
    page.wait_for_timeout(500)
    assert nb.kernel_json("len(oip.history)") == done
    assert nb.kernel_json("[oip.running, oip.result.stopped]") == [False, True]
    _wait_attr(nb, OIP, "final", "true")
    final = _np(nb, "(oip.result.images[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(__import__('torch').uint8).numpy()", "f.npy")
    _same(nb, f"{OIP} canvas.cnnw-oip-image", _scaled(final, 224 // 28))
    assert np.ptp(final) > 0
    assert nb.kernel_json("oip.history[-1] > oip.history[0]")  # the objective went up
    # the clipping rule and the random scaling are set from the page, and shown when set from Python
    # (in the regularizers, closed at first; the clipping rule shows while clipping is on)
    page.click(f"{OIP} details.cnnw-oip-regularizers > summary")
    assert page.locator(f"{OIP} select.cnnw-clip-by").is_hidden()
    nb.kernel("oip.clip_percentile = 10.0")
    page.wait_for_selector(f"{OIP} select.cnnw-clip-by", state="visible", timeout=10_000)
    page.select_option(f"{OIP} select.cnnw-clip-by", "contribution")
    nb.wait_kernel("oip.clip_by", "contribution")
    page.evaluate(f"() => {{ const i = document.querySelector('{OIP} input.cnnw-scale'); i.value = '0.1'; "
                  "i.dispatchEvent(new Event('change')); }")
    nb.wait_kernel("oip.scale", 0.1)
    nb.kernel("oip.scale = 0.25; oip.clip_by = 'norm'")
    page.wait_for_function(f"() => document.querySelector('{OIP} input.cnnw-scale').value === '0.25' && "
                           f"document.querySelector('{OIP} select.cnnw-clip-by').value === 'norm'", timeout=10_000)
    assert not nb.errors, nb.errors


def _visible(page, selector: str) -> bool:
    return page.evaluate("(s) => { const e = document.querySelector(s); return !!e && !e.closest('[hidden]') "
                         "&& e.getBoundingClientRect().width > 0; }", selector)


def test_oip_theme_layout_keyboard_errors_and_dead_map(open_notebook):
    nb = open_notebook(
        "oip_view.ipynb",
        [
            "import cnnwidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "oip = cnnwidgets.OIPOptimizer(demo.model, 'features.7', channel=1, images=demo.images[:4],\n"
            "    mean=demo.mean, std=demo.std, classes=demo.classes, steps=200)\n"
            "oip.converge = True\n"
            "oip",
        ],
        viewport=(1400, 1100),
    )
    page = nb.page
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.wait_for_selector(f"{OIP} canvas.cnnw-oip-image", timeout=60_000)
    page.wait_for_function(f"() => document.querySelector('{OIP} .cnnw-chart svg') !== null", timeout=30_000)

    # controls in labelled sections; the layer picker says type and output shape
    legends = page.eval_on_selector_all(f"{OIP} .cnnw-section > legend, {OIP} .cnnw-section > summary",
                                        "els => els.map(e => e.textContent)")
    assert legends == ["objective", "start image", "regularizers", "run"]
    assert page.evaluate(f"() => document.querySelector('{OIP} details.cnnw-oip-regularizers').open") is False
    option = page.inner_text(f"{OIP} select.cnnw-layer option[value='features.6']")
    assert option == "features.6 · Conv2d 128x3x3"
    untitled = page.evaluate(f"""() => [...document.querySelectorAll('{OIP} input, {OIP} select, {OIP} button')]
        .filter(e => !e.closest('.cnnw-chart') && !e.title).map(e => e.className)""")
    assert untitled == []
    unmarked = page.evaluate(f"""() => [...document.querySelectorAll('{OIP} input, {OIP} select, {OIP} button')]
        .filter(e => !e.closest('.cnnw-chart') && !e.hasAttribute('data-needs-kernel')).map(e => e.className)""")
    assert unmarked == []

    # a dead map (channel 1 of the ReLU features.7, gray start): the view says so and what to try
    page.click(f"{OIP} button.cnnw-start")
    nb.wait_kernel("oip.running", False, timeout=60)
    _wait_attr(nb, OIP, "statusKind", "warning")
    text = page.inner_text(f"{OIP} .cnnw-oip-status")
    assert text.startswith("dead map: channel 1 of 'features.7'") and "'features.6' instead of 'features.7'" in text
    assert "multiscale" in text and "converged" not in text and "class probabilities" not in text
    assert page.evaluate(f"() => getComputedStyle(document.querySelector('{OIP} .cnnw-oip-status')).fontWeight") == "600"

    # the loss chart after a reset and a restart: tick labels on both axes, no invalid-format errors
    page.click(f"{OIP} button.cnnw-reset")
    nb.wait_kernel("oip.status", "reset")
    nb.kernel("oip.channel = 0")
    page.click(f"{OIP} button.cnnw-start")
    nb.wait_kernel("oip.running", False, timeout=60)
    page.wait_for_function(f"() => document.querySelectorAll('{OIP} .cnnw-chart g.axis .tick text').length > 4",
                           timeout=20_000)
    page.click(f"{OIP} button.cnnw-reset")
    nb.wait_kernel("oip.status", "reset")
    page.wait_for_timeout(800)
    ticks = page.eval_on_selector_all(f"{OIP} .cnnw-chart g.axis .tick text", "els => els.map(e => e.textContent)")
    assert len(ticks) > 4 and all(t and "NaN" not in t for t in ticks), ticks
    assert not [c for c in console if "invalid format" in c or "Error setting state" in c], console

    # Enter commits the steps field
    steps = page.locator(f"{OIP} input.cnnw-steps")
    steps.fill("55")
    steps.press("Enter")
    nb.wait_kernel("oip.steps", 55)

    # a rejected value shows its message next to the channel field, until the next valid change
    channel = page.locator(f"{OIP} input.cnnw-channel")
    channel.fill("500")
    channel.press("Enter")
    err = f"{OIP} .cnnw-channel-field .cnnw-control-error"
    page.wait_for_function(f"() => (document.querySelector('{err}')?.textContent || '').includes('0..127')", timeout=10_000)
    assert "500" in page.inner_text(err) and nb.kernel_json("oip.channel") == 0
    color = page.evaluate(f"() => getComputedStyle(document.querySelector('{err}')).color")
    assert color != page.evaluate(f"() => getComputedStyle(document.querySelector('{OIP} .cnnw-info')).color")
    channel.fill("3")
    channel.press("Enter")
    nb.wait_kernel("oip.channel", 3)
    page.wait_for_function(f"() => document.querySelector('{err}').hidden", timeout=10_000)

    # only the field of the chosen objective: class -> the class field (with its name), no channel field
    assert _visible(page, f"{OIP} .cnnw-channel-field") and not _visible(page, f"{OIP} .cnnw-class-field")
    page.select_option(f"{OIP} select.cnnw-objective", "class")
    nb.wait_kernel("oip.objective", "class")
    page.wait_for_function(f"() => document.querySelector('{OIP} .cnnw-channel-field').hidden", timeout=10_000)
    assert _visible(page, f"{OIP} .cnnw-class-field") and not _visible(page, f"{OIP} .cnnw-channel-field")
    nb.kernel("oip.class_index = 7")
    page.wait_for_function(f"() => document.querySelector('{OIP} .cnnw-class-name').textContent === '7'", timeout=10_000)
    page.select_option(f"{OIP} select.cnnw-objective", "channel")
    nb.wait_kernel("oip.objective", "channel")
    # the second setting of blur only while blur is on
    page.click(f"{OIP} details.cnnw-oip-regularizers > summary")
    assert not _visible(page, f"{OIP} .cnnw-blur-sigma-field")
    nb.kernel("oip.blur_every = 4")
    page.wait_for_function(f"() => !document.querySelector('{OIP} .cnnw-blur-sigma-field').hidden", timeout=10_000)

    # Tab reaches every visible control (the regularizers open)
    wanted = page.evaluate(f"""() => [...document.querySelectorAll('{OIP} input, {OIP} select, {OIP} button, {OIP} summary')]
        .filter(e => !e.disabled && !e.closest('[hidden]') && !e.closest('.cnnw-chart') && e.getBoundingClientRect().width > 0)
        .map((e, i) => (e.dataset.tabProbe = String(i)))""")
    page.locator(f"{OIP} select.cnnw-layer").focus()
    reached = set()
    for _ in range(len(wanted) + 5):
        probe = page.evaluate("() => document.activeElement?.dataset?.tabProbe ?? null")
        if probe is not None:
            reached.add(probe)
        page.keyboard.press("Tab")
    assert set(wanted) <= reached, sorted(set(wanted) - reached, key=int)

    # light theme: contrast, no white canvas; no overflow at 1,400 and 800 px
    report = nb.contrast_report(OIP)
    assert report["checked"] > 20 and report["failures"] == [] and report["white_canvases"] == [], report
    assert nb.overflow_report(OIP) == []
    box = page.evaluate(f"() => [document.querySelector('{OIP}').getBoundingClientRect().width, "
                        f"document.querySelector('{OIP} .cnnw-chart').getBoundingClientRect().width]")
    page.set_viewport_size({"width": 800, "height": 1100})
    page.wait_for_function(f"(w) => document.querySelector('{OIP}').getBoundingClientRect().width < w - 300",
                           arg=box[0], timeout=10_000)
    page.wait_for_timeout(600)
    assert nb.overflow_report(OIP) == []
    narrow = page.evaluate(f"""() => {{ const c = document.querySelector('{OIP} .cnnw-chart');
        const svg = c.querySelector('svg.svg-figure') || c.querySelector('svg');
        return [document.querySelector('{OIP}').getBoundingClientRect().width, c.getBoundingClientRect().width,
                svg.getBoundingClientRect().width]; }}""")
    assert narrow[2] <= narrow[1] + 1 and narrow[1] <= narrow[0] + 1, narrow  # the chart follows the width
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.wait_for_timeout(600)
    wide = page.evaluate(f"() => document.querySelector('{OIP} .cnnw-chart').getBoundingClientRect().width")
    assert wide > narrow[1] + 200, (wide, narrow)
    save_screenshot(page, OIP, "oip_optimizer")

    # dark theme: readable, no white canvas
    nb.set_theme("JupyterLab Dark")
    report = nb.contrast_report(OIP)
    assert report["checked"] > 20 and report["failures"] == [] and report["white_canvases"] == [], report
    axis_fill = page.evaluate(f"() => getComputedStyle(document.querySelector('{OIP} .cnnw-chart g.axis .tick text')).fill")
    assert axis_fill not in ("rgb(0, 0, 0)", "rgb(34, 34, 34)"), axis_fill
    save_screenshot(page, OIP, "oip_optimizer_dark")
    nb.set_theme("JupyterLab Light")
    assert not nb.errors, nb.errors
