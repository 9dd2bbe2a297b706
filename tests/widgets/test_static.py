"""The static picture each view carries beside its widget in a display (cnnwidgets.widgets._static):
what a saved notebook shows where no widget can render."""

from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

import cnnwidgets
from cnnwidgets.widgets import _static

WIDGET = "application/vnd.jupyter.widget-view+json"


def _data(view) -> dict:
    bundle = view._repr_mimebundle_()
    return bundle[0] if isinstance(bundle, tuple) else bundle


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _html_images(text: str) -> list[np.ndarray]:
    return [_decode(m) for m in re.findall(r'src="data:image/png;base64,([^"]+)"', text)]


@pytest.fixture(scope="module")
def explorer(demo):
    ex = cnnwidgets.Explorer(demo.model, demo.images[:120], demo.labels[:120], demo.classes,
                             mean=demo.mean, std=demo.std, tsne_images=120)
    ex.tsne.wait()
    yield ex
    ex.close()


def test_every_view_carries_its_picture_beside_the_widget(explorer):
    ex = explorer
    ex.selection.channel = 3  # the channel card shows a channel
    ex.card.wait()
    for view in ex.views:
        data = _data(view)
        kind = type(view).__name__
        assert WIDGET in data and data["text/plain"], kind  # the live widget is still there
        html = data["text/html"]
        assert f'data-view="{kind}"' in html, kind
        (img,) = _html_images(html)
        # the PNG of the HTML is the PNG of image/png: one picture, what the view shows
        np.testing.assert_array_equal(img, _decode(data["image/png"]))
        assert img.std() > 10, f"{kind}: a blank picture"


def test_the_pictures_are_what_the_views_draw(explorer):
    ex = explorer
    # the filter grid: its to_image, whole, enlarged by whole pixels to about PANEL
    grid = ex.filters.to_image()
    img = _decode(_data(ex.filters)["image/png"])
    k = max(1, _static.PANEL // max(grid.shape[:2]))
    assert img.shape == (grid.shape[0] * k, grid.shape[1] * k, 3)
    np.testing.assert_array_equal(img[::k, ::k], grid)
    # the attribution: the image and the overlay the page draws, enlarged by whole pixels
    sal = _decode(_data(ex.saliency)["image/png"])
    over = ex.saliency.overlay_image()
    k = _static.PANEL // max(over.shape[:2])
    right = sal[: over.shape[0] * k, -over.shape[1] * k:]
    np.testing.assert_array_equal(right[::k, ::k], over)
    # the t-SNE map: a point of every class, in its class colour
    tsne = _decode(_data(ex.tsne)["image/png"])
    for c in np.unique(ex.tsne._labels):
        assert (tsne == _static.PALETTE[c]).all(axis=-1).any(), f"no point of class {c}"


def test_scatter_and_curve_put_the_marks_where_the_values_are():
    # three points: left-bottom, right-top, middle; y grows upwards as on the page
    img = _static.scatter(np.array([[0, 0], [1, 1], [0.5, 0.5]]), np.array([0, 1, -1]), 100, 100, dot=3)
    ys, xs = np.nonzero((img == _static.PALETTE[0]).all(-1))
    assert xs.mean() < 20 and ys.mean() > 80
    ys, xs = np.nonzero((img == _static.PALETTE[1]).all(-1))
    assert xs.mean() > 80 and ys.mean() < 20
    ys, xs = np.nonzero((img == _static.NO_CLASS).all(-1))
    assert abs(xs.mean() - 50) < 3 and abs(ys.mean() - 50) < 3
    # a rising curve: its leftmost ink is low, its rightmost high; NaN steps left out
    line = _static.curve(np.array([0.0, 1.0, np.nan, 3.0]), 100, 60, color=(255, 0, 0))
    ys, xs = np.nonzero((line == (255, 0, 0)).all(-1))
    assert ys[xs == xs.min()].min() > 45 and ys[xs == xs.max()].max() < 15
    assert set(np.unique(xs)) >= set(range(10, 90))  # connected from one end to the other


def test_a_picture_records_unfinished_work_as_such(demo):
    tsne = cnnwidgets.TSNEScatter(demo.model, demo.images[:60], demo.labels[:60], demo.classes,
                                  mean=demo.mean, std=demo.std, n_iter=250)
    try:
        tsne.wait()
        assert "iteration" not in _data(tsne)["text/html"]  # done: nothing to say about it
        # the states a display may catch while the map runs: halfway, and before any position
        tsne.set_trait("phase", "embedding")
        tsne.set_trait("iteration", 100)
        data = _data(tsne)
        assert "image/png" in data and "saved at iteration 100 of 250 (embedding)" in data["text/html"]
        tsne.set_trait("_positions", None)
        data = _data(tsne)
        assert "image/png" not in data and "not computed yet" in data["text/html"]
    finally:
        tsne.close()
    oip = cnnwidgets.OIPOptimizer(demo.model, "features.3", channel=2, images=demo.images[:1], mean=demo.mean, std=demo.std)
    try:
        assert "not optimized yet" in _data(oip)["text/html"]
        oip.run(steps=5)
        html = _data(oip)["text/html"]
        assert "step 5" in html and "channel 2 of &#x27;features.3&#x27;" in html
    finally:
        oip.close()


def test_no_picture_under_marimo_or_once_closed(demo, monkeypatch):
    grid = cnnwidgets.FilterGrid(demo.model)
    monkeypatch.setattr(type(grid.comm), "kernel", "marimo", raising=False)
    assert set(_data(grid)) == {"text/plain", WIDGET}
    monkeypatch.undo()
    assert "image/png" in _data(grid)
    grid.close()
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(grid)  # what a display of the closed view gives
    assert "image/png" not in data and "text/html" not in data


def test_a_picture_that_fails_never_fails_the_display(demo, monkeypatch, caplog):
    grid = cnnwidgets.FilterGrid(demo.model)
    try:
        def broken(view):
            raise RuntimeError("boom")

        monkeypatch.setitem(_static.PICTURES, "FilterGrid", broken)
        data = _data(grid)
        assert WIDGET in data and "image/png" not in data
        assert "no picture: RuntimeError: boom" in data["text/html"]
    finally:
        grid.close()


def test_the_explorer_carries_every_view_picture(explorer):
    data = explorer._repr_mimebundle_()
    assert WIDGET in data
    kinds = re.findall(r'class="cnnw-fallback cnnw-fallback-\w+" data-view="(\w+)"', data["text/html"])
    assert kinds == [type(v).__name__ for v in explorer.views]
    # image/png: the pictures two by two, the first the filter grid's
    whole = _decode(data["image/png"])
    first = _html_images(_data(explorer.filters)["text/html"])[0]
    np.testing.assert_array_equal(whole[: first.shape[0], : first.shape[1]], first)
