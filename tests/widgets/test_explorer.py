"""Tests for the Explorer dashboard: five views over one Selection, in plain Python."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from cnnwidgets import (
    ActivationExplorer,
    ChannelCard,
    Explorer,
    FilterGrid,
    OIPOptimizer,
    SaliencyViewer,
    Selection,
    TSNEScatter,
)
from cnnwidgets.core.layers import view_defaults

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread

N, N_TSNE = 300, 200


@pytest.fixture(scope="module")
def ex(demo):
    w = Explorer(demo.model, demo.images[:N], demo.labels[:N], demo.classes, mean=demo.mean, std=demo.std,
                 tsne_images=N_TSNE)
    yield w
    w.close()


def wait_all(ex: Explorer) -> None:
    assert ex.activations.wait()
    assert ex.saliency.wait()


def cnnwidgets_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("cnnwidgets-") and t.is_alive()}


def width(demo, layer: str) -> int:
    k = int(layer.split(".")[1])
    with torch.no_grad():
        return int(demo.model.features[: k + 1](demo.images[:1]).shape[1])


# ---------------------------------------------------------------- structure
def test_six_views_one_selection(ex, demo):
    assert isinstance(ex.selection, Selection)
    views = ex.views
    kinds = [FilterGrid, ActivationExplorer, SaliencyViewer, OIPOptimizer, TSNEScatter, ChannelCard]
    assert len(views) == 6 and all(isinstance(v, k) for v, k in zip(views, kinds))  # (anywidget subclasses each)
    assert tuple(views) == (ex.filters, ex.activations, ex.saliency, ex.optimizer, ex.tsne, ex.card)
    assert all(v.selection is ex.selection for v in views)
    assert ex.selection in ex.children
    assert ex.activations.n_images == N and ex.saliency.n_images == N
    torch.testing.assert_close(ex.tsne._images.in_memory, demo.images[:N_TSNE])
    np.testing.assert_array_equal(ex.tsne._images.labels, demo.labels[:N_TSNE].numpy())
    assert ex.optimizer._shape == (1, 28, 28)


def test_initial_state_agrees(ex, demo):
    sel = ex.selection
    d = ex.defaults
    assert d == view_defaults(demo.model, demo.images[:1])
    # the feature maps and the filters start on the first layer, and the Selection with them
    assert ex.activations.layer == ex.filters.layer == sel.layer == d["activation"] == "features.0"
    # Grad-CAM, the optimizer and t-SNE on their own defaults, not on the first conv (issue #12)
    assert ex.saliency.layer == d["cam"] == "features.7"
    assert ex.optimizer.layer == d["optimizer"] == "features.3"
    assert ex.tsne.layer == d["feature"] and ex.tsne._pool == d["feature_pool"]
    assert ex.activations.index == ex.saliency.index == ex.tsne.index == sel.index
    assert ex.activations.channel == ex.filters.channel == ex.saliency.channel == sel.channel == -1
    assert ex.optimizer.channel == 0
    # the card shows the channel selected in any view: none yet
    assert ex.card.layer == sel.layer and ex.card.channel == -1


def test_a_first_layer_filter_click_leaves_the_other_layers_alone(ex):
    """Runs on the dashboard as built (test_initial_state_agrees checked it)."""
    sel = ex.selection
    ex.filters.set_state({"channel": 5})  # a click on filter 5 of features.0
    assert (sel.layer, sel.channel) == ("features.0", 5) and ex.activations.channel == 5
    assert (ex.optimizer.layer, ex.optimizer.channel) == ("features.3", 0)  # not channel 5 of features.3
    assert (ex.saliency.layer, ex.saliency.channel) == ("features.7", -1)
    ex.optimizer.channel = 7  # the optimizer's channel comes with its layer: the others follow it there
    assert (sel.layer, sel.channel) == ("features.3", 7)
    assert (ex.activations.layer, ex.activations.channel) == ("features.3", 7)
    assert (ex.filters.layer, ex.filters.channel) == ("features.3", 7)
    wait_all(ex)


# ---------------------------------------------------------------- the views as a list, the grid
def test_the_views_are_one_list_shown_in_a_grid(ex):
    """VIEWS is the one list of the dashboard's views; the Explorer shows them in that order,
    each in a cell of a reflowing grid with its heading."""
    import ipywidgets

    from cnnwidgets.widgets.explorer import VIEWS

    assert [s.name for s in VIEWS] == ["filters", "activations", "saliency", "optimizer", "tsne", "card"]
    assert [s.cls for s in VIEWS] == [FilterGrid, ActivationExplorer, SaliencyViewer, OIPOptimizer, TSNEScatter,
                                      ChannelCard]
    assert ex.views == [getattr(ex, s.name) for s in VIEWS]
    selection, grid = ex.children
    assert selection is ex.selection
    assert isinstance(grid, ipywidgets.GridBox) and "cnnw-explorer-grid" in grid._dom_classes
    assert len(grid.children) == len(VIEWS)
    for cell, spec in zip(grid.children, VIEWS):
        heading, view = cell.children
        assert "cnnw-explorer-cell" in cell._dom_classes
        assert view is getattr(ex, spec.name)
        assert 'class="cnnw-root cnnw-explorer-heading"' in heading.value
        assert spec.title in heading.value and spec.cls.__name__ in heading.value
    # no fixed widths or rows from Python: the stylesheet's grid decides the columns
    assert grid.layout.grid_template_columns is None and grid.layout.width is None


def test_views_chooses_which_views_to_show_and_their_order(demo, tmp_path):
    ex = Explorer(demo.model, demo.images[:40], demo.labels[:40], demo.classes, mean=demo.mean, std=demo.std,
                  views=["saliency", "activations"])
    try:
        assert ex.views == [ex.saliency, ex.activations]
        assert ex.filters is None and ex.optimizer is None and ex.tsne is None
        assert [cell.children[1] for cell in ex.children[1].children] == [ex.saliency, ex.activations]
        # the feature maps still start the Selection on their layer, and the two stay linked
        assert ex.selection.layer == ex.activations.layer == ex.defaults["activation"]
        assert ex.saliency.layer == ex.defaults["cam"]
        ex.saliency.index = 9
        assert ex.activations.index == 9 == ex.selection.index
        wait_all(ex)
        path = ex.save_html(tmp_path / "two.html", images=[2, 9])
        bundles = [v["bundle"] for v in _page_data(path)["views"]]
        assert bundles == ["saliency_viewer", "activation_explorer"]
    finally:
        ex.close()
    one = Explorer(demo.model, demo.images[:10], views="filters")  # one name alone is fine
    try:
        assert one.views == [one.filters] and one.activations is None
    finally:
        one.close()


@pytest.mark.parametrize(
    ("views", "match"),
    [(["filters", "saliancy"], r"unknown view 'saliancy' in views=; the views are 'filters', 'activations', "
                                r"'saliency', 'optimizer', 'tsne'"),
     ([], r"views= is empty; choose one or more of 'filters', 'activations'"),
     (["tsne", "tsne"], r"views= names 'tsne' more than once")],
)
def test_views_names_are_checked_before_anything_is_built(demo, views, match):
    from ipywidgets.widgets import widget

    before = len(widget._instances)
    with pytest.raises(ValueError, match=match):
        Explorer(demo.model, demo.images[:10], views=views)
    assert len(widget._instances) == before


def test_a_sixth_view_is_one_entry(demo, monkeypatch):
    """A new view is one ViewSpec: the Explorer builds it on the shared Selection, shows it with a
    heading, lists it in ``views`` and closes it."""
    from cnnwidgets.widgets import explorer as module

    def build(s):
        return ActivationExplorer(s.model, s.x[:5], layer="features.3", **s.kw)

    extra = module.ViewSpec("deep_maps", ActivationExplorer, "Deeper maps", "a second ActivationExplorer", build)
    monkeypatch.setattr(module, "VIEWS", (*module.VIEWS, extra))
    monkeypatch.setattr(module, "_BY_NAME", {**module._BY_NAME, "deep_maps": extra})
    ex = Explorer(demo.model, demo.images[:20], views=["activations", "deep_maps"])
    try:
        assert ex.views == [ex.activations, ex.deep_maps]
        assert ex.deep_maps.selection is ex.selection and ex.deep_maps.layer == "features.3"
        assert "Deeper maps" in ex.children[1].children[1].children[0].value
        ex.activations.index = 3
        assert ex.deep_maps.index == 3
        wait_all_views = [v.wait() for v in ex.views]
        assert all(wait_all_views)
    finally:
        ex.close()
    assert ex.deep_maps._closed


def test_save_html_exports_the_shown_views_with_their_images(ex, tmp_path):
    """Each exported view carries the images its page may step through and the static-copy
    note; the per-image views one state per exported image."""
    wait_all(ex)
    path = ex.save_html(tmp_path / "explorer.html", images=[3, 1])
    specs = _page_data(path)["views"]
    assert [v["bundle"] for v in specs] == [w._bundle for w in ex.views]
    by_bundle = {v["bundle"]: v for v in specs}
    for name in ("activation_explorer", "saliency_viewer"):
        spec = by_bundle[name]
        assert sorted(spec["frames"]) == ["1", "3"]
        assert spec["state"]["_export_images"] == [1, 3]
        assert "Static copy of 2 images (1, 3)" in spec["state"]["_export_note"]
    assert "frames" not in by_bundle["filter_grid"]
    for spec in specs:
        assert spec["state"]["_export_note"].startswith("Static copy")


def _page_data(path) -> dict:
    import json
    import re

    text = path.read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="cnnw-data">(.*?)</script>', text, re.S)
    return json.loads(m.group(1).replace("<\\/", "</"))


# ---------------------------------------------------------------- channel and layer
def test_activation_channel_reaches_filters_optimizer_and_saliency(ex):
    sel = ex.selection
    ex.activations.layer = "features.3"
    ex.activations.channel = 5
    assert sel.channel == 5 and sel.layer == "features.3"
    assert (ex.filters.layer, ex.filters.channel) == ("features.3", 5)
    assert (ex.optimizer.layer, ex.optimizer.channel) == ("features.3", 5)
    assert (ex.saliency.layer, ex.saliency.channel) == ("features.3", 5)
    wait_all(ex)
    # the optimizer targets it: its objective is channel 5 of features.3
    r = ex.optimizer.run(steps=3)
    assert r.shape == (1, 1, 28, 28)
    assert ex.optimizer._image_info["channels"] == [5]


def test_filter_click_reaches_the_other_views(ex):
    sel = ex.selection
    ex.activations.layer = "features.6"
    ex.filters.set_state({"channel": 100})  # a click on a filter tile
    assert sel.channel == 100
    assert ex.activations.channel == 100 and ex.optimizer.channel == 100 and ex.saliency.channel == 100
    wait_all(ex)


def test_a_channel_a_view_lacks_is_ignored_by_that_view(ex):
    sel = ex.selection
    ex.activations.layer = "features.6"
    ex.activations.channel = 3
    ex.optimizer.layer = "classifier.1"  # 70 units; the others cannot show it and keep features.6
    assert (sel.layer, sel.channel) == ("classifier.1", 3)
    assert ex.activations.layer == ex.filters.layer == ex.saliency.layer == "features.6"
    ex.optimizer.channel = 69
    assert sel.channel == 69
    # unit 69 of classifier.1 is no channel of features.6: the views there keep theirs
    assert ex.activations.channel == 3 and ex.filters.channel == 3 and ex.saliency.channel == 3
    ex.activations.channel = 120  # a map of features.6: the Selection moves there with it
    assert (sel.layer, sel.channel) == ("features.6", 120)
    assert (ex.optimizer.layer, ex.optimizer.channel) == ("features.6", 120)
    assert ex.filters.channel == 120 and ex.saliency.channel == 120
    wait_all(ex)


def test_layer_change_keeps_the_optimizer_runnable(demo):
    """After a layer change through the Selection, the optimizer's (layer, channel) must stay a
    valid pair: its Start button must work. (A fresh Explorer: the shared one's state depends on
    the tests before.)"""
    ex = Explorer(demo.model, demo.images[:N], demo.labels[:N], demo.classes, mean=demo.mean, std=demo.std,
                  tsne_images=N_TSNE)
    try:
        _layer_change_keeps_the_optimizer_runnable(ex, demo)
    finally:
        ex.close()


def _layer_change_keeps_the_optimizer_runnable(ex, demo):
    ex.activations.layer = "features.6"
    ex.activations.channel = 100
    assert (ex.optimizer.layer, ex.optimizer.channel) == ("features.6", 100)
    ex.activations.layer = "features.0"  # 32 channels: the explorer drops its channel 100
    wait_all(ex)
    assert ex.activations.channel == -1 and ex.selection.channel == -1
    assert ex.optimizer.layer == "features.0"
    assert 0 <= ex.optimizer.channel < width(demo, "features.0"), ex.optimizer.channel
    ex.optimizer.run(steps=2)


# ---------------------------------------------------------------- index
def test_tsne_click_moves_saliency_and_activations(ex, demo):
    sel = ex.selection
    ex.tsne.set_state({"index": 150})  # a click on a point of the map
    assert sel.index == 150
    assert ex.saliency.index == 150 and ex.activations.index == 150
    wait_all(ex)
    assert ex.saliency._heat_meta["index"] == 150 and ex.saliency._image_meta["index"] == 150
    assert ex.activations._maps_info["index"] == 150
    with torch.no_grad():
        p = torch.softmax(demo.model(demo.images[150:151])[0], 0).numpy()
    np.testing.assert_allclose(np.asarray(ex.saliency._bars.y), p, rtol=1e-5, atol=1e-7)
    # an image beyond the map's subset: the others follow, the map keeps its point
    ex.activations.index = 250
    assert sel.index == 250 and ex.saliency.index == 250
    assert ex.tsne.index == 150
    ex.saliency.index = 7
    assert ex.tsne.index == 7 and ex.activations.index == 7
    wait_all(ex)


def test_bar_click_sets_the_shared_target(ex):
    ex.saliency._bars.selected = [4]
    assert ex.saliency.target == 4 and ex.selection.target == 4
    ex.selection.target = -1
    assert ex.saliency.target == -1
    wait_all(ex)


# ---------------------------------------------------------------- joining order
def test_a_view_without_a_layer_follows_the_selection(demo):
    """Views joining a Selection take its layer unless given one explicitly (SelectionMixin)."""
    sel = Selection()
    a = ActivationExplorer(demo.model, demo.images[:5], layer="features.3", selection=sel)
    views = [a]
    try:
        assert sel.layer == "features.3"
        views.append(SaliencyViewer(demo.model, demo.images[:5], selection=sel))
        assert views[-1].layer == "features.3" and sel.layer == "features.3"
        views.append(OIPOptimizer(demo.model, images=demo.images[:1], selection=sel))
        assert views[-1].layer == "features.3" and sel.layer == "features.3"
        views.append(FilterGrid(demo.model, selection=sel))
        assert sel.layer == "features.3" and a.layer == "features.3"
        assert views[-1].layer == "features.3"
    finally:
        for v in views:
            v.close()
        sel.close()


def test_layers_given_to_the_explorer(demo):
    ex = Explorer(demo.model, demo.images[:40], demo.labels[:40], demo.classes, mean=demo.mean, std=demo.std,
                  tsne_images=20, saliency_layer="features.4", optimizer_layer="features.6", tsne_layer="features.7")
    try:
        assert (ex.saliency.layer, ex.optimizer.layer, ex.tsne.layer) == ("features.4", "features.6", "features.7")
        assert ex.activations.layer == ex.filters.layer == ex.selection.layer == "features.0"
        assert ex.tsne._pool == "flatten"  # TSNEScatter's own pool for a layer given here
        assert ex.tsne.features.shape == (20, 128 * 3 * 3)
    finally:
        ex.close()


def test_output_reaches_every_view_that_reads_the_scores(demo):
    """output= goes to every view that reads class scores; a dict output works with it."""

    class DictOut(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"aux": torch.zeros(x.shape[0], 2), "logits": self.net(x)}

    ex = Explorer(DictOut(demo.model), demo.images[:40], demo.labels[:40], demo.classes, mean=demo.mean,
                  std=demo.std, tsne_images=20, output="logits")
    try:
        assert ex.optimizer.n_classes == 10 and ex.optimizer.class_note == ""
        assert ex.optimizer.layer == "net.features.3" and ex.saliency.layer == "net.features.7"
        ex.saliency.wait()
        with torch.no_grad():
            p = torch.softmax(demo.model(demo.images[:1])[0], 0).numpy()
        np.testing.assert_allclose(np.asarray(ex.saliency._bars.y), p, rtol=1e-5, atol=1e-7)
        ex.optimizer.objective = "class"
        ex.optimizer.run(steps=3)
        assert len(ex.optimizer.probabilities) == 10
        ex.activations.wait()
    finally:
        ex.close()


# ---------------------------------------------------------------- close
def test_close_stops_every_thread(demo):
    before = cnnwidgets_threads()
    w = Explorer(demo.model, demo.images[:40], demo.labels[:40], demo.classes, mean=demo.mean, std=demo.std,
                 tsne_images=20)
    try:
        w.optimizer.run(steps=100_000, block=False)
        started = cnnwidgets_threads() - before
        names = {t.name for t in started}
        required = {"cnnwidgets-activations", "cnnwidgets-deconvnet", "cnnwidgets-top-images", "cnnwidgets-saliency",
                    "cnnwidgets-saliency-panels", "cnnwidgets-saliency-evidence", "cnnwidgets-saliency-sanity",
                    "cnnwidgets-oip", "cnnwidgets-card-data", "cnnwidgets-card-patterns"}
        assert required <= names <= required | {"cnnwidgets-tsne"}, names  # the map may be done already
    finally:
        t0 = time.monotonic()
        w.close()
    assert time.monotonic() - t0 < 35
    assert not any(t.is_alive() for t in started)
    assert cnnwidgets_threads() - before == set()
    assert w.optimizer.result is not None and w.optimizer.result.stopped
    w.close()  # twice is fine


def test_close_the_shared_explorer(ex):
    ex.activations.layer = "features.3"
    ex.activations.channel = 1
    ex.optimizer.objective = "channel"
    ex.optimizer.run(steps=100_000, block=False)
    threads = [ex.optimizer._thread, ex.tsne._thread, ex.saliency._worker._thread, ex.saliency._panel_worker._thread,
               ex.saliency._evidence_worker._thread, ex.activations._worker._thread, ex.card._worker._thread,
               ex.card._pattern_worker._thread]
    ex.close()
    assert not any(t is not None and t.is_alive() for t in threads)
