"""Tests for Selection and the views that share one (FilterGrid + ActivationExplorer on the demo)."""

from __future__ import annotations

import pytest
import traitlets

from cnnwidgets import ActivationExplorer, FilterGrid, OIPOptimizer, Selection


@pytest.fixture
def closing():
    """Collects explorers to close after the test (their worker threads)."""
    widgets: list = []
    yield widgets.append
    for w in widgets:
        w.close()


def explorer(demo, closing, **kw) -> ActivationExplorer:
    ex = ActivationExplorer(demo.model, demo.images[:100], demo.labels[:100], demo.classes,
                            mean=demo.mean, std=demo.std, **kw)
    closing(ex)
    return ex


# ---------------------------------------------------------------- Selection on its own
def test_defaults_and_repr():
    sel = Selection()
    assert (sel.index, sel.layer, sel.channel, sel.target) == (0, "", -1, -1)
    assert repr(sel) == "Selection(index=0, layer='', channel=-1, target=-1)"
    sel = Selection(index=3, layer="features.3", channel=5, target=7)
    assert repr(sel) == "Selection(index=3, layer='features.3', channel=5, target=7)"


@pytest.mark.parametrize("kw", [{"index": -1}, {"channel": -2}, {"target": -5}])
def test_validation_in_constructor(kw):
    with pytest.raises(ValueError, match=">= "):
        Selection(**kw)


def test_validation_on_assignment():
    sel = Selection(index=2, channel=4)
    with pytest.raises(ValueError, match="index"):
        sel.index = -1
    with pytest.raises(ValueError, match="channel"):
        sel.channel = -2
    with pytest.raises(ValueError, match="target"):
        sel.target = -3
    assert (sel.index, sel.channel, sel.target) == (2, 4, -1)
    sel.target = -2  # the true label
    assert sel.target == -2
    sel.channel = -1  # "none" is fine
    sel.index = 0
    assert (sel.index, sel.channel) == (0, -1)


def test_bad_values_from_the_page_are_ignored():
    sel = Selection(channel=3)
    sel.set_state({"channel": -7})  # must not raise
    assert sel.channel == 3
    assert sel.last_error is not None and "channel" in sel.last_error


@pytest.mark.parametrize("bad", ["sel", {"channel": 1}, 3])
def test_non_selection_is_a_type_error(demo, bad):
    with pytest.raises(TypeError, match="Selection"):
        FilterGrid(demo.model, selection=bad)
    with pytest.raises(TypeError, match="Selection"):
        ActivationExplorer(demo.model, demo.images[:5], selection=bad)


# ---------------------------------------------------------------- two views, one Selection
def test_channel_is_shared(demo, closing):
    sel = Selection()
    grid = FilterGrid(demo.model, "features.0", selection=sel)
    ex = explorer(demo, closing, selection=sel)
    assert grid.layer == ex.layer == sel.layer == "features.0"
    grid.channel = 5
    assert sel.channel == 5 and ex.channel == 5
    ex.channel = 7
    assert grid.channel == 7 and sel.channel == 7
    sel.channel = 2
    assert grid.channel == 2 and ex.channel == 2
    ex.wait()
    assert ex._recon_info["channel"] == 2  # the explorer projects the channel clicked in the grid


def test_click_from_the_page_reaches_the_other_view(demo, closing):
    sel = Selection()
    grid = FilterGrid(demo.model, "features.0", selection=sel)
    ex = explorer(demo, closing, selection=sel)
    grid.set_state({"channel": 9})
    assert ex.channel == 9
    ex.set_state({"channel": 11})
    assert grid.channel == 11 and sel.channel == 11


def test_channel_the_grid_cannot_show_is_ignored(demo, closing):
    sel = Selection()
    ex = explorer(demo, closing, layer="features.7", selection=sel)  # ReLU, 128 maps
    grid = FilterGrid(demo.model, "features.0", selection=sel)  # 32 filters; features.7 is no conv
    assert grid.layer == "features.0" and ex.layer == "features.7"
    ex.channel = 100  # must not raise
    assert (sel.layer, sel.channel) == ("features.7", 100)
    assert grid.channel == -1  # keeps its value
    ex.channel = 31  # a map of features.7, not filter 31 of features.0: the grid keeps its value
    assert grid.channel == -1
    grid.channel = 5  # a click on filter 5: the Selection gets (features.0, 5), the explorer follows
    assert (sel.layer, sel.channel) == ("features.0", 5)
    assert (ex.layer, ex.channel) == ("features.0", 5)
    ex.channel = 31
    assert grid.channel == 31
    ex.layer = "features.7"  # the grid cannot follow: it keeps its layer and its channel
    ex.channel = 100
    assert (grid.layer, grid.channel) == ("features.0", 31)


