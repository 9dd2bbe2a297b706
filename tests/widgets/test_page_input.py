"""The page (or any script on the comm) is untrusted input: what it may set, and how bad values
are refused, in plain Python (no browser, no kernel).

Page updates are simulated with ``widget.set_state({...})``, the path they take in the kernel;
what the kernel sends back is caught at ``widget._send``.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from cnnwidgets.core import as_batch
import torch
import traitlets as t
from ipywidgets.widgets.widget import _remove_buffers
from torch import nn

from cnnwidgets import ActivationExplorer, ChannelCard, FilterGrid, OIPOptimizer, SaliencyViewer, Selection, TSNEScatter
from cnnwidgets.widgets._base import BaseWidget

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread

N = 20  # images per view: enough for every view, quick to build


# ---------------------------------------------------------------- fixtures and helpers
def _kw(demo):
    return {"mean": demo.mean, "std": demo.std}


@pytest.fixture
def ae(demo):
    w = ActivationExplorer(demo.model, demo.images[:N], demo.labels[:N], demo.classes, **_kw(demo))
    w.wait()
    yield w
    w.close()


@pytest.fixture
def sv(demo):
    w = SaliencyViewer(demo.model, demo.images[:N], demo.labels[:N], demo.classes, **_kw(demo))
    w.wait()
    yield w
    w.close()


@pytest.fixture
def ts(demo):
    w = TSNEScatter(demo.model, demo.images[:N], demo.labels[:N], demo.classes, method="pca", **_kw(demo))
    assert w.wait(60)
    yield w
    w.close()


@pytest.fixture
def oip(demo):
    w = OIPOptimizer(demo.model, images=demo.images[:1], **_kw(demo))
    yield w
    w.close()


@pytest.fixture
def fg(demo):
    w = FilterGrid(demo.model)
    yield w
    w.close()


@pytest.fixture
def card(demo):
    w = ChannelCard(demo.model, demo.images[:N], demo.labels[:N], demo.classes, patterns=0, **_kw(demo))
    assert w.wait(60)
    yield w
    w.close()


@pytest.fixture
def small_oip(seq_cnn):
    """An optimizer on the 8 x 8 test CNN: hundreds of steps take a fraction of a second."""
    w = OIPOptimizer(seq_cnn, "3", input_shape=(1, 8, 8))
    yield w
    w.close()


@pytest.fixture
def views(ae, sv, ts, oip, fg, card):
    sel = Selection()
    yield {"ActivationExplorer": ae, "SaliencyViewer": sv, "TSNEScatter": ts, "OIPOptimizer": oip,
           "FilterGrid": fg, "ChannelCard": card, "Selection": sel}
    sel.close()


class Sent:
    """The messages a widget sends to the page (``_send`` replaced on the instance)."""

    def __init__(self, widget):
        self.messages: list[dict] = []
        widget._send = lambda msg, buffers=None: self.messages.append(msg)

    def keys(self) -> set[str]:
        """The traits sent in update messages (binary ones travel as buffers)."""
        updates = [m for m in self.messages if m.get("method") == "update"]
        return {k for m in updates for k in m["state"]} | {p[0] for m in updates for p in m["buffer_paths"]}


def assert_json(state: dict) -> None:
    """``state`` (a get_state() or a sent message's state) is valid JSON: no NaN, no infinity."""
    plain, _, _ = _remove_buffers(state)
    json.dumps(plain, allow_nan=False)


def junk(trait, current):
    """A value of the trait's type that differs from ``current`` (None: no such value)."""
    if isinstance(trait, t.Bool):
        return not current
    if isinstance(trait, t.Int):
        return (current or 0) + 1
    if isinstance(trait, t.Float):
        return (current or 0.0) + 1.5
    if isinstance(trait, t.Unicode):
        return (current or "") + "junk"
    if isinstance(trait, t.Bytes):
        return b"junk"
    if isinstance(trait, t.Dict):
        return {"junk": 1}
    if isinstance(trait, t.List):
        return [] if current else ["junk"]
    return None


# ---------------------------------------------------------------- 1. bools are not ints
def test_every_int_trait_refuses_bools_from_python(views):
    plumbing = set(BaseWidget.class_traits())  # anywidget's and ipywidgets' own
    for cls, w in views.items():
        for name, trait in w.traits(sync=True).items():
            if name in plumbing:
                continue
            if isinstance(trait, t.Int) and not trait.read_only:
                before = getattr(w, name)
                with pytest.raises(TypeError, match="bool"):
                    setattr(w, name, True)
                assert getattr(w, name) == before and type(getattr(w, name)) is int, (cls, name)
            elif isinstance(trait, t.List) and isinstance(trait._trait, t.Int):
                with pytest.raises(t.TraitError, match="bool"):
                    setattr(w, name, [True])
                assert True not in getattr(w, name), (cls, name)


def test_page_channel_true_is_refused_and_the_projection_follows_later_clicks(ae):
    ae.set_state({"channel": True})
    ae.wait()
    assert ae.channel == -1 and "bool" in ae.last_error
    ae.set_state({"channel": 3})
    ae.wait()
    assert ae.channel == 3
    assert ae._recon_info["channel"] == 3 and ae._recon_info["strongest"] is False


def test_page_target_true_is_refused_and_busy_clears(sv):
    sv.set_state({"target": True})
    assert sv.wait(30)
    assert sv.target == -1 and not sv.busy and "bool" in sv.last_error
    sv.set_state({"target": 3})
    assert sv.wait(30)
    assert sv.target == 3 and not sv.busy and sv._heat_meta["target"] == 3


def test_page_k_true_is_refused_and_later_clicks_work(ts):
    ts.set_state({"k": True})
    assert ts.k == 8 and "bool" in ts.last_error
    ts.last_error = None
    ts.set_state({"index": 5})
    assert ts.index == 5 and ts.last_error is None
    assert ts._neighbors["index"] == 5 and len(ts._neighbors["feature"]) == 8


def test_page_channel_false_is_refused_and_run_works(oip):
    oip.set_state({"channel": False})
    assert type(oip.channel) is int and "bool" in oip.last_error
    assert oip.run(steps=2).shape == (1, 1, 28, 28)


# ---------------------------------------------------------------- 2. what the page may set
PAGE_WRITABLE = {  # what each front end sets (js/src/widgets/*.js), plus tsne k and the grid size
    "ActivationExplorer": {"index", "layer", "channel", "sort", "scale", "opacity"},
    "FilterGrid": {"layer", "mode", "normalize", "cmap", "zoom", "channel"},
    "SaliencyViewer": {"index", "method", "target", "layer", "mode", "opacity", "view", "steps", "samples",
                     "noise", "baseline", "grid_size", "evidence", "window",
                       "stride", "lrp_rule"},
    "ChannelCard": {"layer", "channel"},
    "TSNEScatter": {"index", "selected", "color_by", "hidden_classes", "k"},
    "OIPOptimizer": {"layer", "channel", "objective", "negate", "class_index", "steps", "lr", "step_rule", "param",
                   "init", "dataset_index", "seed", "precursors", "converge", "l2", "tv", "blur_every", "blur_sigma",
                   "clip_percentile", "clip_by", "jitter", "rotate", "scale"},
    "Selection": set(),
}


def test_the_page_sets_only_its_controls(views):
    """Every other synced trait (data, metadata, read-only lists, status, busy/running, the
    module's own plumbing) keeps the kernel's value whatever the page sends, and the page
    gets the kernel's value back."""
    for cls, w in views.items():
        traits = w.traits(sync=True)
        for name in sorted(set(w.keys) - PAGE_WRITABLE[cls]):
            before = w.get_state(name)[name]
            value = junk(traits[name], getattr(w, name))
            if value is None:
                continue
            sent = Sent(w)
            w.last_error = None
            w.set_state({name: value})
            assert w.get_state(name)[name] == before, (cls, name)
            assert repr(name) in w.last_error and "cannot be set from the page" in w.last_error
            assert name in sent.keys(), (cls, name)  # the page shows the kernel's value again
        assert w._page_writable == PAGE_WRITABLE[cls], cls  # declared, explicitly


def test_filter_grid_data_from_the_page_is_ignored(fg):
    img, layers = fg.to_image(), list(fg.layers)
    fg.set_state({"_grid": {}, "layers": [], "_codes": b"", "_lut": b""})
    np.testing.assert_array_equal(fg.to_image(), img)
    assert fg.layers == layers and len(layers) >= 2


def test_explorer_data_from_the_page_is_ignored(ae):
    ae.channel = 2
    ae.wait()
    maps, overlay = ae.maps_image(), ae.overlay_image()
    ae.set_state({"_maps_info": {}, "_maps": None, "_order": None, "color_scales": {}, "n_images": 0, "layers": [], "busy": True})
    np.testing.assert_array_equal(ae.maps_image(), maps)
    np.testing.assert_array_equal(ae.overlay_image(), overlay)
    assert ae.n_images == N and not ae.busy and len(ae.layers) == 8
    # a valid control in the same message still applies
    ae.set_state({"_maps_info": {}, "sort": "max"})
    ae.wait()
    assert ae.sort == "max" and ae._maps.shape[0] == 32 and ae._maps_info["sort"] == "max"


def test_saliency_data_from_the_page_is_ignored(sv):
    overlay = sv.overlay_image()
    sv.set_state({"_heat_meta": {}, "_heat": b"", "busy": True, "methods": [], "class_names": []})
    np.testing.assert_array_equal(sv.overlay_image(), overlay)
    assert not sv.busy and "vanilla" in sv.methods and len(sv.class_names) == 10


def test_oip_state_from_the_page_is_ignored(oip):
    oip.set_state({"running": True, "paused": True, "step": 7, "status": "hacked", "batch_channels": [1, 2]})
    assert not oip.running and not oip.paused and oip.step == 0 and oip.status != "hacked"
    assert oip.batch_channels == []
    assert oip.run(steps=2).shape == (1, 1, 28, 28)


# ---------------------------------------------------------------- 3. bounded sizes
def check_bounded(w, name, value, text):
    """``value`` for ``name`` is refused from the page (unchanged, error naming the limit) and
    from Python (ValueError naming the limit)."""
    before = getattr(w, name)
    w.last_error = None
    w.set_state({name: value})
    assert getattr(w, name) == before, (name, value)
    assert w.last_error is not None and name in w.last_error and text in w.last_error, w.last_error
    with pytest.raises(ValueError, match=text.replace(".", r"\.").replace("+", r"\+")):
        setattr(w, name, value)
    assert getattr(w, name) == before


def test_oip_settings_are_bounded(oip):
    big = 1024  # 1 x 28 x 28 starting images: the count limit comes before the memory one
    for name, value, text in [
        ("precursors", 10**6, f"0..{big}"), ("precursors", -1, f"0..{big}"),
        ("jitter", 10_000, "0..28"), ("blur_sigma", 1e7, "<= 14"), ("blur_sigma", float("inf"), "<= 14"),
        ("steps", 10**9, "1..100000"), ("blur_every", 10**9, "0..100000"),
        ("lr", float("inf"), "<= 100"), ("lr", 1e6, "<= 100"), ("l2", float("inf"), "<= 10000"),
        ("tv", 1e9, "<= 10000"), ("rotate", 1e9, "<= 180"), ("seed", -1, "0..4294967295"),
        ("seed", 2**40, "0..4294967295"), ("class_index", 10**6, "0..9"), ("clip_percentile", float("nan"), "100"),
    ]:
        check_bounded(oip, name, value, text)
    oip.precursors = big  # the limit itself is fine
    assert oip.precursors == big


def test_oip_python_arguments_are_bounded(oip, demo):
    try:
        with pytest.raises(ValueError, match=r"1\.\.100000"):
            oip.run(steps=10**9, block=False)
    finally:
        oip.stop()
    assert oip.steps == 200 and not oip.running and oip.result is None
    with pytest.raises(ValueError, match=r"1\.\.100000"):
        OIPOptimizer(demo.model, images=demo.images[:1], steps=10**9)
    with pytest.raises(ValueError, match=r"input_shape C must be in 1\.\.64"):
        OIPOptimizer(demo.model, input_shape=(65, 28, 28))
    with pytest.raises(ValueError, match="at most 64"):
        OIPOptimizer(demo.model, channel=[0] * 65, images=demo.images[:1])
    with pytest.raises(TypeError, match="bool"):
        OIPOptimizer(demo.model, channel=True, images=demo.images[:1])


def test_saliency_sizes_are_bounded(sv):
    for name, value, text in [("grid_size", 10**6, "1..100"), ("steps", 10**6, "1..1000"),
                              ("samples", 1001, "1..1000"), ("noise", float("inf"), "<= 1"),
                              ("opacity", float("nan"), "<= 1")]:
        check_bounded(sv, name, value, text)


def test_tsne_sizes_are_bounded(ts):
    check_bounded(ts, "k", 10**6, "1..64")
    for name, value, text in [("aspect", 10.0, ">= 0.2 and <= 2"), ("aspect", 0.01, ">= 0.2 and <= 2"),
                              ("point_size", 1e9, "<= 64"), ("perplexity", float("inf"), "<= 1000"),
                              ("seed", -1, "0..4294967295")]:
        with pytest.raises(ValueError, match=text.replace(".", r"\.")):
            setattr(ts, name, value)
    ts.last_error = None
    ts.set_state({"hidden_classes": [1, 10**9]})
    assert ts.hidden_classes == [] and "0..32767" in ts.last_error
    ts.set_state({"hidden_classes": [3, 3, 1, 3]})
    assert ts.hidden_classes == [3, 1]
    ts.set_state({"hidden_classes": []})  # (hidden classes' points are never selected)
    ts.set_state({"selected": [2, 5] * 50_000})  # each index once: never more than N entries
    assert ts.selected == [2, 5]
    with pytest.raises(ValueError, match=r"1\.\.256"):
        ts.mosaic(grid=10**5)  # (10**5 * 28)**2 pixels
    assert ts.mosaic(grid=3).shape == (3 * 28, 3 * 28, 1)


def test_filter_grid_sizes_are_bounded(fg):
    with pytest.raises(ValueError, match=r"1\.\.32"):
        fg.to_image(zoom=33)
    with pytest.raises(TypeError, match="bool"):
        fg.to_image(zoom=True)
    for name, value, text in [("height", 10**6, "16..4096"), ("columns", 10**6, "0..4096")]:
        with pytest.raises(ValueError, match=text.replace(".", r"\.")):
            setattr(fg, name, value)
    check_bounded(fg, "zoom", 33, "1..32")


def test_explorer_batch_view_size_is_bounded(ae):
    with pytest.raises(ValueError, match=r"1\.\.100"):
        ae.request_batch_view(n=10**6)
    check_bounded(ae, "opacity", float("inf"), "<= 1")


# ---------------------------------------------------------------- 4. bad events, NaN
@pytest.mark.parametrize("selected", [["x"], [float("nan")], [2.5], [99], [-1]])
def test_bad_bar_selection_is_absorbed(sv, selected):
    sv.index = 3
    assert sv.wait(30)
    before = sv.target
    sv.last_error = None
    sv._bars.set_state({"selected": selected})  # must not raise
    assert sv.target == before and "selected bar" in sv.last_error
    sv._bars.set_state({"selected": [4]})  # and the next click works
    assert sv.wait(30)
    assert sv.target == 4 and sv._heat_meta["target"] == 4


class Log(nn.Module):
    def forward(self, x):
        return torch.log(x)  # NaN for the negative outputs of the conv before it


def test_a_diverging_run_sends_no_nan_and_says_so():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), Log(), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    w = OIPOptimizer(model, "1", input_shape=(1, 8, 8))
    try:
        sent = Sent(w)
        w.run(steps=5)
        assert np.isnan(w.history).all()  # the run itself went NaN ...
        assert w.status.startswith("diverged") and "lr" in w.status
        state = w.get_state()
        assert_json(state)  # ... but the page gets valid JSON
        assert state["value"] is None and None in state["probabilities"]
        assert sent.messages
        for m in sent.messages:
            assert_json(m["state"])
    finally:
        w.close()


