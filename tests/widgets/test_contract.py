"""The one widget contract every view shares (cnnwidgets/widgets/_base.py): errors shown next to
the control that caused them, failures of background work in the view, choices from the core's
Literal aliases, one ndarray serializer, one message table, and the stylesheet in ``_css``."""

from __future__ import annotations

import json
import pathlib
import re
import threading

import numpy as np
import pytest
import traitlets
from torch import nn

import cnnwidgets
from cnnwidgets.core.filters import Normalize
from cnnwidgets.core.layers import layer_labels
from cnnwidgets.widgets import _base
from cnnwidgets.widgets._base import (
    MESSAGES, ArrayTrait, BaseWidget, Choice, InvalidValue, array_from_json, array_to_json,
)
from cnnwidgets.widgets._worker import LatestWorker

JS = pathlib.Path(__file__).resolve().parents[2] / "js" / "src"


class _Probe(BaseWidget):
    """A minimal view: one choice, one bounded number, one array (uses an existing bundle)."""

    _bundle = "selection"
    _runs_model = False
    _page_writable = frozenset({"normalize", "count"})
    normalize = Choice(Normalize, "global").tag(sync=True)
    count = traitlets.Int(3).tag(sync=True)
    picture = ArrayTrait()

    @traitlets.validate("count")
    @_base.checked
    def _check_count(self, proposal):
        return _base.int_in(proposal, 1, 10, "pick 1..10")


@pytest.fixture
def probe():
    w = _Probe()
    sent = []
    w._send = lambda msg, buffers=None: sent.append(msg)
    yield w, sent
    w.close()


# ---------------------------------------------------------------- errors next to the control
def test_a_refused_page_value_is_kept_for_its_control_until_the_next_valid_change(probe):
    w, _ = probe
    w.set_state({"count": 50})
    assert w.count == 3  # rolled back
    assert set(w.control_errors) == {"count"}
    assert "count must be in 1..10, got 50" in w.control_errors["count"]
    assert "pick 1..10" in w.control_errors["count"]
    w.set_state({"normalize": "nope"})
    assert set(w.control_errors) == {"count", "normalize"}
    assert "'global', 'filter' or 'tile'" in w.control_errors["normalize"]
    w.set_state({"count": 4})  # a valid change clears that control's message only
    assert w.count == 4
    assert set(w.control_errors) == {"normalize"}
    w.set_state({"normalize": "tile"})
    assert w.control_errors == {}


def test_the_page_cannot_write_the_error_traits(probe):
    w, _ = probe
    w.set_state({"control_errors": {"count": "forged"}, "view_error": "forged"})
    assert w.control_errors == {} and w.view_error == ""
    assert "cannot be set from the page" in w.last_error


def test_python_gets_the_error_as_an_exception_not_a_control_message(probe):
    w, _ = probe
    with pytest.raises(ValueError, match="count must be in 1..10"):
        w.count = 0
    with pytest.raises(ValueError, match=r"normalize must be 'global', 'filter' or 'tile', got 'x'"):
        w.normalize = "x"
    assert w.control_errors == {}


# ---------------------------------------------------------------- failures of background work
def test_a_failed_background_job_shows_in_the_view_and_the_next_report_clears_it(probe):
    w, _ = probe
    worker = LatestWorker("probe", owner=w)
    try:
        def boom():
            raise RuntimeError("the layer has no output for this input")

        worker.submit(boom)
        assert worker.wait(10)
        assert w.view_error == "RuntimeError: the layer has no output for this input"
        assert w.last_error == w.view_error
        w.report_failure(None)
        assert w.view_error == ""
    finally:
        worker.close()


def test_the_worker_does_not_keep_its_view_alive():
    import gc
    import weakref

    w = _Probe()
    worker = LatestWorker("probe", owner=w)
    ref = weakref.ref(w)
    w.close()
    del w
    gc.collect()
    assert ref() is None
    worker.close()


# ---------------------------------------------------------------- choices and arrays
def test_choice_takes_the_core_literal_and_refuses_bools():
    trait = Choice(Normalize, "filter")
    assert trait.values == ("global", "filter", "tile")
    with pytest.raises(ValueError, match="default 'x' is not one of"):
        Choice(Normalize, "x")
    w = _Probe()
    try:
        with pytest.raises(InvalidValue):
            w.normalize = True
    finally:
        w.close()