def test_a_channel_travels_with_its_layer(demo, closing):
    """A view that does not take the Selection's layer does not take its channel either; a view
    that takes a layer takes the Selection's channel with it (issue #12)."""
    sel = Selection()
    grid = FilterGrid(demo.model, "features.0", selection=sel)
    oip = OIPOptimizer(demo.model, "features.6", images=demo.images[:1], selection=sel)
    closing(oip)
    ex = explorer(demo, closing, selection=sel)
    assert sel.layer == "features.0" and ex.layer == "features.0" and oip.layer == "features.6"
    grid.set_state({"channel": 5})  # a first-layer filter click
    assert (sel.layer, sel.channel) == ("features.0", 5) and ex.channel == 5
    assert (oip.layer, oip.channel) == ("features.6", 0)  # not retargeted to channel 5 of features.6
    ex.layer = "features.6"  # the explorer keeps its channel 5 and shares (features.6, 5)
    assert (sel.layer, sel.channel) == ("features.6", 5)
    assert (oip.layer, oip.channel) == ("features.6", 5)  # already on the layer: it takes the channel with it
    assert (grid.layer, grid.channel) == ("features.6", 5)
    ex.layer = "features.7"  # the grid cannot take a ReLU: it keeps features.6, whose filters are its channels
    assert (oip.layer, oip.channel) == ("features.7", 5)
    ex.channel = 9
    assert (grid.layer, grid.channel) == ("features.6", 9) and oip.channel == 9  # conv and its ReLU: one channel
    oip.channel = 17  # from the optimizer to the others on its layer
    assert (sel.layer, sel.channel) == ("features.7", 17) and ex.channel == 17 and grid.channel == 17
    oip.layer = "classifier.1"  # the others have no such layer: they keep theirs, and their channels
    assert (sel.layer, sel.channel) == ("classifier.1", 17)
    oip.channel = 69
    assert (ex.layer, ex.channel) == ("features.7", 17) and (grid.layer, grid.channel) == ("features.6", 17)
    sel.channel = 20  # set from Python: only the optimizer is on classifier.1
    assert oip.channel == 20 and ex.channel == 17 and grid.channel == 17
    sel.layer = "features.3"  # a layer every view takes: each takes the Selection's channel too
    assert [v.layer for v in (grid, ex, oip)] == ["features.3"] * 3
    assert [v.channel for v in (grid, ex, oip)] == [20] * 3


def test_a_view_given_its_layer_keeps_it_when_joining(demo, closing):
    sel = Selection()
    ex = explorer(demo, closing, selection=sel)  # the first 4-D layer, features.0
    oip = OIPOptimizer(demo.model, "features.6", channel=3, images=demo.images[:1], selection=sel)
    closing(oip)
    # its channel 3 is one of features.6: not given to the Selection, which is on features.0
    assert (sel.layer, sel.channel) == ("features.0", -1) and (ex.layer, ex.channel) == ("features.0", -1)
    assert (oip.layer, oip.channel) == ("features.6", 3)
    default = OIPOptimizer(demo.model, images=demo.images[:1], selection=sel)  # no layer given: it follows
    closing(default)
    assert default.layer == "features.0"
    assert sel.channel == default.channel == ex.channel == 0  # on the Selection's layer, it fills the channel
    assert (oip.layer, oip.channel) == ("features.6", 3)


