"""Tests for the OIPOptimizer widget, in plain Python (no browser, no kernel).

Known answers come from :func:`cnnwidgets.core.optimize.optimize` called on its own and from
the demo model run directly on the optimized images.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import cnnwidgets
from cnnwidgets import OIPOptimizer, Selection
from cnnwidgets.core import optimize as opt
from cnnwidgets.core.layers import optimizer_layer

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread

SHAPE = (1, 28, 28)


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture
def oip(demo):
    """On the last conv layer, features.6 (128 channels), which the known answers below use."""
    w = OIPOptimizer(demo.model, "features.6", images=demo.images[:1], mean=demo.mean, std=demo.std)
    yield w
    w.close()


def normalize(demo, img: torch.Tensor) -> torch.Tensor:
    return (img - demo.mean[0]) / demo.std[0]


def channel_means(demo, images, layer_index: int, channels) -> np.ndarray:
    """Mean activation of ``features.<layer_index>`` channel ``channels[b]`` for image b, run directly."""
    x = normalize(demo, torch.as_tensor(images))
    with torch.no_grad():
        a = demo.model.features[: layer_index + 1](x)
    return np.array([float(a[b, c].mean()) for b, c in enumerate(channels)])


def decoded_image(w: OIPOptimizer) -> np.ndarray:
    """The images as the page gets them: the array trait through its serializer."""
    sent = w.get_state("_image")["_image"]
    assert sent["dtype"] == "uint8"
    return np.frombuffer(bytes(sent["view"]), np.uint8).reshape(sent["shape"])


def wait_for(cond, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def requires_grad_flags(model: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


def fully_convolutional() -> nn.Sequential:
    """Takes any H x W: conv, relu, conv, relu, global average pool, linear (names '0'..'6')."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3))


# ---------------------------------------------------------------- runs
def test_default_layer_is_a_mid_to_deep_conv(demo):
    """Without layer=, the objective is on the conv two thirds of the way in (of features.0, .3
    and .6: features.3), as cnnwidgets.core.layers.optimizer_layer picks it; not the first conv."""
    w = OIPOptimizer(demo.model, images=demo.images[:1], mean=demo.mean, std=demo.std)
    try:
        assert w.layer == "features.3" == optimizer_layer(demo.model, demo.images[:1])
        assert w.run(steps=3).shape == (1, *SHAPE)
    finally:
        w.close()


def test_defaults(oip):
    assert oip.layer == "features.6"  # given by the fixture
    assert oip.layers == [f"features.{i}" for i in range(8)] + [f"classifier.{i}" for i in range(5)]
    assert oip.channel == 0 and oip.batch_channels == [] and oip.n_classes == 10
    assert oip.result is None and oip.history == [] and not oip.running
    # the starting image is on the page before any run: gray noise of the seed
    start = opt.gray_noise(SHAPE, 1, 0)
    np.testing.assert_array_equal(decoded_image(oip)[0, :, :, 0],
                                  (start[0, 0] * 255).round().to(torch.uint8).numpy())
    assert oip._image_info["final"] is False


