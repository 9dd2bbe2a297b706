"""SaliencyViewer in JupyterLab + headless Chromium: pixels, colour scales, method/target/opacity,
the class chart (a click anywhere in a column), keyboard, errors next to the field, light and
dark theme, widths of 1,400 and 800 px, linking; and the exported page without a kernel."""

from __future__ import annotations

import numpy as np
import pytest

import cnnwidgets

from .conftest import save_screenshot

pytestmark = pytest.mark.browser

SV = ".cnnw-saliency-viewer"
EX = ".cnnw-activation-explorer"


# ---------------------------------------------------------------- helpers
def _np(nb, expr: str, name: str) -> np.ndarray:
    path = nb.lab["root"] / name
    nb.kernel(f"import numpy as _np; _np.save({str(path)!r}, {expr})")
    return np.load(path)


def _same(nb, selector: str, expected: np.ndarray) -> None:
    px = nb.canvas_pixels(selector)
    assert expected.shape[:2] == px.shape[:2], (selector, expected.shape, px.shape)
    diff = np.abs(px[..., :3].astype(int) - expected.astype(int))
    assert diff.max() == 0, f"{selector}: {(diff > 0).any(-1).sum()} of {px.shape[0] * px.shape[1]} pixels differ from Python"


def _scaled(img: np.ndarray, s: int) -> np.ndarray:
    img = np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    return img.repeat(s, axis=0).repeat(s, axis=1)


def _wait_attr(page, sel: str, attr: str, value: str, timeout=60_000):
    page.wait_for_function(
        "([s, a, v]) => document.querySelector(s)?.dataset[a] === v", arg=[sel, attr, value], timeout=timeout
    )


