"""What marimo needs from the views, in plain Python (the page side: tests/browser/test_marimo_browser.py).

marimo renders anywidget views but no ipywidgets boxes and no child widgets: the Explorer shows
itself through ``_display_``, and OIPOptimizer syncs its loss curve (``_curve``) for the page
to draw where the bqplot chart cannot be rendered.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from cnnwidgets import Explorer, OIPOptimizer
from cnnwidgets.widgets.explorer import VIEWS

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread

marimo = pytest.importorskip("marimo")


@pytest.fixture
def marimo_formatters(monkeypatch):
    """marimo's formatter of anywidget views, as a marimo kernel registers it (restored after
    the test: the registry is global)."""
    from marimo._output import formatting
    from marimo._output.formatters.anywidget_formatters import AnyWidgetFormatter

    monkeypatch.setattr(formatting.FORMATTERS, "formatters", dict(formatting.FORMATTERS.formatters))
    AnyWidgetFormatter().register()


def _widget_ids(html: str) -> list[str]:
    """The model ids of the anywidget elements in marimo's HTML, in page order."""
    return re.findall(r"<marimo-anywidget data-initial-value='\{&quot;model_id&quot;:&quot;(\w+)&quot;", html)


def test_explorer_displays_every_view_in_marimo(demo, marimo_formatters):
    ex = Explorer(demo.model, demo.images[:20], demo.labels[:20], demo.classes, mean=demo.mean, std=demo.std,
                  tsne_images=20)
    try:
        shown = ex._display_()
        assert isinstance(shown, marimo.Html)
        html = shown.text
        # the Selection's line first, then every view, each an anywidget element of its own
        assert _widget_ids(html) == [w._model_id for w in (ex.selection, *ex.views)]
        assert len(ex.views) == len(VIEWS)
        for spec in VIEWS:
            assert f">{spec.title}</h3>" in html
        # one marimo element per widget, however often the dashboard is shown (a view's
        # comm answers one element)
        ids = re.findall(r"<marimo-ui-element object-id='([^']+)'", html)
        assert re.findall(r"<marimo-ui-element object-id='([^']+)'", ex._display_().text) == ids
    finally:
        ex.close()


def test_explorer_display_follows_views(demo, marimo_formatters):
    ex = Explorer(demo.model, demo.images[:8], views=["optimizer", "filters"])
    try:
        assert _widget_ids(ex._display_().text) == [ex.selection._model_id, ex.optimizer._model_id,
                                                     ex.filters._model_id]
    finally:
        ex.close()


@pytest.fixture
def oip(demo):
    w = OIPOptimizer(demo.model, "features.3", channel=1, images=demo.images[:1], mean=demo.mean, std=demo.std)
    yield w
    w.close()


def test_curve_is_synced_and_empty_before_a_run(oip):
    assert "_curve" in oip.keys
    assert oip._curve.dtype == np.float32 and oip._curve.shape == (2, 0)
    state = oip.get_state(["_curve"])["_curve"]
    assert state["dtype"] == "float32" and state["shape"] == [2, 0]


def test_curve_grows_during_run_as_the_chart_does(oip, monkeypatch):
    # every step reaches the page (no throttling): the curve the page draws at each update
    monkeypatch.setattr(OIPOptimizer, "MAX_UPDATES_PER_SECOND", 1e9)
    monkeypatch.setattr(OIPOptimizer, "CURVE_UPDATES_PER_SECOND", 1e9)
    seen: list[np.ndarray] = []
    oip.observe(lambda change: seen.append(change["new"].copy()), "_curve")
    oip.run(steps=15)
    lengths = [c.shape[1] for c in seen]
    assert lengths == [*range(1, 16), 15]  # one more point per step, then the final curve
    hist = np.asarray(oip.history, np.float32)
    for c in seen:
        n = c.shape[1]
        np.testing.assert_array_equal(c[0], np.arange(1, n + 1, dtype=np.float32))
        np.testing.assert_array_equal(c[1], hist[:n])
    # and it is the bqplot line, point for point
    np.testing.assert_array_equal(oip._curve, np.stack([oip._line.x, oip._line.y]).astype(np.float32))


def test_curve_updates_are_throttled(oip, monkeypatch):
    monkeypatch.setattr(OIPOptimizer, "MAX_UPDATES_PER_SECOND", 1e9)
    times: list[float] = []
    oip.observe(lambda _change: times.append(time.perf_counter()), "_curve")
    t0 = time.perf_counter()
    oip.run(steps=400)
    elapsed = time.perf_counter() - t0
    # at most CURVE_UPDATES_PER_SECOND live updates (the first at once), plus the final curve
    assert len(times) <= elapsed * OIPOptimizer.CURVE_UPDATES_PER_SECOND + 2
    assert oip._curve.shape == (2, 400)


def test_long_curve_keeps_evenly_spaced_steps_and_the_last(oip, monkeypatch):
    monkeypatch.setattr(OIPOptimizer, "CURVE_POINTS", 10)
    oip.run(steps=25)
    steps, values = oip._curve
    assert len(steps) == 10 and steps[0] == 1 and steps[-1] == 25
    hist = np.asarray(oip.history, np.float32)
    np.testing.assert_array_equal(values, hist[steps.astype(int) - 1])


def test_reset_empties_the_curve(oip):
    oip.run(steps=5)
    assert oip._curve.shape == (2, 5)
    oip.reset()
    assert oip._curve.shape == (2, 0)