def test_run_returns_images_and_history(oip, demo):
    r = oip.run(steps=25)
    assert isinstance(r, np.ndarray)
    assert r.shape == (1, *SHAPE) and r.dtype == np.float32
    assert r.min() >= 0.0 and r.max() <= 1.0
    h = oip.history
    assert len(h) == 25
    assert h[-1] > h[0] and np.mean(h[-5:]) > np.mean(h[:5])  # increasing overall
    res = oip.result
    assert res.steps_done == 25 and not res.stopped
    np.testing.assert_array_equal(r, res.images.numpy())
    assert h == res.history
    # the objective is the mean of channel 0 of features.6, as the model computes it
    start = opt.gray_noise(SHAPE, 1, 0)
    got_end, got_start = channel_means(demo, r, 6, [0])[0], channel_means(demo, start, 6, [0])[0]
    assert float(res.final_values[0]) == pytest.approx(got_end, rel=1e-4, abs=1e-5)
    assert got_end > got_start
    # what the page shows
    assert oip.step == 25 and oip.value == pytest.approx(h[-1])
    assert oip._image_info["final"] is True and oip._image_info["channels"] == [0]
    want = (res.images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(decoded_image(oip), want)
    np.testing.assert_allclose(np.asarray(oip._line.y), h)
    np.testing.assert_array_equal(np.asarray(oip._line.x), np.arange(1, 26))
    assert oip.status.startswith("done after 25 steps")
    assert oip.running is False


def test_run_equals_core_optimize(oip, demo):
    r = oip.run(steps=15)
    res = opt.optimize(demo.model, opt.channel("features.6", 0), SHAPE, steps=15, lr=oip.lr,
                       init=opt.gray_noise(SHAPE, 1, 0), mean=demo.mean, std=demo.std, seed=0)
    np.testing.assert_array_equal(r, res.images.numpy())
    assert oip.history == res.history


def test_negate_lowers_the_channel(oip, demo):
    oip.negate = True
    oip.channel = 3
    r = oip.run(steps=25)
    h = oip.history
    assert h[-1] > h[0]  # the negated objective goes up ...
    start = opt.gray_noise(SHAPE, 1, 0)
    end_act, start_act = channel_means(demo, r, 6, [3])[0], channel_means(demo, start, 6, [3])[0]
    assert end_act < start_act  # ... so the channel itself goes down
    # row k + 1 of the history is the objective of the image after step k: minus its channel mean
    for k, snap in oip.result.snapshots.items():
        if k + 1 < len(h):
            assert h[k + 1] == pytest.approx(-channel_means(demo, snap, 6, [3])[0], rel=1e-4, abs=1e-5)


def test_batch_mode(demo):
    w = OIPOptimizer(demo.model, "features.6", channel=[0, 1, 2], images=demo.images[:1], mean=demo.mean, std=demo.std)
    try:
        assert w.batch_channels == [0, 1, 2] and w.channel == 0 and w.batch == 3
        r = w.run(steps=60)  # (channel 2 can first drop, then climbs)
        assert r.shape == (3, *SHAPE) and r.dtype == np.float32
        res = w.result
        assert res.per_image.shape == (60, 3)
        np.testing.assert_allclose(w.history, res.per_image.mean(dim=1).numpy(), rtol=1e-6)
        assert (res.per_image[-1] > res.per_image[0]).all()  # every image's own channel went up
        np.testing.assert_allclose(res.final_values.numpy(), channel_means(demo, r, 6, [0, 1, 2]), rtol=1e-4, atol=1e-5)
        assert not np.array_equal(r[0], r[1])
        assert w._image.shape == (3, 28, 28, 1) and w._image_info["channels"] == [0, 1, 2]
        assert decoded_image(w).shape == (3, 28, 28, 1)
        assert len(w.probabilities) == 10 and sum(w.probabilities) == pytest.approx(1.0, abs=1e-5)
    finally:
        w.close()


def test_same_seed_same_result(oip):
    a = oip.run(steps=12)
    b = oip.run(steps=12)
    np.testing.assert_array_equal(a, b)
    oip.seed = 1
    c = oip.run(steps=12)
    assert not np.array_equal(a, c)
    oip.seed = 0
    np.testing.assert_array_equal(oip.run(steps=12), a)


def test_class_objective_and_probabilities(oip, demo):
    oip.objective, oip.class_index = "class", 3
    r = oip.run(steps=40)
    x = normalize(demo, torch.from_numpy(r))
    with torch.no_grad():
        logits = demo.model(x)
    np.testing.assert_allclose(oip.probabilities, torch.softmax(logits[0], 0).numpy(), rtol=1e-4, atol=1e-6)
    assert oip.history[-1] > oip.history[0]
    assert float(oip.result.final_values[0]) == pytest.approx(float(logits[0, 3]), rel=1e-4, abs=1e-5)
    assert f"class {int(logits[0].argmax())}" in oip.status


def test_run_in_the_background(oip):
    t0 = time.monotonic()
    assert oip.run(steps=60, block=False) is None
    assert time.monotonic() - t0 < 1.0  # returns at once
    assert oip.running is True
    assert oip.wait(60) is True
    assert oip.running is False
    assert oip.result.images.shape == (1, *SHAPE) and oip.result.steps_done == 60
    assert len(oip.history) == 60


def test_stop_ends_within_a_step_or_two(oip):
    oip.run(steps=100_000, block=False)
    assert wait_for(lambda: len(oip.history) >= 5)
    n = len(oip.history)
    t0 = time.monotonic()
    oip.stop()
    assert time.monotonic() - t0 < 5
    assert not oip._thread.is_alive() and oip.running is False
    res = oip.result
    assert res.stopped and n <= res.steps_done <= n + 2
    assert len(oip.history) == res.steps_done
    time.sleep(0.2)
    assert len(oip.history) == res.steps_done  # no longer growing
    assert oip.status.startswith("stopped after")
    assert oip._image_info["final"] is True


def test_pause_and_resume(oip):
    oip.run(steps=100_000, block=False)
    try:
        assert wait_for(lambda: len(oip.history) >= 3)
        oip.pause()
        assert oip.paused is True
        assert wait_for(lambda: oip.status.startswith("paused at step"))
        n = len(oip.history)
        time.sleep(0.3)
        assert len(oip.history) == n  # nothing happens while paused
        assert oip.running is True and oip._thread.is_alive()
        assert oip.status == f"paused at step {n}"  # 1-based: n steps done, as the history holds
        assert oip.step == n and oip._image_info["step"] == n  # the paused image is on the page
        oip.resume()
        assert oip.paused is False
        assert wait_for(lambda: len(oip.history) >= n + 5)
    finally:
        oip.stop()
    assert not oip._thread.is_alive()
    # stop while paused ends the run too
    oip.run(steps=100_000, block=False)
    assert wait_for(lambda: len(oip.history) >= 2)
    oip.pause()
    assert wait_for(lambda: oip.status.startswith("paused"))
    oip.stop()
    assert not oip._thread.is_alive() and oip.result.stopped


def test_page_messages(oip):
    """The page's messages (messages.json) reach _on_<type> through the base dispatcher."""
    assert not hasattr(oip, "_on_page_message")
    oip.steps = 100_000
    oip._dispatch_message(oip, {"type": "start"}, [])
    assert wait_for(lambda: len(oip.history) >= 2)
    oip._dispatch_message(oip, {"type": "pause"}, [])
    assert oip.paused
    oip._dispatch_message(oip, {"type": "resume"}, [])
    assert not oip.paused
    oip._dispatch_message(oip, {"type": "stop"}, [])
    assert oip.wait(30) and oip.result.stopped
    oip._dispatch_message(oip, {"type": "reset"}, [])
    assert oip.result is None and oip.history == [] and oip.step == 0 and oip.status == "reset"
    assert oip._image_info["final"] is False
    for content in ({"type": "bogus"}, "hello", None, [1, 2], {"no": "type"}):
        oip.last_error = None
        oip._dispatch_message(oip, content, [])
        assert "unknown message" in oip.last_error
    assert not oip.running


def test_live_image_updates_are_throttled(oip):
    stamps: list[float] = []
    oip.observe(lambda c: stamps.append(time.monotonic()), "_image")
    t0 = time.monotonic()
    oip.run(steps=300)
    elapsed = time.monotonic() - t0
    assert len(oip.history) == 300
    rate = OIPOptimizer.MAX_UPDATES_PER_SECOND
    assert len(stamps) <= rate * elapsed + 3, (len(stamps), elapsed)
    assert len(stamps) < 300  # fewer than one per step
    gaps = np.diff(stamps[:-1])  # the last one is the final image, always sent
    assert len(gaps) >= 2
    assert np.median(gaps) >= 0.9 / rate, gaps
    assert gaps.min() >= 0.5 / rate, gaps
    assert oip._image_info["final"] is True


# ---------------------------------------------------------------- Selection
def test_selection_targets_the_channel(demo):
    sel = Selection()
    w = OIPOptimizer(demo.model, images=demo.images[:1], selection=sel, mean=demo.mean, std=demo.std)
    try:
        assert sel.layer == "features.3" and sel.channel == 0  # the optimizer fills an empty Selection
        sel.channel = 5
        assert w.channel == 5
        sel.channel = 500  # beyond features.3: ignored
        assert w.channel == 5
        sel.layer = "features.6"
        assert w.layer == "features.6" and w.channel == 5  # the layer comes with the Selection's channel
        sel.channel = 127
        assert w.channel == 127
        sel.channel = 128
        assert w.channel == 127
        sel.layer = "features.3"  # 64 channels: the Selection's 128 is none of them, 127 neither
        assert w.layer == "features.3" and w.channel == 0
        sel.channel = 63
        assert w.channel == 63
        w.channel = 7
        assert sel.channel == 7
        w.set_state({"channel": 8})
        assert sel.channel == 8
        r = w.run(steps=5)
        assert r.shape == (1, *SHAPE)
        assert w._image_info["channels"] == [8]
    finally:
        w.close()


def test_explicit_layer_and_channel_are_kept_without_overriding_the_selection(demo):
    sel = Selection(layer="features.0", channel=2)
    w = OIPOptimizer(demo.model, "features.3", channel=9, images=demo.images[:1], selection=sel)
    try:
        assert (w.layer, w.channel) == ("features.3", 9)
        assert (sel.layer, sel.channel) == ("features.0", 2)  # the other views keep theirs
        sel.channel = 4  # channel 4 of features.0: not the optimizer's layer, so not its channel
        assert (w.layer, w.channel) == ("features.3", 9)
        sel.layer = "features.3"  # later changes are shared as usual: the layer, with its channel
        assert (w.layer, w.channel) == ("features.3", 4)
        sel.channel = 7
        assert w.channel == 7
        w.channel = 8  # and back: the Selection gets the pair
        assert (sel.layer, sel.channel) == ("features.3", 8)
        w.layer = "features.6"
        assert (sel.layer, sel.channel) == ("features.6", 8)
    finally:
        w.close()


# ---------------------------------------------------------------- bad input
def test_channel_out_of_range(demo, oip):
    with pytest.raises(ValueError, match=r"0\.\.127"):
        OIPOptimizer(demo.model, "features.6", channel=128, images=demo.images[:1])
    with pytest.raises(ValueError, match=r"0\.\.127"):
        OIPOptimizer(demo.model, "features.6", channel=[0, 200], images=demo.images[:1])
    with pytest.raises(ValueError, match="empty"):
        OIPOptimizer(demo.model, "features.6", channel=[], images=demo.images[:1])
    with pytest.raises(ValueError, match=r"0\.\.127"):
        oip.channel = 128
    with pytest.raises(ValueError, match=r"0\.\.127"):
        oip.channel = -1
    assert oip.channel == 0
    with pytest.raises(ValueError, match=r"0\.\.127"):
        oip.batch_channels = [1, 128]
    with pytest.raises(ValueError, match=r"0\.\.9"):
        oip.objective, oip.class_index = "class", 10
        oip.run(steps=3)


def test_layer_change_falls_back_to_a_channel_the_layer_has(oip):
    """A channel the new layer lacks falls back to 0, so Start keeps working."""
    oip.channel = 100
    oip.layer = "features.0"  # 32 channels
    assert oip.channel == 0
    assert oip.run(steps=3).shape == (1, 1, 28, 28)
    oip.batch_channels = []


def test_lr_and_steps(demo, oip):
    lr = oip.lr
    assert lr > 0
    for bad in (0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="lr"):
            oip.lr = bad
    assert oip.lr == lr
    with pytest.raises(ValueError, match="lr"):
        OIPOptimizer(demo.model, images=demo.images[:1], lr=0)
    for bad in (0, -5):
        with pytest.raises(ValueError, match="steps"):
            oip.run(steps=bad)
        with pytest.raises(ValueError, match="steps"):
            oip.steps = bad
    with pytest.raises(ValueError, match="steps"):
        OIPOptimizer(demo.model, images=demo.images[:1], steps=0)
    assert oip.steps == 200 and oip._thread is None


def test_unknown_layer(demo, oip):
    with pytest.raises(ValueError, match="nope") as info:
        OIPOptimizer(demo.model, "nope", images=demo.images[:1])
    assert "'features.6'" in str(info.value) and "'classifier.4'" in str(info.value)
    with pytest.raises(ValueError, match="'features.0'"):
        oip.layer = "nope"
    assert oip.layer == "features.6"


def test_channel_objective_on_a_flat_layer(oip):
    oip.layer = "classifier.1"
    with pytest.raises(ValueError, match="neuron"):
        oip.run(steps=3)
    oip.objective = "neuron"
    r = oip.run(steps=10)
    assert r.shape == (1, *SHAPE) and oip.history[-1] > oip.history[0]


def test_other_bad_values(oip):
    for name, value in [("objective", "loss"), ("param", "wavelet"), ("init", "white"), ("step_rule", "sgd"),
                        ("l2", -1.0), ("jitter", -1), ("blur_every", -2)]:
        old = getattr(oip, name)
        with pytest.raises(ValueError):
            setattr(oip, name, value)
        assert getattr(oip, name) == old


@pytest.mark.parametrize(("state", "text"), [({"channel": 999}, "channel"), ({"lr": 0}, "lr"), ({"steps": 0}, "steps"),
                                             ({"layer": "nope"}, "nope"), ({"objective": "loss"}, "objective")])
def test_bad_values_from_the_page_are_ignored(oip, state, text):
    before = {k: getattr(oip, k) for k in ("channel", "lr", "steps", "layer", "objective")}
    oip.last_error = None
    oip.set_state(state)  # must not raise
    assert {k: getattr(oip, k) for k in before} == before
    assert oip.last_error is not None and text in oip.last_error


def test_needs_input_shape(demo):
    with pytest.raises(ValueError, match="input_shape"):
        OIPOptimizer(demo.model)
    with pytest.raises(ValueError, match="input_shape"):
        OIPOptimizer(demo.model, input_shape=(28, 28))
    with pytest.raises(ValueError, match=r"rejects inputs of shape \(1, 20, 32\)"):
        OIPOptimizer(demo.model, input_shape=(1, 20, 32))  # its Linear needs 28 x 28
    with pytest.raises(TypeError, match="Selection"):
        OIPOptimizer(demo.model, input_shape=SHAPE, selection="sel")
    w = OIPOptimizer(demo.model, input_shape=SHAPE)  # no images needed then
    try:
        assert w.run(steps=3).shape == (1, *SHAPE)
    finally:
        w.close()


@pytest.mark.parametrize("param", ["pixel", "fourier"])
def test_non_square_input_keeps_its_shape(param):
    w = OIPOptimizer(fully_convolutional(), input_shape=(1, 20, 32), param=param)
    try:
        assert w.layer == "2"  # the last conv
        r = w.run(steps=8)
        assert r.shape == (1, 1, 20, 32)
        assert decoded_image(w).shape == (1, 20, 32, 1)
        assert len(w.history) == 8 and w.history[-1] > w.history[0]
        assert all(s.shape == (1, 1, 20, 32) for s in w.result.snapshots.values())
        assert w._snapshots.shape == (len(w.snapshot_steps), 20, 32, 1) and w._snapshots.dtype == np.uint8
    finally:
        w.close()


# ---------------------------------------------------------------- model state, close
def test_model_state_is_left_as_found(demo, count_hooks, flags):
    model = copy.deepcopy(demo.model).train()  # dropout on
    model.features[3].eval()  # mixed modes
    model.classifier[1].weight.requires_grad_(False)
    modes, grads = flags(model), requires_grad_flags(model)

    def unchanged():
        assert flags(model) == modes
        assert requires_grad_flags(model) == grads
        assert count_hooks(model) == 0
        assert all(p.grad is None for p in model.parameters())

    w = OIPOptimizer(model, images=demo.images[:1], mean=demo.mean, std=demo.std)
    try:
        unchanged()
        a = w.run(steps=6)
        unchanged()
        np.testing.assert_array_equal(w.run(steps=6), a)  # eval mode during the run: no dropout noise
        w.objective, w.class_index = "class", 4
        w.run(steps=4)
        unchanged()
        w.objective, w.layer, w.precursors, w.jitter, w.tv = "neuron", "classifier.2", 4, 2, 0.1
        w.run(steps=4)
        unchanged()
        w.run(steps=100_000, block=False)
        assert wait_for(lambda: len(w.history) >= 2)
        w.stop()
        unchanged()
        w.layer = "classifier.1"  # no spatial output: a channel objective is refused
        w.objective = "channel"
        with pytest.raises(ValueError, match="neuron"):
            w.run(steps=2)
        unchanged()
    finally:
        w.close()
    unchanged()


def test_close_stops_the_thread(demo):
    w = OIPOptimizer(demo.model, images=demo.images[:1], mean=demo.mean, std=demo.std)
    w.run(steps=100_000, block=False)
    assert wait_for(lambda: len(w.history) >= 2)
    th = w._thread
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 5
    assert not th.is_alive()
    assert th not in threading.enumerate()
    w.close()  # twice is fine
    w._dispatch_message(w, {"type": "stop"}, [])
    repr(w)


def test_features_only_model_runs_without_a_class_check():
    """A model without a classifier head (its output is a feature map) still optimizes."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    w = OIPOptimizer(net, "0", channel=[0, 1], input_shape=(3, 8, 8))
    try:
        assert w.n_classes == 0
        out = w.run(steps=3)
        assert out.shape == (2, 3, 8, 8) and w.result is not None
        assert list(w.probabilities) == []
        w.objective = "class"
        with pytest.raises(ValueError, match="classifier head"):
            w.run(steps=2)
    finally:
        w.close()


class BoxesAndScores(nn.Module):
    """A detector-like model returning the tuple (boxes N x 4, class scores N x 3)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.boxes = nn.Linear(4, 4)
        self.scores = nn.Linear(4, 3)

    def forward(self, x):
        f = self.pool(torch.relu(self.conv(x))).flatten(1)
        return self.boxes(f), self.scores(f)


def test_tuple_output_channel_objective_works_and_the_class_needs_output():
    w = OIPOptimizer(BoxesAndScores(), "conv", channel=1, input_shape=(3, 8, 8))
    try:
        assert w.n_classes == 0
        assert "tuple of 2" in w.class_note and "output=1" in w.class_note  # the example picks the scores
        assert w.class_note in w.model_note
        assert w.run(steps=5).shape == (1, 3, 8, 8) and w.history[-1] > w.history[0]
        w.objective = "class"
        with pytest.raises(ValueError, match="output="):
            w.run(steps=2)
    finally:
        w.close()
    w = OIPOptimizer(BoxesAndScores(), "conv", input_shape=(3, 8, 8), objective="class", output=1)
    try:
        assert w.n_classes == 3 and w.class_note == "" and w.model_note == ""
        w.class_index = 2
        w.run(steps=5)
        # the objective is the class-2 score, as the model computes it
        with torch.no_grad():
            score = float(BoxesAndScores()(w.result.images)[1][0, 2])
        assert float(w.result.final_values[0]) == pytest.approx(score, rel=1e-4)
        assert w.history[-1] > w.history[0]
        assert len(w.probabilities) == 3 and sum(w.probabilities) == pytest.approx(1.0)
    finally:
        w.close()


def test_an_output_that_selects_nothing_is_refused_at_once():
    with pytest.raises(ValueError, match="output=5 does not select anything"):
        OIPOptimizer(BoxesAndScores(), input_shape=(3, 8, 8), output=5)
    with pytest.raises(TypeError, match="output must be"):
        OIPOptimizer(BoxesAndScores(), input_shape=(3, 8, 8), output=1.5)


@pytest.mark.parametrize(
    ("settings", "core_kw"),
    [
        ({"clip_percentile": 30.0, "clip_by": "contribution"},
         {"image_ops": [opt.clip_weak_pixels(30.0, by="contribution")]}),
        ({"scale": 0.1}, {"transforms": [opt.scale([0.9, 1.0, 1.1])]}),
    ],
    ids=["clip-by-contribution", "scale"],
)
def test_clip_by_and_scale_reach_the_core(oip, demo, settings, core_kw):
    for k, v in settings.items():
        setattr(oip, k, v)
    r = oip.run(steps=12)
    res = opt.optimize(demo.model, opt.channel("features.6", 0), SHAPE, steps=12, lr=oip.lr,
                       init=opt.gray_noise(SHAPE, 1, 0), mean=demo.mean, std=demo.std, seed=0, **core_kw)
    plain = opt.optimize(demo.model, opt.channel("features.6", 0), SHAPE, steps=12, lr=oip.lr,
                         init=opt.gray_noise(SHAPE, 1, 0), mean=demo.mean, std=demo.std, seed=0)
    np.testing.assert_array_equal(r, res.images.numpy())
    assert not np.array_equal(r, plain.images.numpy())  # the setting changed the run


@pytest.mark.parametrize(("name", "value"), [("clip_by", "size"), ("clip_percentile", 120.0), ("scale", 1.5),
                                             ("scale", -0.1)])
def test_bad_clip_and_scale_values(oip, name, value):
    old = getattr(oip, name)
    with pytest.raises(ValueError, match=name):
        setattr(oip, name, value)
    assert getattr(oip, name) == old


# ---------------------------------------------------------------- the contract with the page
def test_choices_are_enums_of_the_core_aliases(oip):
    """Objective, start image, parameterization, step rule and clipping rule are Enum traits
    whose values are the Literal aliases' (the core's where it has one)."""
    from typing import get_args

    from cnnwidgets.widgets import oip_optimizer as mod
    want = {"objective": get_args(mod.ObjectiveKind), "param": get_args(opt.ParamName),
            "init": (*get_args(opt.InitName), "dataset"), "step_rule": get_args(opt.StepRule),
            "clip_by": get_args(mod.ClipBy), "status_kind": get_args(mod.StatusKind)}
    for name, values in want.items():
        trait = oip.traits()[name]
        assert isinstance(trait, cnnwidgets.widgets._base.Choice), name
        assert trait.values == tuple(values), name
    assert want["step_rule"] == ("rms", "adam") and want["param"] == ("pixel", "fourier")
    with pytest.raises(ValueError, match=r"objective must be 'channel', 'neuron' or 'class', got 'loss'"):
        oip.objective = "loss"


def test_rejected_page_values_show_next_to_their_control_until_the_next_valid_change(oip):
    oip.set_state({"channel": 500})
    assert oip.channel == 0
    assert "channel must be in 0..127" in oip.control_errors["channel"] and "500" in oip.control_errors["channel"]
    oip.set_state({"lr": -1})
    assert oip.lr == 0.02 and "lr must be" in oip.control_errors["lr"]
    oip.set_state({"channel": 5})
    assert oip.channel == 5 and "channel" not in oip.control_errors and "lr" in oip.control_errors
    oip.set_state({"lr": 0.05})
    assert oip.control_errors == {}


def test_arrays_travel_through_the_array_serializer(oip):
    state = oip.get_state(["_image", "_snapshots"])
    assert state["_image"]["shape"] == [1, 28, 28, 1] and state["_image"]["dtype"] == "uint8"
    assert state["_snapshots"] is None and oip.snapshot_steps == []
    oip.run(steps=12)
    snaps = oip.get_state("_snapshots")["_snapshots"]
    assert snaps["shape"] == [len(oip.snapshot_steps), 28, 28, 1]
    assert not any(k.endswith("_meta") for k in oip.keys)


_D3_FORMAT = re.compile(r"^(?:(.)?([<>=^]))?([+\-( ])?([$#])?(0)?(\d+)?(,)?(\.\d+)?(~)?([eEfgGnoprsxXdcb%])?$")


def assert_valid_tick_formats(w: OIPOptimizer) -> None:
    """Both axes of the loss chart have an explicit, valid d3-format tick format (none makes
    bqplot guess one from the ticks, which gives ".undefinedg" on an axis without data), and
    an axis without data has a domain to draw ticks for."""
    for axis in w.chart.axes:
        fmt = axis.tick_format
        assert isinstance(fmt, str) and fmt and "undefined" not in fmt and _D3_FORMAT.match(fmt), fmt
    xs, ys = w._scales
    if len(w._line.x) == 0:
        assert (xs.min, xs.max, ys.min, ys.max) == (0.0, 1.0, 0.0, 1.0)


def test_the_loss_chart_tick_formats_stay_valid_through_runs_reset_and_restart(oip):
    fig = oip.chart
    assert fig.layout.width == "100%"  # follows the view's width, no fixed pixel size
    seen: list[Any] = []
    for axis in fig.axes:
        axis.observe(lambda c: seen.append(c["new"]), "tick_format")
    assert_valid_tick_formats(oip)
    oip.run(steps=10)
    assert_valid_tick_formats(oip)
    assert oip._scales[0].min is None and oip._scales[1].max is None  # autoscaled to the data
    oip.reset()
    assert_valid_tick_formats(oip)
    assert len(oip._line.x) == 0
    oip.run(steps=100_000, block=False)  # restart, live
    assert wait_for(lambda: len(oip.history) >= 3)
    assert_valid_tick_formats(oip)
    oip.stop()
    oip.run(steps=5)
    assert_valid_tick_formats(oip)
    assert seen == []  # never changed, never unset


def test_snapshot_steps_are_one_based_like_the_step_counter(oip):
    oip.run(steps=25)
    res = oip.result
    keys = sorted(res.snapshots)
    assert keys[-1] == 24  # the core's 0-based index of the last step
    assert oip.snapshot_steps == [k + 1 for k in keys] and oip.snapshot_steps[-1] == oip.step == 25
    for i, k in enumerate(keys):
        want = (res.snapshots[k][0] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(oip._snapshots[i], want)


def test_a_running_status_shows_nothing_of_the_last_result(oip):
    oip.run(steps=10)
    assert oip.probabilities and oip.snapshot_steps and "the model says" in oip.status
    oip.run(steps=100_000, block=False)
    try:
        assert oip.probabilities == [] and oip.snapshot_steps == [] and oip._snapshots is None
        assert oip.status == "running ..." and oip.status_kind == "info"
        assert wait_for(lambda: len(oip.history) >= 2)
        assert oip.probabilities == [] and oip._image_info["final"] is False
        assert all(p is None for p in oip._image_info["predictions"])
    finally:
        oip.stop()
    assert oip.probabilities and oip._image_info["predictions"][0] is not None


def test_a_dead_map_says_so_and_what_to_try(demo):
    """features.7 (a ReLU) channel 1 is 0 everywhere for the gray start: the run used to report
    'converged after 21 steps' with a flat zero curve."""
    w = OIPOptimizer(demo.model, "features.7", channel=1, images=demo.images[:1], mean=demo.mean, std=demo.std)
    try:
        w.converge = True
        w.run(steps=200)
        assert w.result.converged and set(w.history) == {0.0}
        assert w.status.startswith("dead map: channel 1 of 'features.7' stayed exactly 0"), w.status
        assert "converged" not in w.status and w.status_kind == "warning"
        for advice in ("'multiscale'", "'dataset'", "precursors", "another channel", "'features.6' instead of 'features.7'"):
            assert advice in w.status, advice
        assert w._image_info["dead"] == [True]
        # a live channel of the same layer: no warning
        w.channel = 0
        w.run(steps=20)
        assert w.status_kind == "info" and not w.status.startswith("dead") and w._image_info["dead"] == [False]
        # a batch with one dead map: the run's outcome, and which one is dead
        w.batch_channels = [0, 1]
        w.run(steps=20)
        assert w.status.startswith("done after 20 steps; dead map: 1 of the 2 channels of 'features.7' (1)"), w.status
        assert w.status_kind == "warning" and w._image_info["dead"] == [False, True]
    finally:
        w.close()


def test_the_precursor_scan_on_a_dead_map_is_a_warning(demo):
    w = OIPOptimizer(demo.model, "features.7", channel=1, images=demo.images[:1], mean=demo.mean, std=demo.std)
    try:
        w.precursors = 2
        with pytest.raises(opt.DeadTargetError):
            w.run(steps=5)
        assert w.status.startswith("dead map: ") and "pre-ReLU" in w.status and w.status_kind == "warning"
    finally:
        w.close()


def test_failures_of_the_run_show_in_the_status(oip, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(opt, "optimize", broken)
    with pytest.raises(RuntimeError, match="simulated"):
        oip.run(steps=5)
    assert oip.status == "error: out of memory (simulated)" and oip.status_kind == "error"
    assert "RuntimeError" in oip.last_error and not oip.running
    monkeypatch.undo()
    oip.run(steps=3)  # the next run clears it
    assert oip.status_kind == "info" and oip.status.startswith("done after 3 steps")
    # a start the page asks for and the kernel refuses: said in the status, in the error colour
    oip.layer = "classifier.1"
    oip._dispatch_message(oip, {"type": "start"}, [])
    assert not oip.running and oip.status_kind == "error" and "objective='neuron'" in oip.status


def test_the_batch_gallery_names_channels_and_classes(demo):
    w = OIPOptimizer(demo.model, "features.6", channel=[4, 7, 9], images=demo.images[:1], mean=demo.mean,
                     std=demo.std, classes=[f"digit {k}" for k in range(10)])
    try:
        assert w.classes == [f"digit {k}" for k in range(10)]
        assert w._image_info["labels"] == ["channel 4", "channel 7", "channel 9"]
        r = w.run(steps=10)
        probs = opt.class_probabilities(demo.model, torch.from_numpy(r), mean=demo.mean, std=demo.std)
        preds = w._image_info["predictions"]
        for i, p in enumerate(preds):
            k = int(probs[i].argmax())
            assert p["class"] == k and p["name"] == f"digit {k}" and p["p"] == pytest.approx(float(probs[i, k]), rel=1e-5)
        top = int(np.argmax(w.probabilities))
        assert f"the model says 'digit {top}' ({top})" in w.status and "class " not in w.status
        w.objective, w.class_index = "neuron", 0
        w.run(steps=2)
        assert w._image_info["labels"] == ["neuron 4", "neuron 7", "neuron 9"]
        w.objective, w.class_index = "class", 3
        w.run(steps=2)
        assert w._image_info["labels"] == ["'digit 3' (3)"] * 3
    finally:
        w.close()
    with pytest.raises(ValueError, match="at least 10 names"):
        OIPOptimizer(demo.model, images=demo.images[:1], classes=["a", "b"])
    with pytest.raises(TypeError, match="sequence of class names"):
        OIPOptimizer(demo.model, images=demo.images[:1], classes="abc")


def test_the_layer_picker_says_type_and_output_shape(oip):
    assert list(oip.layer_labels) == oip.layers
    assert oip.layer_labels["features.6"] == "Conv2d 128x3x3"
    assert oip.layer_labels["features.7"] == "ReLU 128x3x3"
    assert oip.layer_labels["classifier.1"] == "Linear 70"


def test_start_image_settings_are_checked_and_shown_before_a_run(demo, oip):
    before = decoded_image(oip).copy()
    oip.seed = 3  # no run yet: the page shows the starting image of the new seed
    want = (opt.gray_noise(SHAPE, 1, 3)[0, 0] * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(decoded_image(oip)[0, :, :, 0], want)
    assert not np.array_equal(decoded_image(oip), before)
    oip.init = "dataset"
    oip.set_state({"dataset_index": 1})  # one dataset image: index 0 only
    assert oip.dataset_index == 0 and "0..0" in oip.control_errors["dataset_index"]
    w = OIPOptimizer(demo.model, input_shape=SHAPE)
    try:
        assert w.n_images == 0
        with pytest.raises(ValueError, match="init='dataset' needs images="):
            w.init = "dataset"
        w.set_state({"init": "dataset"})
        assert w.init == "gray" and "needs images=" in w.control_errors["init"]
    finally:
        w.close()


def test_the_view_says_when_it_cannot_follow_the_selection(demo):
    sel = Selection()
    w = OIPOptimizer(demo.model, "features.6", images=demo.images[:1], selection=sel, mean=demo.mean, std=demo.std)
    try:
        assert w.selection_note == ""
        sel.channel = 500
        assert w.channel == 0 and "channel 500 is not one of 'features.6' (0..127)" in w.selection_note
        sel.channel = 3
        assert w.channel == 3 and w.selection_note == ""
    finally:
        w.close()
