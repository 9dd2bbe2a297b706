"""Tests for the TSNEScatter widget, in plain Python (no browser, no kernel).

Known answers come from :mod:`cnnwidgets.core` functions called on their own
(``extract_features``, ``pca_2d``, ``mosaic``), from the model run directly, and from
brute-force nearest neighbours. Most tests use ``method="pca"`` (instant); t-SNE itself runs
only where it is the point (throttled live updates, stopping).
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import get_args

import numpy as np
import pytest
import torch
import traitlets
from torch import nn

from cnnwidgets import Selection, TSNEScatter
from cnnwidgets.core import extract_features, mosaic, pca_2d, to_display
from cnnwidgets.core.embedding import EmbeddingMethod
from cnnwidgets.widgets._base import array_to_json
from cnnwidgets.widgets.tsne_scatter import ColorBy, Phase

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread

N = 400  # digits in the PCA map
FEATURE_LAYER = "classifier.3"  # the 70-d input of the demo's last Linear


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def sel():
    s = Selection()
    yield s
    s.close()


@pytest.fixture(scope="module")
def ts(demo, sel):
    """A PCA map of the first N digits, joined to ``sel``."""
    w = TSNEScatter(demo.model, demo.images[:N], demo.labels[:N], demo.classes, method="pca", selection=sel,
                    mean=demo.mean, std=demo.std)
    assert w.wait(120)
    yield w
    w.close()


@pytest.fixture(scope="module")
def feats(demo):
    return extract_features(demo.model, demo.images[:N], FEATURE_LAYER)


def brute_force_neighbors(x: np.ndarray, i: int, k: int) -> np.ndarray:
    x = x.astype(np.float64)
    d2 = ((x - x[i]) ** 2).sum(axis=1)
    d2[i] = np.inf
    return np.argsort(d2, kind="stable")[:k]


def positions(w: TSNEScatter) -> np.ndarray:
    """What the page received: the ``_positions`` array as serialized for it."""
    msg = array_to_json(w._positions)
    assert (msg["dtype"], msg["shape"]) == ("float32", [len(w._images), 2])
    return np.frombuffer(msg["view"], np.float32).reshape(-1, 2)


def tsne_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "cnnwidgets-tsne" and t.is_alive()}


class NaNFeatures(nn.Module):
    """Turns every other row into NaN: a feature layer with non-finite outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[::2] = float("nan")
        return out


def nan_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 4), NaNFeatures(),
                         nn.Linear(4, 3))


# ---------------------------------------------------------------- features, embedding, predictions
def test_layer_and_status(ts):
    assert ts.layer == FEATURE_LAYER
    assert ts.method == "pca"
    assert ts.running is False and ts.progress == -1.0
    assert ts.phase == "done" and ts.view_error == ""
    assert ts.status == f"PCA of 70-d features of {FEATURE_LAYER}"
    assert ts.class_names == [str(k) for k in range(10)]


def test_features_equal_extract_features(ts, feats):
    f = ts.features
    assert f.shape == (N, 70) and f.dtype == np.float32
    np.testing.assert_allclose(f, feats, rtol=1e-5, atol=1e-6)