def _heat_matches(nb):
    _same(nb, f"{SV} canvas.cnnw-heat", _scaled(_np(nb, "sv.overlay_image()", "h.npy"), 224 // 28))


def _colorbar(page, selector):
    """What a colorbar shows: its exact ends (data-min/max), its tick texts and values, its title."""
    return page.evaluate(
        """(sel) => { const n = document.querySelector(sel); if (!n || n.hidden) return null;
          const tick = (k) => { const t = n.querySelector('.cnnw-tick-' + k);
            return t ? { text: t.textContent, value: Number(t.dataset.value) } : null; };
          return { min: Number(n.dataset.min), max: Number(n.dataset.max), lo: tick('min'), hi: tick('max'),
                   zero: tick('zero'), title: n.querySelector('.cnnw-colorbar-title').textContent }; }""",
        selector,
    )


def _format_tick(v: float) -> str:
    """lib/colorbar.js formatTick: 3 significant digits, exponent for tiny/huge values."""
    if v == 0:
        return "0"
    if abs(v) < 1e-3 or abs(v) >= 1e5:
        m, e = f"{v:.2e}".split("e")
        return f"{m}e{'+' if int(e) >= 0 else '-'}{abs(int(e))}"
    return repr(float(f"{v:.3g}")).removesuffix(".0")


def _check_heat_colorbar(nb):
    """The single map's colour scale: its labels are the Python side's min and max."""
    lo, hi = nb.kernel_json("list(sv.heat_range())")
    meta = nb.kernel_json("{k: sv._heat_meta[k] for k in ('value', 'mode')}")
    bar = _colorbar(nb.page, f"{SV} .cnnw-heat-colorbar")
    assert bar is not None, "no colour scale under the map"
    assert (bar["min"], bar["max"]) == (lo, hi)
    assert (bar["lo"]["value"], bar["hi"]["value"]) == (lo, hi)
    assert (bar["lo"]["text"], bar["hi"]["text"]) == (_format_tick(lo), _format_tick(hi))
    assert bar["title"] == meta["value"] and "attribution" in bar["title"]
    if meta["mode"] == "signed":
        assert lo == -hi and bar["zero"] == {"text": "0", "value": 0}
    else:
        assert lo == 0 and bar["zero"] is None
    return bar


SVG_TEXT_CONTRAST = """
(sel) => {
  const parse = (c) => {
    const srgb = /color\\(srgb ([^)]+)\\)/.exec(c || '');  // what color-mix() resolves to
    if (srgb) { const p = srgb[1].split(/[ \\/]+/).filter(Boolean).map(Number);
      return { r: 255 * p[0], g: 255 * p[1], b: 255 * p[2], a: p.length > 3 ? p[3] : 1 }; }
    const m = /rgba?\\(([^)]+)\\)/.exec(c || ''); if (!m) return null;
    const p = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number); return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 }; };
  const over = (t, b) => ({ r: t.r * t.a + b.r * (1 - t.a), g: t.g * t.a + b.g * (1 - t.a), b: t.b * t.a + b.b * (1 - t.a), a: 1 });
  const lum = (c) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b); };
  const bgOf = (el) => { const layers = [];
    for (let n = el; n; n = n.parentElement) { const c = parse(getComputedStyle(n).backgroundColor);
      if (c && c.a > 0) { layers.push(c); if (c.a >= 1) break; } }
    let bg = { r: 255, g: 255, b: 255, a: 1 }; for (let i = layers.length - 1; i >= 0; i--) bg = over(layers[i], bg); return bg; };
  const out = [];
  for (const t of document.querySelectorAll(sel)) {
    if (!t.textContent.trim() || t.getBoundingClientRect().width === 0) continue;
    const svg = t.closest('svg');
    const bg = bgOf(svg.parentElement);
    let op = 1; for (let n = t; n && n !== svg.parentElement; n = n.parentElement) op *= Number(getComputedStyle(n).opacity || 1);
    const fill = parse(getComputedStyle(t).fill); if (!fill) continue;
    const fg = over({ ...fill, a: fill.a * op }, bg);
    const x = lum(fg), y = lum(bg);
    out.push({ text: t.textContent.trim(), ratio: (Math.max(x, y) + 0.05) / (Math.min(x, y) + 0.05), fill: getComputedStyle(t).fill });
  }
  return out;
}
"""


def _chart_text_is_readable(page):
    """bqplot's own text (title, tick labels, axis labels): contrast >= 4.5 against the chart's background."""
    texts = page.evaluate(SVG_TEXT_CONTRAST, f"{SV} .cnnw-sv-chart svg text")
    assert len(texts) >= 12, texts  # the title, 10 class names, the probability ticks, axis labels
    bad = [t for t in texts if t["ratio"] < 4.5]
    assert bad == [], bad


def _theme_checks(nb):
    report = nb.contrast_report(SV)
    assert report["checked"] >= 8 and report["failures"] == [], report["failures"]
    assert report["white_canvases"] == [], report["white_canvases"]
    _chart_text_is_readable(nb.page)


# ---------------------------------------------------------------- the live view
def test_saliency_viewer_round_trips(open_notebook):
    nb = open_notebook(
        "saliency.ipynb",
        [
            "import cnnwidgets, ipywidgets\n"
            "demo = cnnwidgets.demo.mnist('val')\n"
            "sel = cnnwidgets.Selection()\n"
            "sv = cnnwidgets.SaliencyViewer(demo.model, demo.images, demo.labels, demo.classes,\n"
            "    selection=sel, mean=demo.mean, std=demo.std)\n"
            "ex = cnnwidgets.ActivationExplorer(demo.model, demo.images, demo.labels, demo.classes,\n"
            "    layer='features.0', selection=sel, mean=demo.mean, std=demo.std)\n"
            "ipywidgets.VBox([sv, ex])",
        ],
        viewport=(1400, 1500),
    )
    page = nb.page
    nb.set_theme("JupyterLab Light")  # the theme is a user setting: another session may have left it dark
    page.wait_for_selector(f"{SV} canvas.cnnw-heat", timeout=60_000)
    _wait_attr(page, SV, "heatIndex", "0")
    _heat_matches(nb)
    _check_heat_colorbar(nb)
    pred = nb.kernel_json("int(sv.probabilities(0).argmax())")
    assert page.get_attribute(SV, "data-heat-target") == str(pred)

    # the class chart (bqplot) inside the view: per class a full-height column and its bar
    page.wait_for_function(f"() => document.querySelectorAll('{SV} .cnnw-chart rect.bar').length === 20", timeout=30_000)
    assert page.locator(f"{SV} .cnnw-sv-chart svg.cnnw-static-chart").count() == 0  # the export's stand-in only
    title = nb.kernel_json("sv.chart.title")
    assert title == "image 0 \u00b7 click a class to explain it"
    page.wait_for_function(f"(t) => [...document.querySelectorAll('{SV} .cnnw-chart svg text')].some(e => e.textContent === t)",
                           arg=title, timeout=30_000)
    # the whole title is inside the chart's box (not cut at either side)
    inside = page.evaluate(f"""(t) => {{
        const box = document.querySelector('{SV} .cnnw-chart').getBoundingClientRect();
        const r = [...document.querySelectorAll('{SV} .cnnw-chart svg text')].find(e => e.textContent === t).getBoundingClientRect();
        return r.left >= box.left - 1 && r.right <= box.right + 1; }}""", title)
    assert inside
    # the layer menu says each layer's type and output shape; the method menu has one-line tooltips
    layer_texts = page.eval_on_selector_all(f"{SV} select.cnnw-layer option", "os => os.map(o => o.textContent)")
    assert "features.0 · Conv2d 32x26x26" in layer_texts
    tips = page.eval_on_selector_all(f"{SV} select.cnnw-method option", "os => os.map(o => o.title)")
    assert len(tips) == len(nb.kernel_json("list(sv.methods)")) == 18 and all(t and "\n" not in t for t in tips)
    _theme_checks(nb)  # light

    # method picker
    page.select_option(f"{SV} select.cnnw-method", "integrated_gradients")
    _wait_attr(page, SV, "heatMethod", "integrated_gradients")
    assert nb.kernel_json("sv.method") == "integrated_gradients"
    _heat_matches(nb)
    _check_heat_colorbar(nb)

    # a refused value: its message next to the field, in the error colour, until a valid one
    steps = page.locator(f"{SV} input.cnnw-steps")
    steps.fill("0")
    steps.press("Enter")
    err = page.locator(f"{SV} .cnnw-field:has(input.cnnw-steps) .cnnw-control-error")
    err.wait_for(state="visible", timeout=20_000)
    assert "steps must be in 1..1000, got 0" in err.inner_text()
    assert nb.kernel_json("sv.steps") == 50
    error_rgb = page.evaluate("(e) => getComputedStyle(e).color", err.element_handle())
    assert error_rgb != page.evaluate(f"() => getComputedStyle(document.querySelector('{SV}')).color")
    steps.fill("20")
    steps.press("Enter")  # Enter commits the number
    nb.wait_kernel("sv.steps", 20)
    err.wait_for(state="hidden", timeout=20_000)
    nb.kernel("sv.last_error = None")  # the refusal above was the one expected
    nb.wait_kernel("sv.busy", False, timeout=60)
    _heat_matches(nb)

    # target picker: explain class 3 instead of the predicted class
    page.select_option(f"{SV} select.cnnw-target", "3")
    _wait_attr(page, SV, "heatTarget", "3")
    assert nb.kernel_json("[sv.target, sel.target, [int(i) for i in sv._bars.selected]]") == [3, 3, [3]]
    _heat_matches(nb)

    # a bar near 0 % is clicked (a real mouse click in its column, above the bar): that class is explained
    low = nb.kernel_json("int(sv.probabilities().argmin())")
    assert nb.kernel_json(f"float(sv.probabilities()[{low}])") < 0.001
    box = page.locator(f"{SV} .cnnw-chart rect.bar").nth(low).bounding_box()  # the column (first mark)
    bar = page.locator(f"{SV} .cnnw-chart rect.bar").nth(10 + low).bounding_box()
    assert box["height"] > 100 and (bar is None or bar["height"] < 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    nb.wait_kernel("sv.target", low)
    _wait_attr(page, SV, "heatTarget", str(low))
    _heat_matches(nb)

    # signed: the diverging scale, with its zero tick
    page.select_option(f"{SV} select.cnnw-mode", "signed")
    nb.wait_kernel("sv._heat_meta['mode']", "signed", timeout=60)
    page.wait_for_function(f"() => !!document.querySelector('{SV} .cnnw-heat-colorbar .cnnw-tick-zero')", timeout=30_000)
    _heat_matches(nb)
    _check_heat_colorbar(nb)
    page.select_option(f"{SV} select.cnnw-mode", "abs")
    nb.wait_kernel("sv._heat_meta['mode']", "abs", timeout=60)
    page.wait_for_function(f"() => !document.querySelector('{SV} .cnnw-heat-colorbar .cnnw-tick-zero')", timeout=30_000)

    # opacity slider
    page.evaluate(
        f"() => {{ const s = document.querySelector('{SV} input.cnnw-opacity'); s.value = '0.3';"
        " s.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    nb.wait_kernel("sv.opacity", 0.3)
    page.wait_for_timeout(300)
    _heat_matches(nb)

    # a linked view picks the next image: the saliency map follows
    page.select_option(f"{SV} select.cnnw-target", "-1")
    nb.wait_kernel("sv.target", -1)
    page.click(f"{EX} button.cnnw-next")
    _wait_attr(page, SV, "heatIndex", "1")
    assert nb.kernel_json("[sv.index, sel.index, ex.index]") == [1, 1, 1]
    _heat_matches(nb)
    _check_heat_colorbar(nb)

    # keyboard: the stepper's slider takes the arrow keys (JupyterLab does not), Enter commits a number
    page.focus(f"{SV} input.cnnw-index")
    page.keyboard.press("ArrowRight")
    nb.wait_kernel("sv.index", 2)
    _wait_attr(page, SV, "heatIndex", "2")
    number = page.locator(f"{SV} input.cnnw-index-number")
    number.fill("5")
    number.press("Enter")
    nb.wait_kernel("sv.index", 5)
    _wait_attr(page, SV, "heatIndex", "5")
    _heat_matches(nb)
    assert page.evaluate("() => document.querySelectorAll('.jp-Cell.jp-mod-active').length") <= 1

    # Tab reaches every control of the view
    ids = page.evaluate(
        f"""() => {{ const root = document.querySelector('{SV}');
          const els = [...root.querySelectorAll('input, select, button, [tabindex]')].filter((e) => {{
            const r = e.getBoundingClientRect(); return r.width > 0 && !e.disabled && e.tabIndex >= 0 && !e.closest('[hidden]')
              && !e.closest('.bqplot'); }});  // bqplot's own hover toolbar (the target menu does what a bar click does)
          els.forEach((e, i) => e.setAttribute('data-tab-id', String(i))); return els.length; }}"""
    )
    assert ids >= 8
    page.focus(f"{SV} [data-tab-id='0']")
    seen = {page.evaluate("() => document.activeElement.getAttribute('data-tab-id')")}
    for _ in range(ids + 10):
        page.keyboard.press("Tab")
        seen.add(page.evaluate("() => document.activeElement.getAttribute('data-tab-id')"))
    missing = sorted(set(map(str, range(ids))) - seen)
    assert not missing, page.evaluate(
        "(ids) => ids.map(i => document.querySelector(`[data-tab-id='${i}']`).outerHTML.slice(0, 160))", missing)

    page.evaluate(
        f"() => {{ const s = document.querySelector('{SV} input.cnnw-opacity'); s.value = '0.8';"
        " s.dispatchEvent(new Event('input', {bubbles: true})); }"
    )
    nb.wait_kernel("sv.opacity", 0.8)

    # compare mode: several methods side by side for this image, each with its own colour scale
    page.select_option(f"{SV} select.cnnw-view", "compare")
    page.wait_for_function(
        f"() => document.querySelector('{SV}').dataset.panels === '6' && document.querySelector('{SV}').dataset.panelsKind === 'compare'",
        timeout=120_000,
    )
    methods = [e.get_attribute("data-method") for e in page.query_selector_all(f"{SV} .cnnw-panel-item")]
    assert methods == nb.kernel_json("list(sv.compare_methods)")
    # under each panel, what its method reported (the guided rule, the convergence delta, the layer)
    notes = [e.inner_text() for e in page.query_selector_all(f"{SV} .cnnw-panel-item .cnnw-panel-note")]
    assert notes == nb.kernel_json("[it['note'] for it in sv._panels_meta['items']]")
    assert "guided rule on" in notes[3] and notes[2].startswith("delta ")
    ranges = nb.kernel_json("[[it['vmin'], it['vmax'], it['value']] for it in sv._panels_meta['items']]")
    for k, (lo, hi, value) in enumerate(ranges):
        bar = _colorbar(page, f"{SV} .cnnw-panel-item:nth-child({k + 1}) .cnnw-panel-colorbar")
        assert (bar["min"], bar["max"], bar["title"]) == (lo, hi, value), k
        assert (bar["lo"]["text"], bar["hi"]["text"]) == (_format_tick(lo), _format_tick(hi))
    first = _np(nb, "sv.panel_overlay(0)", "p0.npy")
    _same(nb, f"{SV} .cnnw-panel-item canvas", _scaled(first, 112 // 28))
    # pixels differ between methods (the compare panels are not copies)
    second = _np(nb, "sv.panel_overlay(1)", "p1.npy")
    assert not np.array_equal(first, second)
    assert nb.overflow_report(SV) == []  # 1,400 px
    chart_wide = page.evaluate(f"() => document.querySelector('{SV} .cnnw-sv-chart svg').getBoundingClientRect().width")
    box_wide = page.evaluate(f"() => document.querySelector('{SV} .cnnw-sv-chart').clientWidth")
    _theme_checks(nb)
    save_screenshot(page, SV, "saliency_viewer")

    # dark theme: text readable, no white canvas, bqplot's text too
    nb.set_theme("JupyterLab Dark")
    _theme_checks(nb)
    save_screenshot(page, SV, "saliency_viewer_dark")
    nb.set_theme("JupyterLab Light")

    # 800 px: the panels wrap, the chart follows the width, nothing sticks out
    page.set_viewport_size({"width": 800, "height": 1500})
    page.wait_for_timeout(600)
    assert nb.overflow_report(SV) == []
    tops = page.eval_on_selector_all(f"{SV} .cnnw-panel-item", "els => els.map(e => Math.round(e.getBoundingClientRect().top))")
    assert len(set(tops)) >= 2, tops  # more than one row
    chart_narrow = page.evaluate(f"() => document.querySelector('{SV} .cnnw-sv-chart svg').getBoundingClientRect().width")
    box_w = page.evaluate(f"() => document.querySelector('{SV} .cnnw-sv-chart').clientWidth")
    # the chart fills its box at both widths (at 1,400 px it shares the row with the map and the
    # evidence; at 800 px the row wraps, so its box is not simply narrower)
    assert abs(chart_wide - box_wide) <= 2 and abs(chart_narrow - box_w) <= 2, (chart_wide, box_wide, chart_narrow, box_w)
    assert box_w <= 800
    page.set_viewport_size({"width": 1400, "height": 1500})
    assert nb.kernel_json("sv.last_error") is None
    assert not nb.errors, nb.errors

    # a method that fails shows its error on its own panel, in the error colour; the others are drawn
    nb.kernel(
        "import dataclasses, functools, cnnwidgets.core.saliency as _s\n"
        "_spec = _s.REGISTRY['smoothgrad']\n"
        "@functools.wraps(_spec.function)\n"
        "def _boom(*a, **k):\n"
        "    raise RuntimeError('boom in the page')\n"
        "_s.REGISTRY['smoothgrad'] = dataclasses.replace(_spec, function=_boom)\n"
        "sv.compare_methods = ['vanilla', 'smoothgrad', 'guided_backprop']"
    )
    try:
        page.wait_for_function(
            f"() => document.querySelector('{SV}').dataset.panels === '3' && document.querySelector('{SV}').dataset.panelsFailed === '1'",
            timeout=90_000,
        )
        errors = page.query_selector_all(f"{SV} .cnnw-panel-item[data-error='true']")
        assert [e.get_attribute("data-method") for e in errors] == ["smoothgrad"]
        assert "boom in the page" in errors[0].inner_text()
        assert page.locator(f"{SV} .cnnw-panel-item[data-method='smoothgrad'] .cnnw-panel-error.cnnw-wrong").count() == 1
        status = page.locator(f"{SV} .cnnw-status")
        assert "1 of 3 panels failed" in status.inner_text()
        assert "cnnw-wrong" in status.get_attribute("class")  # the status line reports a failure
        canvases = f"{SV} .cnnw-panel-item[data-method='smoothgrad'] canvas"
        _same(nb, canvases, _scaled(_np(nb, "sv.panel_overlay(1)", "p_err.npy"), 112 // 28))  # the image alone
        _same(nb, f"{SV} .cnnw-panel-item[data-method='guided_backprop'] canvas",
              _scaled(_np(nb, "sv.panel_overlay(2)", "p2.npy"), 112 // 28))
        assert page.locator(f"{SV} progress.cnnw-progress").evaluate("p => p.style.visibility") == "hidden"
        # the single map of the failing method: the error in the caption and the status, in the error colour
        page.select_option(f"{SV} select.cnnw-method", "smoothgrad")
        _wait_attr(page, SV, "heatError", "true")
        assert "boom in the page" in page.inner_text(f"{SV} .cnnw-heat-caption .cnnw-heat-error.cnnw-wrong")
        assert page.locator(f"{SV} .cnnw-heat-colorbar").is_hidden()  # no scale for a map not drawn
        _theme_checks(nb)
    finally:
        nb.kernel("_s.REGISTRY['smoothgrad'] = _spec")
    assert not nb.errors, nb.errors


# ---------------------------------------------------------------- the exported page
def test_saliency_export_shows_what_was_exported(browser, demo, tmp_path):
    """No kernel: the menus that would need one are hidden (so they cannot disagree with the
    picture), the stepper visits the exported images only, each with its colour scale."""
    sv = cnnwidgets.SaliencyViewer(demo.model, demo.images[:50], demo.labels[:50], demo.classes,
                                   method="integrated_gradients", mean=demo.mean, std=demo.std)
    sv.steps = 8
    path = sv.save_html(tmp_path / "saliency.html", images=[0, 3])
    want = {}
    for i in (0, 3):
        sv.index = i
        want[i] = (_scaled(sv.overlay_image(), 224 // 28), list(sv.heat_range()))
    sv.close()

    ctx = browser.new_context(offline=True, viewport={"width": 1000, "height": 1000})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function("() => document.body.dataset.ready === 'true'", timeout=30_000)
    _wait_attr(page, SV, "heatIndex", "0")
    assert page.locator(f"{SV}.cnnw-static .cnnw-static-note").is_visible()
    for sel in ("select.cnnw-method", "select.cnnw-layer", "select.cnnw-target", "select.cnnw-mode", "select.cnnw-view",
                "input.cnnw-steps", "button.cnnw-stop"):
        assert page.locator(f"{SV} {sel}").is_hidden(), sel
    assert "Integrated Gradients for class" in page.inner_text(f"{SV} .cnnw-heat-caption")  # what is shown
    for i in (0, 3):
        if i == 3:
            page.click(f"{SV} button.cnnw-next")
            _wait_attr(page, SV, "heatIndex", "3")
        px = page.evaluate(
            """(sel) => { const c = document.querySelector(sel);
              return {w: c.width, h: c.height, px: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)}; }""",
            f"{SV} canvas.cnnw-heat",
        )
        got = np.asarray(px["px"], np.uint8).reshape(px["h"], px["w"], 4)[..., :3]
        assert np.array_equal(got, want[i][0]), i
        bar = _colorbar(page, f"{SV} .cnnw-heat-colorbar")
        assert [bar["min"], bar["max"]] == want[i][1], i
    assert page.locator(f"{SV} button.cnnw-next").is_disabled()  # image 3 is the last one exported
    assert not errors, errors
    ctx.close()