def test_non_finite_values_in_any_json_trait_reach_the_page_as_null(ae, ts):
    ae._image_info = {**ae._image_info, "probability": float("nan"), "extra": [1.0, float("inf")]}
    state = ae.get_state("_image_info")
    assert_json(state)
    assert state["_image_info"]["probability"] is None and state["_image_info"]["extra"] == [1.0, None]
    assert np.isnan(ae._image_info["probability"])  # the kernel keeps its value
    ts._neighbors = {"index": 1, "score": np.float32("-inf")}
    assert_json(ts.get_state())


# ---------------------------------------------------------------- 5. one run at a time
def test_second_run_is_refused_while_one_runs(small_oip):
    w = small_oip
    w.run(steps=300, block=False)
    w.pause()  # holds the run in progress
    try:
        with pytest.raises(RuntimeError, match=r"in progress.*stop\(\).*wait\(\)"):
            w.run(steps=5)
        with pytest.raises(RuntimeError, match="in progress"):
            w.start()
        assert w.steps == 300 and w.running
        w.last_error = None
        w._dispatch_message(w, {"type": "start"}, [])  # the page's start button
        assert "in progress" in w.last_error
    finally:
        w.resume()
    assert w.wait(60)
    assert w.result.steps_done == 300 and len(w.history) == 300 and not w.result.stopped
    assert w.run(steps=3).shape == (1, 1, 8, 8)  # after it, a new run starts