def test_layer_follows_conv_layers_only(demo, closing):
    sel = Selection()
    grid = FilterGrid(demo.model, "features.0", selection=sel)
    ex = explorer(demo, closing, selection=sel)
    ex.layer = "features.3"
    assert sel.layer == "features.3" and grid.layer == "features.3"
    assert grid._grid["out_channels"] == 64
    ex.layer = "features.4"  # a ReLU: no weights to draw
    assert sel.layer == "features.4"
    assert grid.layer == "features.3"
    ex.layer = "features.6"
    assert grid.layer == "features.6"
    grid.layer = "features.0"
    assert ex.layer == "features.0" and sel.layer == "features.0"
    assert ex._maps_info["layer"] == "features.0"


def test_first_view_fills_an_empty_selection(demo, closing):
    sel = Selection()
    grid = FilterGrid(demo.model, "features.3", selection=sel)
    assert sel.layer == "features.3" and sel.channel == -1
    sel2 = Selection()
    ex = explorer(demo, closing, layer="features.5", selection=sel2)
    assert sel2.layer == "features.5" and sel2.channel == -1 and sel2.index == 0
    # a second view adopts what the first one put there
    ex2 = explorer(demo, closing, selection=sel)
    assert ex2.layer == "features.3"
    grid2 = FilterGrid(demo.model, selection=sel2)  # features.5 is a pool: the grid keeps its first conv
    assert grid2.layer == "features.0"
    assert (grid.layer, ex.layer) == ("features.3", "features.5")


def test_later_view_adopts_existing_values(demo, closing):
    sel = Selection(index=3, layer="features.3", channel=5)
    ex = explorer(demo, closing, selection=sel)
    assert (ex.index, ex.layer, ex.channel) == (3, "features.3", 5)
    assert ex._maps_info["index"] == 3 and ex._maps_info["layer"] == "features.3"
    assert ex._image_info["index"] == 3
    ex.wait()
    assert ex._recon_info["channel"] == 5 and ex._recon_info["layer"] == "features.3"
    grid = FilterGrid(demo.model, selection=sel)
    assert (grid.layer, grid.channel) == ("features.3", 5)
    # the Selection was not changed by the views joining it
    assert (sel.index, sel.layer, sel.channel) == (3, "features.3", 5)


def test_index_is_shared_between_explorers(demo, closing):
    sel = Selection()
    a = explorer(demo, closing, selection=sel)
    b = explorer(demo, closing, layer="features.6", selection=sel)
    a.index = 42
    assert sel.index == 42 and b.index == 42
    assert b._image_info["index"] == 42
    sel.index = 500  # beyond these 100 images: not taken by either, and each says so
    assert a.index == 42 and b.index == 42
    for v in (a, b):
        assert v.selection_note == ("The shared selection is on image 500, which this view does not hold "
                                    "(its images are 0..99): it still shows image 42.")


def test_closed_view_leaves_the_selection(demo, closing):
    sel = Selection()
    grid = FilterGrid(demo.model, "features.0", selection=sel)
    ex = explorer(demo, closing, selection=sel)
    ex.close()
    sel.channel = 6
    assert grid.channel == 6
    assert ex.channel == -1  # no longer linked
    grid.channel = 8
    assert sel.channel == 8 and ex.channel == -1


def test_a_value_a_view_cannot_show_is_said_in_that_view_until_it_follows_again(demo, closing):
    """One mechanism for every view (SelectionMixin._sel_refuse): the view keeps its own value
    and its selection_note says which value it did not take and what it shows instead."""
    sel = Selection()
    grid = FilterGrid(demo.model, "features.0", selection=sel)  # 32 filters of a 1-channel conv
    closing(grid)
    assert grid.selection_note == ""
    sel.layer = "features.7"  # a ReLU: no weights to show
    assert grid.layer == "features.0"
    assert "The shared selection's layer is 'features.7', which this view cannot show" in grid.selection_note
    assert "it keeps 'features.0'" in grid.selection_note
    assert grid.get_state("selection_note")["selection_note"] == grid.selection_note  # synced to the page
    sel.layer = "features.3"  # a conv it can show: the note goes
    assert grid.layer == "features.3" and grid.selection_note == ""
    sel.layer = "features.7"
    assert grid.selection_note
    grid.layer = "features.0"  # the user's own choice in this view: no note about the Selection
    assert grid.selection_note == ""
    with pytest.raises(traitlets.TraitError, match="read-only"):
        grid.selection_note = "forged"