def test_embedding_is_the_pca_of_the_features(ts, feats):
    e = ts.embedding
    assert e.shape == (N, 2) and e.dtype == np.float32
    assert np.isfinite(e).all()
    np.testing.assert_allclose(e, pca_2d(feats, seed=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(positions(ts), e)  # what the page received
    e[0] = 99.0  # a copy: the widget's embedding is unchanged
    assert ts.embedding[0, 0] != 99.0


def test_predicted_is_argmax_of_the_model(ts, demo):
    with torch.no_grad():
        want = demo.model(demo.images[:N]).argmax(1).numpy()
    np.testing.assert_array_equal(ts.predicted, want)
    assert ts.predicted.dtype == np.int64
    assert ts._predicted.dtype == np.int16 and ts._labels.dtype == np.int16
    np.testing.assert_array_equal(ts._predicted, want)
    np.testing.assert_array_equal(ts._labels, demo.labels[:N].numpy())


@pytest.mark.parametrize("i", [0, 57, N - 1])
@pytest.mark.parametrize("k", [1, 8, 20])
def test_feature_neighbors_equal_brute_force(ts, feats, i, k):
    got = ts.neighbors(i, k, "feature")
    assert got.dtype == np.int64 and len(got) == k and i not in got
    np.testing.assert_array_equal(got, brute_force_neighbors(feats, i, k))


@pytest.mark.parametrize("i", [0, 57, N - 1])
def test_pixel_neighbors_equal_brute_force(ts, demo, i):
    x = demo.images[:N].reshape(N, -1).numpy()
    got = ts.neighbors(i, 8, "pixel")
    assert i not in got
    np.testing.assert_array_equal(got, brute_force_neighbors(x, i, 8))
    assert not np.array_equal(got, ts.neighbors(i, 8, "feature"))  # two different spaces


def test_neighbors_bad_input(ts):
    with pytest.raises(ValueError, match="'feature' or 'pixel'"):
        ts.neighbors(0, 8, "latent")
    with pytest.raises(ValueError, match=f"0..{N - 1}"):
        ts.neighbors(N, 8)
    with pytest.raises(ValueError):
        ts.neighbors(0, 0)


def test_mosaic(ts, demo):
    thumbs = to_display(demo.images[:N], mean=demo.mean, std=demo.std)
    m = ts.mosaic()
    assert m.shape == (20 * 28, 20 * 28, 1) and m.dtype == np.uint8  # G = ceil(sqrt(400)) = 20
    np.testing.assert_array_equal(m, mosaic(thumbs, ts.embedding))
    m5 = ts.mosaic(5)
    assert m5.shape == (5 * 28, 5 * 28, 1)
    # every cell holds one of the digits
    cells = [m5[r * 28 : (r + 1) * 28, c * 28 : (c + 1) * 28] for r in range(5) for c in range(5)]
    assert all(any(np.array_equal(cell, t) for t in thumbs) for cell in cells)


# ---------------------------------------------------------------- clicks, selection, validation
def test_click_sets_selection_and_neighbors(ts, sel):
    ts.last_error = None
    ts.set_state({"index": 12})
    assert ts.index == 12 and sel.index == 12
    assert ts._neighbors == {
        "index": 12,
        "feature": [int(v) for v in ts.neighbors(12, ts.k, "feature")],
        "pixel": [int(v) for v in ts.neighbors(12, ts.k, "pixel")],
    }
    assert len(ts._neighbors["feature"]) == 8
    ts.set_state({"k": 3})
    assert ts._neighbors["feature"] == [int(v) for v in ts.neighbors(12, 3, "feature")]
    # the Selection moves the map's selection too
    sel.index = 99
    assert ts.index == 99 and ts._neighbors["index"] == 99
    sel.index = N + 5  # not in this map: ignored, and the view says so
    assert ts.index == 99
    assert ts.selection_note == (f"The shared selection is image {N + 5}, which is not in this map "
                                 f"(images 0..{N - 1}); still showing image 99.")
    sel.index = 98
    assert ts.index == 98 and ts.selection_note == ""
    sel.index = N + 5
    assert ts.selection_note
    ts.set_state({"index": 99})  # a click: the map's own selection again
    assert ts.selection_note == "" and sel.index == 99
    ts.set_state({"index": -1})  # deselect from the page
    assert ts.index == -1 and ts._neighbors == {}
    assert ts.last_error is None


def test_page_index_out_of_range_is_ignored(ts):
    ts.index = 4
    ts.last_error = None
    ts.set_state({"index": N})
    assert ts.index == 4 and "index" in ts.last_error
    with pytest.raises(ValueError, match=f"0..{N - 1}"):
        ts.index = N


def test_selected_from_the_page_drops_indices_out_of_range(ts):
    ts.last_error = None
    ts.set_state({"selected": [3, N, 7, -1, N - 1, 10**6]})
    assert ts.selected == [3, 7, N - 1]
    assert ts.last_error is None
    ts.selected = [1, 2, N + 1]
    assert ts.selected == [1, 2]
    ts.set_state({"selected": []})
    assert ts.selected == []


def test_color_by(ts):
    for v in ("predicted", "correct", "label"):
        ts.set_state({"color_by": v})
        assert ts.color_by == v
    with pytest.raises(ValueError, match="color_by must be 'label', 'predicted' or 'correct', got 'size'"):
        ts.color_by = "size"
    ts.last_error = None
    ts.set_state({"color_by": "size"})  # must not raise
    assert ts.color_by == "label" and "color_by" in ts.last_error
    assert "'label', 'predicted' or 'correct'" in ts.control_errors["color_by"]  # shown next to the menu
    ts.set_state({"color_by": "label"})
    assert "color_by" not in ts.control_errors


def test_choices_are_enums_of_the_literal_aliases():
    assert TSNEScatter.color_by.values == get_args(ColorBy) == ("label", "predicted", "correct")
    assert TSNEScatter.method.values == get_args(EmbeddingMethod)
    assert TSNEScatter.phase.values == get_args(Phase)
    for name in ("color_by", "method", "phase"):
        assert isinstance(getattr(TSNEScatter, name), traitlets.Enum)


def test_arrays_reach_the_page_as_typed_arrays(ts, demo):
    state = ts.get_state()
    for name, dtype, shape in [("_positions", "float32", [N, 2]), ("_labels", "int16", [N]),
                               ("_predicted", "int16", [N]), ("_thumbnails", "uint8", [N, 28, 28, 1])]:
        msg = state[name]
        assert (msg["dtype"], msg["shape"]) == (dtype, shape), name
        assert len(bytes(msg["view"])) == np.prod(shape) * np.dtype(dtype).itemsize
    for gone in ("_atlas", "_atlas_meta", "width", "height"):
        assert gone not in state
    assert state["n_iter"] == 750


def test_hiding_a_class_drops_its_points_from_the_selection(ts, demo):
    labels = demo.labels[:N].numpy()
    pred = ts.predicted
    threes = [int(i) for i in np.flatnonzero(labels == 3)[:4]]
    others = [int(i) for i in np.flatnonzero(labels != 3)[:5]]
    try:
        ts.set_state({"selected": threes + others})
        assert ts.selected == threes + others
        ts.set_state({"hidden_classes": [3]})  # a click on "3" in the legend
        assert ts.selected == others
        ts.set_state({"selected": threes + others})  # a box over hidden points selects only the shown ones
        assert ts.selected == others
        ts.set_state({"hidden_classes": []})
        assert ts.selected == others  # showing the class again does not bring its points back
        # coloured by the predicted class, the legend hides predicted classes
        ts.set_state({"selected": threes + others, "color_by": "predicted"})
        hide = int(pred[others[0]])
        ts.set_state({"hidden_classes": [hide]})
        assert ts.selected == [i for i in threes + others if pred[i] != hide]
    finally:
        ts.set_state({"hidden_classes": [], "selected": [], "color_by": "label"})


def test_aspect(ts):
    assert ts.aspect == 0.75
    for bad in (0.1, 2.5, float("nan")):
        with pytest.raises(ValueError, match="aspect"):
            ts.aspect = bad
    ts.aspect = 1.0
    assert ts.aspect == 1.0
    ts.aspect = 0.75


def test_other_bad_values(ts, demo):
    for name, value in [("method", "mds"), ("perplexity", 0.0), ("k", 0), ("k", 65)]:
        old = getattr(ts, name)
        with pytest.raises(ValueError):
            setattr(ts, name, value)
        assert getattr(ts, name) == old
        ts.last_error = None
        ts.set_state({name: value})
        assert getattr(ts, name) == old and ts.last_error is not None
    with pytest.raises(ValueError, match="'tsne', 'pca' or 'umap'"):
        TSNEScatter(demo.model, demo.images[:10], method="mds")
    with pytest.raises(ValueError, match="pool"):
        TSNEScatter(demo.model, demo.images[:10], pool="max")
    with pytest.raises(ValueError, match="nope"):
        TSNEScatter(demo.model, demo.images[:10], layer="nope")
    with pytest.raises(TypeError, match="Selection"):
        TSNEScatter(demo.model, demo.images[:10], selection=3)


def test_fewer_than_five_images(demo):
    before = tsne_threads()
    for n in (0, 1, 4):
        with pytest.raises(ValueError):
            TSNEScatter(demo.model, demo.images[:n])
    with pytest.raises(ValueError, match="at least 5 images, got 4"):
        TSNEScatter(demo.model, demo.images[:4])
    assert tsne_threads() - before == set()
    w = TSNEScatter(demo.model, demo.images[:5], method="pca")  # 5 is enough
    try:
        assert w.wait(60)
        assert w.embedding.shape == (5, 2)
    finally:
        w.close()


def test_nan_features_are_reported_not_raised(monkeypatch):
    escaped = []
    monkeypatch.setattr(threading, "excepthook", lambda args: escaped.append(args))
    x = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    w = TSNEScatter(nan_model(), x, [0, 1, 2, 0, 1, 2, 0, 1], method="tsne")
    try:
        assert w.layer == "4"  # the NaN layer feeds the last Linear
        assert w.wait(60)
        assert escaped == []
        assert w.running is False and w.progress == -1.0 and w.phase == "failed"
        assert w.status.startswith("error: ValueError") and "NaN" in w.status
        assert "4 of 8 rows" in w.status
        # the failure shows in the view (its error line), not only in the status
        assert w.view_error.startswith("ValueError") and w.status == f"error: {w.view_error}"
        assert w.last_error == w.view_error
        assert w._positions is None  # nothing to draw
        # what Python callers get afterwards: a RuntimeError carrying the status
        with pytest.raises(RuntimeError, match="NaN"):
            w.embedding
        with pytest.raises(RuntimeError, match="NaN"):
            w.features
        # a click on the (empty) map does not raise
        w.set_state({"index": 2})
        assert w.index == 2 and w._neighbors == {}
        # a new run clears the failure at its start (and fails again here)
        seen = []
        w.observe(lambda c: seen.append(c["new"]), "view_error")
        w.start()
        assert w.wait(60)
        assert seen[0] == "" and seen[-1].startswith("ValueError") and w.phase == "failed"
    finally:
        w.close()
    assert escaped == []


# ---------------------------------------------------------------- thumbnails
def test_thumbnails_are_the_display_images(ts, demo):
    """The page gets every thumbnail once, as one uint8 (N, h, w, c) array (it packs them into
    canvas pages of at most 4096 pixels itself: tests/browser/test_tsne_scatter_browser.py)."""
    thumbs = to_display(demo.images[:N], mean=demo.mean, std=demo.std)
    assert ts._thumbnails.shape == (N, 28, 28, 1) and ts._thumbnails.dtype == np.uint8
    np.testing.assert_array_equal(ts._thumbnails, thumbs)


def test_large_images_get_downscaled_thumbnails():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 3))
    x = torch.rand(6, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    w = TSNEScatter(model, x, method="pca", mean=0.0, std=1.0)
    try:
        assert w.wait(60)
        assert w._thumbnails.shape == (6, 20, 20, 3)  # ceil(40 / 32) = 2
        want = to_display(torch.nn.functional.avg_pool2d(x, 2), mean=0.0, std=1.0)
        np.testing.assert_array_equal(w._thumbnails, want)
        assert w.mosaic().shape == (3 * 20, 3 * 20, 3)
        assert w._labels.tolist() == [-1] * 6  # no labels
    finally:
        w.close()
    assert w._thumbnails is None  # let go with the images


# ---------------------------------------------------------------- t-SNE: live, throttled, stoppable
def test_tsne_updates_are_throttled_and_the_last_is_final(demo):
    # 3,000 iterations: a run of several throttle periods on any machine (750 of 300 points
    # can finish in under half a second on a quiet one, leaving too few updates to measure)
    w = TSNEScatter(demo.model, demo.images[:300], demo.labels[:300], demo.classes, method="pca",
                    mean=demo.mean, std=demo.std, n_iter=3000)
    try:
        assert w.wait(120)
        pushes: list[float] = []
        callbacks: list[int] = []
        w.observe(lambda c: pushes.append(time.monotonic()), "_positions")
        w.observe(lambda c: callbacks.append(c["new"]), "iteration")
        w.method = "tsne"
        t0 = time.monotonic()
        w.start()
        assert w.wait(300)
        elapsed = time.monotonic() - t0
        assert w.status.startswith(f"t-SNE of 70-d features of {FEATURE_LAYER}"), w.status
        assert w.iteration == 3000 and callbacks[-1] == 3000 and w.n_iter == 3000
        assert w.phase == "done"
        assert len(callbacks) == 300  # a callback every 10 of the 3,000 iterations
        e = w.embedding
        assert e.shape == (300, 2) and np.isfinite(e).all()
        assert not np.allclose(e, pca_2d(w.features))
        np.testing.assert_array_equal(positions(w), e)  # the final positions always reach the page
        # the throttle: at most MAX_UPDATES_PER_SECOND updates a second (+ the forced PCA and final ones)
        rate = TSNEScatter.MAX_UPDATES_PER_SECOND
        assert len(pushes) <= rate * elapsed + 3, (len(pushes), elapsed)
        gaps = np.diff(pushes[1:-1])  # between the throttled updates (first and last are forced)
        assert len(gaps) > 3
        assert np.median(gaps) >= 0.9 / rate, gaps
        assert gaps.min() >= 0.5 / rate, gaps
    finally:
        w.close()


def test_stop_ends_the_thread_and_close_leaves_none(demo):
    w = TSNEScatter(demo.model, demo.images[:200], method="tsne", mean=demo.mean, std=demo.std)
    try:
        deadline = time.monotonic() + 120
        while w.iteration < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert w.running and w.iteration >= 20
        t0 = time.monotonic()
        w.stop()
        assert time.monotonic() - t0 < 5
        assert not w._thread.is_alive()
        assert w.running is False
        assert "(stopped)" in w.status, w.status
        assert w.phase == "stopped" and w.view_error == ""
        assert w.iteration < 750
        e = w.embedding  # the positions reached so far stay
        assert e.shape == (200, 2) and np.isfinite(e).all()
        np.testing.assert_array_equal(positions(w), e)
        # restart, then close at once (during the feature pass)
        w.start()
        th = w._thread
        assert th.is_alive() and w.iteration == 0
    finally:
        w.close()
    assert not th.is_alive()
    assert w.running is False
    assert "stopped" in w.status, w.status
    assert th not in tsne_threads()
    w.close()  # twice is fine


def test_a_running_tsne_does_not_swallow_the_notebooks_warnings(demo, recwarn):
    """The t-SNE thread records openTSNE's warnings for its status line. A warning raised
    meanwhile by the user's own code (the main thread) must still reach the user, and must not
    end up in the map's status."""
    w = TSNEScatter(demo.model, demo.images[:200], method="pca", mean=demo.mean, std=demo.std)
    try:
        assert w.wait(120)
        w.method = "tsne"
        w.start()
        deadline = time.monotonic() + 120
        while w.iteration < 10 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert w.running and w.iteration >= 10  # inside the t-SNE optimization
        warnings.warn("a warning from the notebook", UserWarning)
        w.stop()
        assert "(stopped)" in w.status
        assert "a warning from the notebook" not in w.status, w.status
        assert any("a warning from the notebook" in str(r.message) for r in recwarn.list)
    finally:
        w.close()


def test_the_page_stops_a_run_within_a_step_and_runs_it_again(demo, monkeypatch):
    """Stop and Run again from the page (messages.json: tsne_scatter): the handlers answer at
    once (no join in the kernel's thread); the run stops between steps, keeps its positions,
    and a new run goes to the end."""
    w = TSNEScatter(demo.model, demo.images[:200], demo.labels[:200], demo.classes, method="tsne", n_iter=5000,
                    mean=demo.mean, std=demo.std)
    try:
        deadline = time.monotonic() + 120
        while w.iteration < 5 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert w.running and w.iteration >= 5
        # the page's Stop only raises the flag: it never joins the run's thread in the kernel
        joins = []
        real_join = threading.Thread.join
        monkeypatch.setattr(threading.Thread, "join", lambda th, *a, **k: joins.append(th) or real_join(th, *a, **k))
        w._dispatch_message(w, {"type": "stop"})
        assert joins == []
        monkeypatch.undo()
        assert w.wait(60)
        assert w.phase == "stopped" and not w.running and w.iteration < 5000
        assert np.isfinite(positions(w)).all()
        w._dispatch_message(w, {"type": "start"})
        assert w.running or w.phase in ("features", "embedding", "done")
        w._dispatch_message(w, {"type": "start"})  # a second start while running: refused, said
        assert "still being computed" in w.last_error
        w._dispatch_message(w, {"type": "stop"})
        assert w.wait(60) and w.phase == "stopped"
        assert not any(th.is_alive() for th in tsne_threads())
    finally:
        w.close()