def test_two_runs_started_at_once_one_is_refused(small_oip):
    w = small_oip
    check_ready = w._check_ready
    w._check_ready = lambda: (time.sleep(0.3), check_ready())[1]  # a slow start: both are inside it at once
    barrier = threading.Barrier(2)
    outcomes: list = []

    def go():
        barrier.wait()
        try:
            w.run(steps=200)
            outcomes.append(w.result.steps_done)
        except RuntimeError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    errors = [o for o in outcomes if isinstance(o, RuntimeError)]
    assert len(outcomes) == 2 and len(errors) == 1 and "in progress" in str(errors[0])
    assert [o for o in outcomes if not isinstance(o, RuntimeError)] == [200]


# ---------------------------------------------------------------- 6. labels and images
def test_tsne_one_huge_label_is_refused_at_once(demo):
    labels = np.zeros(N, np.int64)
    labels[3] = 10**6
    t0 = time.monotonic()
    with pytest.raises(ValueError, match=r"0\.\.32767, got 1000000"):
        TSNEScatter(demo.model, demo.images[:N], labels, method="pca")
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("labels", [
    np.arange(N) % 10 + 0.5,  # truncated before
    np.where(np.arange(N) == 2, np.nan, 1.0),  # NaN became -9223372036854775808
    np.ones(N),  # whole floats too: cast them yourself
    torch.ones(N),
    np.ones(N, bool),
])
def test_non_integer_labels_are_refused(demo, labels):
    for make in (lambda: TSNEScatter(demo.model, demo.images[:N], labels, method="pca"),
                 lambda: ActivationExplorer(demo.model, demo.images[:N], labels),
                 lambda: SaliencyViewer(demo.model, demo.images[:N], labels)):
        with pytest.raises(TypeError, match=r"integer class indices.*astype\(int\)"):
            make()