@pytest.mark.parametrize("arr", [
    np.arange(12, dtype=np.uint8).reshape(3, 4),
    np.linspace(-1, 1, 10).reshape(2, 5),  # float64 goes as float32
    np.array([[True, False]]),
    np.arange(6, dtype=np.int16)[::2],  # not contiguous
])
def test_one_ndarray_serializer_round_trips_dtype_shape_and_values(arr):
    msg = array_to_json(arr)
    assert isinstance(msg["view"], memoryview)
    assert msg["shape"] == list(arr.shape)
    back = array_from_json({**msg, "view": bytes(msg["view"])})
    expected = arr.astype(np.float32) if arr.dtype == np.float64 else arr.astype(np.uint8) if arr.dtype == bool else arr
    assert back.dtype == expected.dtype
    np.testing.assert_array_equal(back, expected)
    assert array_to_json(None) is None


def test_an_array_trait_goes_to_the_page_as_one_binary_buffer(probe):
    w, _ = probe
    from ipywidgets.widgets.widget import _remove_buffers

    w.picture = np.ones((4, 5, 3), np.uint8)
    state, paths, buffers = _remove_buffers(w.get_state(["picture"]))
    assert paths == [["picture", "view"]]
    assert len(buffers) == 1 and buffers[0].nbytes == 60
    assert state["picture"] == {"dtype": "uint8", "shape": [4, 5, 3]}


# ---------------------------------------------------------------- one table of messages
def test_every_message_the_page_sends_is_in_the_table_and_has_a_handler():
    table = json.loads((pathlib.Path(_base.__file__).with_name("messages.json")).read_text())
    assert {k: tuple(v) for k, v in table.items()} == MESSAGES
    views = {cls._bundle: cls for cls in (cnnwidgets.FilterGrid, cnnwidgets.ActivationExplorer,
                                          cnnwidgets.SaliencyViewer, cnnwidgets.OIPOptimizer,
                                          cnnwidgets.TSNEScatter, cnnwidgets.ChannelCard, cnnwidgets.Selection)}
    assert set(views) == set(MESSAGES)
    for bundle, types in MESSAGES.items():
        source = (JS / "widgets" / f"{bundle}.js").read_text()
        # every literal type the page sends, through send(...) / model.send({type: ...})
        sent = set(re.findall(r"""send\(\s*["'](\w+)["']""", source))
        sent |= set(re.findall(r"""send\(\s*\{\s*type:\s*["'](\w+)["']""", source))
        assert sent <= set(types), f"{bundle}.js sends {sorted(sent - set(types))}, not in messages.json"
        cls = views[bundle]
        if not hasattr(cls, "_on_page_message"):
            missing = [t for t in types if not hasattr(cls, f"_on_{t}")]
            assert not missing, f"{cls.__name__} has no handler for {missing}"


def test_an_unknown_message_is_logged_not_raised(probe):
    w, _ = probe
    w._bundle = "oip_optimizer"  # a bundle that takes messages
    w._dispatch_message(w, {"type": "format_disk"})
    assert "unknown message" in w.last_error and "'start'" in w.last_error


# ---------------------------------------------------------------- the stylesheet and the module
def test_every_view_loads_the_one_stylesheet_and_its_bundle(probe):
    w, _ = probe
    css = _base.STYLESHEET.read_text()
    assert w._css == css
    assert "--jp-ui-font-color1" in css and "--vscode-editor-foreground" in css
    assert w._esm == _base.bundle("selection").read_text()
    # no colour is hard-coded in the JS of the views: text colours come from the stylesheet
    for f in (JS / "widgets").glob("*.js"):
        text = f.read_text()
        assert not re.search(r"""color:\s*["']#""", text), f"{f.name} hard-codes a text colour"


# ---------------------------------------------------------------- layer pickers
def test_layer_labels_give_type_and_output_shape():
    import torch

    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    labels = layer_labels(net, torch.zeros(1, 3, 8, 8))
    assert labels == {"0": "Conv2d 8x8x8", "1": "ReLU 8x8x8", "2": "MaxPool2d 8x4x4", "3": "Flatten 128", "4": "Linear 10"}
    assert layer_labels(net, torch.zeros(1, 3, 8, 8), names=["2", "4"]) == {"2": "MaxPool2d 8x4x4", "4": "Linear 10"}


def test_layer_labels_share_one_recorded_pass_with_view_defaults(monkeypatch):
    import torch

    from cnnwidgets.core import layers

    passes = []
    real = layers._record_forward
    monkeypatch.setattr(layers, "_record_forward", lambda m, x: passes.append(1) or real(m, x))
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    seen = []
    net.register_forward_hook(lambda *a: seen.append(1))
    x = torch.zeros(1, 1, 6, 6)
    layer_labels(net, x)
    layer_labels(net, x)
    layers.view_defaults(net, x)
    assert len(passes) == 1
    assert seen == [] and net.training  # the user's hooks and mode never see our pass
    layer_labels(net, torch.zeros(1, 1, 9, 9))  # another size: another pass
    assert len(passes) == 2
