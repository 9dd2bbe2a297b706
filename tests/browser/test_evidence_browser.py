"""SaliencyViewer's evidence in JupyterLab + headless Chromium: the deletion and insertion curves
beside the map (their polylines are the Python side's curves, point by point; their areas are
Python's), the new method options (occlusion's window, LRP's rule), the randomization check, the
compare view's faithfulness table, the evidence switch, light and dark themes, 800 px; and the
exported page's curves without a kernel."""

from __future__ import annotations

import re

import numpy as np
import pytest

import cnnwidgets

from .conftest import save_screenshot

pytestmark = pytest.mark.browser

SV = ".cnnw-saliency-viewer"
EVIDENCE = f"{SV} .cnnw-sv-evidence-chart svg.cnnw-static-chart"
SANITY = f"{SV} .cnnw-sv-sanity-chart svg.cnnw-static-chart"
TABLE = f"{SV} .cnnw-sv-faithfulness table"


NOTEBOOK = [
    "import cnnwidgets\n"
    "d = cnnwidgets.demo.mnist('val')\n"
    "sv = cnnwidgets.SaliencyViewer(d.model, d.images[:8], d.labels[:8], d.classes, method='gradcam',\n"
    "    mean=d.mean, std=d.std)\n"
    "sv",
]


# ---------------------------------------------------------------- helpers
def _np(nb, expr: str, name: str) -> np.ndarray:
    path = nb.lab["root"] / name
    nb.kernel(f"import numpy as _np; _np.save({str(path)!r}, _np.asarray({expr}))")
    return np.load(path)


def _wait_attr(page, sel: str, attr: str, value: str, timeout=60_000):
    page.wait_for_function(
        "([s, a, v]) => document.querySelector(s)?.dataset[a] === v", arg=[sel, attr, value], timeout=timeout
    )


def _points(text: str) -> np.ndarray:
    """A polyline's ``points`` attribute as an (n, 2) array."""
    return np.array([[float(v) for v in p.split(",")] for p in text.split()], np.float64).reshape(-1, 2)