def test_negative_labels_are_refused(demo):
    with pytest.raises(ValueError, match=r"0\.\.32767, got -3"):
        ActivationExplorer(demo.model, demo.images[:N], np.full(N, -3))


def test_tsne_integer_labels_still_name_their_classes(demo):
    labels = np.arange(N) % 5
    w = TSNEScatter(demo.model, demo.images[:N], labels, method="pca")
    try:
        assert w.class_names == ["0", "1", "2", "3", "4"]
        assert np.array_equal(np.frombuffer(w._labels, np.int16), labels)
    finally:
        w.close()


def test_uint8_nchw_images_are_read_as_nchw(demo):
    nhwc = (np.random.default_rng(0).random((4, 28, 28, 1)) * 255).astype(np.uint8)
    nchw = np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))  # 4 x 1 x 28 x 28
    w = ActivationExplorer(demo.model, nchw, **_kw(demo))
    try:
        ref = ActivationExplorer(demo.model, nhwc, **_kw(demo))
        torch.testing.assert_close(w._images.batch(0, 4), ref._images.batch(0, 4))
        ref.close()
    finally:
        w.close()
    torch.testing.assert_close(as_batch(torch.from_numpy(nchw)), as_batch(nhwc))  # a uint8 tensor too
    assert as_batch(np.zeros((2, 3, 8, 3), np.uint8)).shape == (2, 3, 3, 8)  # both fit: channels last, as documented
