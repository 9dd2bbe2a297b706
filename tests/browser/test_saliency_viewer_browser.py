"""SaliencyViewer in JupyterLab + headless Chromium: pixels, method/target/opacity, chart, linking."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import DOCS
from .test_activation_explorer_browser import _np, _same, _scaled, _wait_attr

pytestmark = pytest.mark.browser

SV = ".cnnw-saliency-viewer"
EX = ".cnnw-activation-explorer"


def _heat_matches(nb):
    _same(nb, f"{SV} canvas.cnnw-heat", _scaled(_np(nb, "sv.overlay_image()", "h.npy"), 224 // 28))


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
    page.wait_for_selector(f"{SV} canvas.cnnw-heat", timeout=60_000)
    _wait_attr(nb, SV, "heatIndex", "0")
    _heat_matches(nb)
    pred = nb.kernel_json("int(sv.probabilities(0).argmax())")
    assert page.get_attribute(SV, "data-heat-target") == str(pred)

    # the probability chart (bqplot) is rendered inside the view, one bar per class
    page.wait_for_function(f"() => document.querySelectorAll('{SV} .cnnw-chart rect.bar').length === 10", timeout=30_000)
    assert page.locator(f"{SV} .cnnw-chart svg.cnnw-static-chart").count() == 0  # the export's stand-in only

    # method picker
    page.select_option(f"{SV} select.cnnw-method", "integrated_gradients")
    _wait_attr(nb, SV, "heatMethod", "integrated_gradients")
    assert nb.kernel_json("sv.method") == "integrated_gradients"
    _heat_matches(nb)

    # target picker: explain class 3 instead of the predicted class
    page.select_option(f"{SV} select.cnnw-target", "3")
    _wait_attr(nb, SV, "heatTarget", "3")
    assert nb.kernel_json("[sv.target, sel.target, [int(i) for i in sv._bars.selected]]") == [3, 3, [3]]
    _heat_matches(nb)

    # clicking a bar of the chart explains that class
    # (a 0% bar has no height to click on, so the event is dispatched to it)
    page.locator(f"{SV} .cnnw-chart rect.bar").nth(7).dispatch_event("click")
    nb.wait_kernel("sv.target", 7)
    _wait_attr(nb, SV, "heatTarget", "7")
    _heat_matches(nb)

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
    _wait_attr(nb, SV, "heatIndex", "1")
    assert nb.kernel_json("[sv.index, sel.index, ex.index]") == [1, 1, 1]
    _heat_matches(nb)

    # compare mode: several methods side by side for this image
    page.select_option(f"{SV} select.cnnw-view", "compare")
    page.wait_for_function(
        f"() => document.querySelector('{SV}').dataset.panels === '6' && document.querySelector('{SV}').dataset.panelsKind === 'compare'",
        timeout=90_000,
    )
    methods = [e.get_attribute("data-method") for e in page.query_selector_all(f"{SV} .cnnw-panel-item")]
    assert methods == nb.kernel_json("list(sv.compare_methods)")
    # under each panel, what its method reported (the guided rule, the convergence delta, the layer)
    notes = [e.inner_text() for e in page.query_selector_all(f"{SV} .cnnw-panel-item .cnnw-panel-note")]
    assert notes == nb.kernel_json("[it['note'] for it in sv._panels_meta['items']]")
    assert "guided rule on" in notes[3] and notes[2].startswith("delta ")
    first = _np(nb, "sv.panel_overlay(0)", "p0.npy")
    _same(nb, f"{SV} .cnnw-panel-item canvas", _scaled(first, 112 // 28))
    DOCS.mkdir(exist_ok=True)
    page.locator(SV).screenshot(path=str(DOCS / "saliency_viewer.png"))
    assert nb.kernel_json("sv.last_error") is None
    assert not nb.errors, nb.errors
    # pixels differ between methods (the compare panels are not copies)
    second = _np(nb, "sv.panel_overlay(1)", "p1.npy")
    assert not np.array_equal(first, second)

    # a method that fails shows its error on its own panel; the others are drawn
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
        assert "1 of 3 panels failed" in page.inner_text(f"{SV} .cnnw-status")
        canvases = f"{SV} .cnnw-panel-item[data-method='smoothgrad'] canvas"
        _same(nb, canvases, _scaled(_np(nb, "sv.panel_overlay(1)", "p_err.npy"), 112 // 28))  # the image alone
        _same(nb, f"{SV} .cnnw-panel-item[data-method='guided_backprop'] canvas",
              _scaled(_np(nb, "sv.panel_overlay(2)", "p2.npy"), 112 // 28))
        assert page.locator(f"{SV} progress.cnnw-progress").evaluate("p => p.style.visibility") == "hidden"
    finally:
        nb.kernel("_s.REGISTRY['smoothgrad'] = _spec")
    assert not nb.errors, nb.errors