def _expected_points(plot: dict, xs: np.ndarray, ys: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Where lib/charts.js curveChart puts the points in the plot drawn between the chart's axes
    (``plot``: left, right, top, bottom): x from the first to the last x across the x axis, y from
    ``hi`` at the top of the y axis to ``lo`` at the x axis (in float64 from the float32 values, as
    the page reads a Float32Array; the page writes them to 2 decimals)."""
    xs = np.asarray(xs, np.float32).astype(np.float64)
    ys = np.asarray(ys, np.float32).astype(np.float64)
    x = plot["left"] + (plot["right"] - plot["left"]) * (xs - xs[0]) / (xs[-1] - xs[0])
    y = plot["top"] + (plot["bottom"] - plot["top"]) * (hi - ys) / (hi - lo)
    return np.stack([x, y], axis=1)


def _chart(page, sel: str):
    return page.evaluate(
        """(sel) => { const svg = document.querySelector(sel); if (!svg) return null;
          const lines = [...svg.querySelectorAll('polyline')].map((p) => ({ cls: p.getAttribute('class'),
            points: p.getAttribute('points') }));
          // the plot's box, from the axes drawn: the y axis (x1 = x2) and the x axis (y1 = y2)
          const axes = [...svg.querySelectorAll('line.cnnw-axis')].map((l) => ['x1', 'x2', 'y1', 'y2'].map(
            (k) => Number(l.getAttribute(k))));
          const y = axes.find(([x1, x2]) => x1 === x2), x = axes.find(([, , y1, y2]) => y1 === y2);
          const plot = x && y ? { left: x[0], right: x[1], top: y[2], bottom: y[3], axisLeft: y[0], axisY: x[2],
                                  width: svg.viewBox.baseVal.width, height: svg.viewBox.baseVal.height } : null;
          return { points: svg.dataset.points, series: svg.dataset.series, deletion: svg.dataset.deletionAuc,
                   insertion: svg.dataset.insertionAuc, lines, plot }; }""",
        sel,
    )


def _plot(chart: dict) -> dict:
    """The plot's box between the axes, checked: the axes meet at its bottom left corner and it
    lies inside the chart with room for the tick labels."""
    p = chart["plot"]
    assert p is not None, "the chart has no axes"
    assert p["axisLeft"] == p["left"] and p["axisY"] == p["bottom"], p
    assert 20 <= p["left"] < p["right"] <= p["width"] - 10 and 20 <= p["top"] < p["bottom"] <= p["height"] - 20, p
    return p


def _same_points(got: str, want: np.ndarray, what: str) -> None:
    pts = _points(got)
    assert pts.shape == want.shape, (what, pts.shape, want.shape)
    err = np.abs(pts - want).max()
    assert err <= 0.0051, f"{what}: a point is {err:.3f} px from Python's curve"  # toFixed(2)


def _check_evidence(nb) -> dict:
    """The chart beside the map is the Python side's deletion and insertion curves, point by
    point, for the map shown; its areas (on the chart and on the root) are Python's."""
    page = nb.page
    meta = nb.kernel_json("{k: v for k, v in sv._evidence_meta.items() if k != 'error'}")
    heat = nb.kernel_json("{k: sv._heat_meta[k] for k in ('index', 'method', 'target')}")
    assert meta["state"] == "done" and {k: meta[k] for k in heat} == heat, (meta, heat)
    ev = _np(nb, "sv._evidence", "evidence.npy")
    steps = nb.kernel_json("sv.evidence_steps")
    assert ev.shape == (3, steps + 1) and ev.dtype == np.float32
    root = page.locator(SV)
    assert root.get_attribute("data-evidence-state") == "done"
    # the areas: the exact numbers Python computed (JS prints the shortest repr of the double)
    assert float(root.get_attribute("data-deletion-auc")) == meta["deletion_auc"]
    assert float(root.get_attribute("data-insertion-auc")) == meta["insertion_auc"]
    chart = _chart(page, EVIDENCE)
    assert chart is not None, "no evidence chart beside the map"
    assert (float(chart["deletion"]), float(chart["insertion"])) == (meta["deletion_auc"], meta["insertion_auc"])
    assert chart["points"] == str(steps + 1) and chart["series"] == "2"
    lines = {c["cls"]: c["points"] for c in chart["lines"]}
    assert set(lines) == {"cnnw-line cnnw-line-deletion", "cnnw-line cnnw-line-insertion"}, lines
    plot = _plot(chart)
    _same_points(lines["cnnw-line cnnw-line-deletion"], _expected_points(plot, ev[0], ev[1], 0, 1), "deletion")
    _same_points(lines["cnnw-line cnnw-line-insertion"], _expected_points(plot, ev[0], ev[2], 0, 1), "insertion")
    # the deletion curve ends at the right end of the x axis, at the probability with every
    # pixel removed (the baseline's): 0 on the x axis, 1 at the top of the y axis
    last = _points(lines["cnnw-line cnnw-line-deletion"])[-1]
    assert abs(last[0] - plot["right"]) <= 0.0051
    assert abs(last[1] - (plot["bottom"] - (plot["bottom"] - plot["top"]) * float(ev[1, -1]))) <= 0.0051
    # and the line under the chart says the same areas
    text = page.inner_text(f"{SV} .cnnw-sv-evidence-text")
    assert f"deletion AUC {meta['deletion_auc']:.3f}" in text and f"insertion AUC {meta['insertion_auc']:.3f}" in text
    return meta


def _rgb(css: str) -> tuple[float, float, float]:
    s = re.match(r"color\(srgb ([^)]+)\)", css)
    if s:
        return tuple(255 * float(v) for v in s.group(1).replace("/", " ").split()[:3])
    m = re.match(r"rgba?\(([^)]+)\)", css)
    assert m, css
    return tuple(float(v) for v in m.group(1).replace("/", " ").replace(",", " ").split()[:3])


def _ratio(a, b) -> float:
    def lum(c):
        f = [(v / 255) / 12.92 if v / 255 <= 0.03928 else ((v / 255 + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * f[0] + 0.7152 * f[1] + 0.0722 * f[2]

    x, y = lum(a), lum(b)
    return (max(x, y) + 0.05) / (min(x, y) + 0.05)


LINES_JS = """
(sel) => [...document.querySelectorAll(sel + ' polyline')].map((p) => {
  const st = getComputedStyle(p); const r = p.getBoundingClientRect();
  let bg = null;
  for (let n = p.closest('svg'); n && !bg; n = n.parentElement) {
    const c = getComputedStyle(n).backgroundColor;
    if (c && c !== 'transparent' && !/rgba\\([^)]*,\\s*0\\)$/.test(c)) bg = c;
  }
  return { cls: p.getAttribute('class'), stroke: st.stroke, width: parseFloat(st.strokeWidth), fill: st.fill,
           opacity: Number(st.opacity), display: st.display, w: r.width, h: r.height, bg };
})
"""


CLIPPED_JS = """
(sel) => { const svg = document.querySelector(sel); const box = svg.getBoundingClientRect();
  return [...svg.querySelectorAll('text')].filter((t) => t.textContent.trim()).map((t) => {
    const r = t.getBoundingClientRect();
    return { text: t.textContent, left: r.left - box.left, right: box.right - r.right, top: r.top - box.top,
             bottom: box.bottom - r.bottom }; })
   .filter((r) => Math.min(r.left, r.right, r.top, r.bottom) < -0.5); }
"""


def _nothing_clipped_page(page, sel: str) -> None:
    """Every text of the chart (title, ticks, legend, axis labels) is inside its SVG box: an SVG
    cuts off what sticks out, so "100%" would read "100"."""
    assert page.evaluate(CLIPPED_JS, sel) == [], sel


def _nothing_clipped(nb, sel: str) -> None:
    _nothing_clipped_page(nb.page, sel)


def _lines_visible(nb, sel: str, n: int) -> None:
    """Every polyline of the chart is drawn (a stroke, no fill) in a colour that stands out from
    the chart's background: at least 3:1, WCAG's contrast for graphical objects."""
    lines = nb.page.evaluate(LINES_JS, sel)
    assert len(lines) == n, lines
    for line in lines:
        assert line["display"] != "none" and line["opacity"] == 1 and line["width"] >= 1, line
        assert line["w"] > 50, line  # spread over the plot, not collapsed
        assert line["fill"] in ("none", "rgba(0, 0, 0, 0)"), line
        q = _ratio(_rgb(line["stroke"]), _rgb(line["bg"]))
        assert q >= 3, f"{line['cls']}: stroke {line['stroke']} on {line['bg']}: contrast {q:.2f}"


def _theme_checks(nb, tag: str) -> None:
    report = nb.contrast_report(SV)
    assert report["checked"] >= 30 and report["failures"] == [], (tag, report["failures"])
    assert report["white_canvases"] == [], (tag, report["white_canvases"])
    # the evidence chart's own text (title, ticks, legend, axis labels) is among what was checked
    texts = nb.page.eval_on_selector_all(f"{EVIDENCE} text", "ts => ts.map(t => t.textContent)")
    assert any(t.startswith("deletion (AUC") for t in texts) and "probability" in texts, texts
    _lines_visible(nb, EVIDENCE, 2)  # deletion and insertion
    _nothing_clipped(nb, EVIDENCE)
    _nothing_clipped(nb, SANITY)


def _settle(nb, method: str) -> dict:
    """Wait until the map of ``method`` and its evidence are done in Python and shown by the
    page; then check the chart against Python's curves. Returns ``_evidence_meta``."""
    nb.wait_kernel("sv.method", method)
    nb.kernel("sv.wait()")  # the map, then its curves (the evidence worker runs after the map's)
    nb.wait_kernel("[sv._evidence_meta.get('state'), sv._evidence_meta.get('method')]", ["done", method], timeout=90)
    _wait_attr(nb.page, SV, "heatMethod", method)
    _wait_attr(nb.page, SV, "evidenceState", "done")
    auc = nb.kernel_json("sv._evidence_meta['deletion_auc']")
    nb.page.wait_for_function("([s, v]) => Number(document.querySelector(s).dataset.deletionAuc) === v",
                              arg=[SV, auc], timeout=30_000)
    return _check_evidence(nb)


# ---------------------------------------------------------------- the live view
def test_evidence_curves_methods_sanity_and_table(open_notebook):
    nb = open_notebook("evidence.ipynb", NOTEBOOK, viewport=(1400, 1400))
    page = nb.page
    nb.set_theme("JupyterLab Light")  # a user setting: another run may have left it dark
    page.wait_for_selector(EVIDENCE, timeout=90_000)

    # 1. Grad-CAM's map: its deletion and insertion curves, point by point
    gradcam = _settle(nb, "gradcam")
    assert page.locator(f"{SV} input.cnnw-evidence-toggle").is_checked()
    # the method menu is the core's list: 18 methods, the CAM family, occlusion and LRP among them
    options = page.eval_on_selector_all(f"{SV} select.cnnw-method option", "os => os.map(o => o.value)")
    assert options == nb.kernel_json("list(sv.methods)") and len(options) == 18
    assert {"gradcam_plus_plus", "xgradcam", "hirescam", "layercam", "scorecam", "eigencam", "ablationcam",
            "occlusion", "lrp"} <= set(options)
    assert page.locator(f"{SV} input.cnnw-window").is_hidden() and page.locator(f"{SV} select.cnnw-lrp-rule").is_hidden()

    # 2. occlusion, chosen in the page: Python follows, the chart shows occlusion's curves
    page.select_option(f"{SV} select.cnnw-method", "occlusion")
    occlusion = _settle(nb, "occlusion")
    assert occlusion["deletion_auc"] != gradcam["deletion_auc"]
    assert page.locator(f"{SV} input.cnnw-window").is_visible() and page.locator(f"{SV} input.cnnw-stride").is_visible()
    assert page.locator(f"{SV} select.cnnw-lrp-rule").is_hidden()
    # its window from the page (Enter commits); stride 0 stands for half the window
    assert nb.kernel_json("list(sv.occlusion_window())") == [4, 2]
    window = page.locator(f"{SV} input.cnnw-window")
    window.fill("7")
    window.press("Enter")
    nb.wait_kernel("[sv.window, list(sv.occlusion_window())]", [7, [7, 3]])
    wider = _settle(nb, "occlusion")
    assert wider["deletion_auc"] != occlusion["deletion_auc"]  # another map, other curves
    # a refused window: the message next to the field, Python's value unchanged
    window.fill("99")
    window.press("Enter")
    err = page.locator(f"{SV} .cnnw-field:has(input.cnnw-window) .cnnw-control-error")
    err.wait_for(state="visible", timeout=20_000)
    assert "window must be in 0..28, got 99" in err.inner_text()
    assert nb.kernel_json("sv.window") == 7
    window.fill("0")
    window.press("Enter")
    nb.wait_kernel("sv.window", 0)
    err.wait_for(state="hidden", timeout=20_000)
    nb.kernel("sv.last_error = None")  # the refusal above was the one expected

    # 3. LRP and its rule, from the page
    page.select_option(f"{SV} select.cnnw-method", "lrp")
    _settle(nb, "lrp")
    rule = page.locator(f"{SV} select.cnnw-lrp-rule")
    assert rule.is_visible() and page.locator(f"{SV} input.cnnw-window").is_hidden()
    assert rule.input_value() == "epsilon"
    rule.select_option("gamma")
    nb.wait_kernel("sv.lrp_rule", "gamma")
    _settle(nb, "lrp")

    # 4. the randomization check of the map shown (Grad-CAM again)
    page.select_option(f"{SV} select.cnnw-method", "gradcam")
    assert _settle(nb, "gradcam")["deletion_auc"] == gradcam["deletion_auc"]  # the same map, the same curves
    page.click(f"{SV} button.cnnw-sanity-run")
    nb.wait_kernel("sv._sanity_meta.get('state')", "done", timeout=90)
    _wait_attr(page, SV, "sanityState", "done")
    rho = _np(nb, "sv._sanity", "sanity.npy")
    layers = nb.kernel_json("sv._sanity_meta['layers']")
    assert len(layers) == len(rho) >= 2
    page.wait_for_selector(SANITY, timeout=30_000)
    chart = _chart(page, SANITY)
    assert chart["points"] == str(len(rho)) and chart["series"] == "1" and len(chart["lines"]) == 1
    _same_points(chart["lines"][0]["points"], _expected_points(_plot(chart), np.arange(1, len(rho) + 1), rho, -1, 1), "sanity")
    assert float(page.get_attribute(SV, "data-sanity-last")) == float(rho[-1])
    assert f"with all {len(rho)} layers randomized" in page.inner_text(f"{SV} .cnnw-sv-sanity-text")
    _lines_visible(nb, SANITY, 1)

    # 5. compare view, from the page: one row per method, the best areas in bold
    page.select_option(f"{SV} select.cnnw-view", "compare")
    nb.wait_kernel("sv.view", "compare")
    nb.kernel("sv.wait()")
    items = nb.kernel_json("[{k: it.get(k) for k in ('method', 'deletion_auc', 'insertion_auc', 'error')}"
                           " for it in sv._panels_meta['items']]")
    rated = [it for it in items if it["deletion_auc"] is not None and not it["error"]]
    assert [it["method"] for it in items] == nb.kernel_json("list(sv.compare_methods)")
    assert len(rated) == len(items) == 6  # every default compare method explains a class
    _wait_attr(page, SV, "tableRows", str(len(rated)), timeout=60_000)
    rows = page.eval_on_selector_all(
        f"{TABLE} tbody tr",
        "trs => trs.map(tr => ({ method: tr.dataset.method, cells: [...tr.querySelectorAll('td')].map(td => td.textContent),"
        " best: [...tr.querySelectorAll('td')].map(td => td.classList.contains('cnnw-best')) }))")
    assert [r["method"] for r in rows] == [it["method"] for it in rated]
    low = min(it["deletion_auc"] for it in rated)
    high = max(it["insertion_auc"] for it in rated)
    for r, it in zip(rows, rated):
        assert r["cells"] == [f"{it['deletion_auc']:.3f}", f"{it['insertion_auc']:.3f}"], (r, it)
        assert r["best"] == [it["deletion_auc"] == low, it["insertion_auc"] == high], (r, it)
    best = page.eval_on_selector_all(f"{TABLE} td.cnnw-best", "tds => tds.map(td => td.closest('tr').dataset.method)")
    assert sorted(best) == sorted([it["method"] for it in rated if it["deletion_auc"] == low]
                                  + [it["method"] for it in rated if it["insertion_auc"] == high])
    assert page.evaluate(f"() => getComputedStyle(document.querySelector('{TABLE} td.cnnw-best')).fontWeight") == "700"
    _check_evidence(nb)  # the single map's chart stays beside it

    # 6. themes: every text readable (the chart's and the table's too), the curves stand out
    _theme_checks(nb, "light")
    save_screenshot(page, SV, "saliency_evidence")
    nb.set_theme("JupyterLab Dark")
    _theme_checks(nb, "dark")
    _lines_visible(nb, SANITY, 1)
    save_screenshot(page, SV, "saliency_evidence_dark")
    nb.set_theme("JupyterLab Light")

    # 7. 800 px: nothing sticks out of the view or its cell
    assert nb.overflow_report(SV) == []
    page.set_viewport_size({"width": 800, "height": 1400})
    page.wait_for_function("() => window.innerWidth === 800", timeout=10_000)
    page.wait_for_timeout(600)
    assert nb.overflow_report(SV) == []
    chart_right = page.evaluate(f"() => document.querySelector('{EVIDENCE}').getBoundingClientRect().right")
    view_right = page.evaluate(f"() => document.querySelector('{SV}').getBoundingClientRect().right")
    assert chart_right <= view_right + 1
    page.set_viewport_size({"width": 1400, "height": 1400})

    # 8. evidence off from the page: Python follows, the chart and the table go; on again: back
    page.locator(f"{SV} input.cnnw-evidence-toggle").uncheck()
    nb.wait_kernel("sv.evidence", False)
    _wait_attr(page, SV, "evidenceState", "off")
    assert page.locator(f"{SV} .cnnw-sv-evidence-chart svg").count() == 0
    assert page.inner_text(f"{SV} .cnnw-sv-evidence-text") == "evidence is off"
    nb.kernel("sv.wait()")
    page.wait_for_function(f"() => !document.querySelector('{TABLE}') && !('tableRows' in document.querySelector('{SV}').dataset)",
                           timeout=30_000)
    page.locator(f"{SV} input.cnnw-evidence-toggle").check()
    nb.wait_kernel("sv.evidence", True)
    _settle(nb, "gradcam")
    assert nb.kernel_json("sv.last_error") is None
    assert not nb.errors, nb.errors


# ---------------------------------------------------------------- the exported page
def test_evidence_in_exported_page(browser, tmp_path):
    """No kernel: the page shows the curves exported with each image, point by point; the
    switch and the randomization button (which need a kernel) are hidden."""
    d = cnnwidgets.demo.mnist("val")
    sv = cnnwidgets.SaliencyViewer(d.model, d.images[:8], d.labels[:8], d.classes, method="gradcam",
                                   mean=d.mean, std=d.std)
    path = sv.save_html(tmp_path / "evidence.html", images=[0, 3])
    want = {}
    for i in (0, 3):
        sv.index = i
        sv.wait()
        assert sv._evidence_meta["state"] == "done" and sv._evidence_meta["index"] == i
        want[i] = (np.array(sv._evidence), dict(sv._evidence_meta))
    sv.close()
    assert want[0][1]["deletion_auc"] != want[3][1]["deletion_auc"]

    ctx = browser.new_context(offline=True, viewport={"width": 1200, "height": 1000})
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function("() => document.body.dataset.ready === 'true'", timeout=30_000)
    for i in (0, 3):
        if i == 3:
            page.click(f"{SV} button.cnnw-next")
        _wait_attr(page, SV, "heatIndex", str(i))
        _wait_attr(page, SV, "evidenceState", "done")
        ev, meta = want[i]
        assert float(page.get_attribute(SV, "data-deletion-auc")) == meta["deletion_auc"], i
        assert float(page.get_attribute(SV, "data-insertion-auc")) == meta["insertion_auc"], i
        chart = _chart(page, EVIDENCE)
        assert chart["points"] == str(ev.shape[1])
        lines = {c["cls"]: c["points"] for c in chart["lines"]}
        plot = _plot(chart)
        _same_points(lines["cnnw-line cnnw-line-deletion"], _expected_points(plot, ev[0], ev[1], 0, 1), f"deletion {i}")
        _same_points(lines["cnnw-line cnnw-line-insertion"], _expected_points(plot, ev[0], ev[2], 0, 1), f"insertion {i}")
        _nothing_clipped_page(page, EVIDENCE)
    for sel in ("input.cnnw-evidence-toggle", "button.cnnw-sanity-run"):
        assert page.locator(f"{SV} {sel}").is_hidden(), sel
    assert not errors, errors
    ctx.close()
