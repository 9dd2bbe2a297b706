"""Tests for the ActivationExplorer widget, in plain Python (no browser, no kernel).

Known answers come from running the demo model directly (``model.features[:k + 1](x)``),
from :mod:`cnnwidgets.core` functions called on their own, or from values computed by hand.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time

import numpy as np
import pytest

from tests.conftest import view_pre_hook
import torch
from torch import nn

import cnnwidgets
from cnnwidgets import ActivationExplorer
from cnnwidgets.core.activations import map_stats, maps_codes
from cnnwidgets.core.colormaps import gray_lut, lut
from cnnwidgets.core.filters import render_grid
from cnnwidgets.widgets.activation_explorer import OVERLAY_CMAP, _maps_frame, blend_overlay

DEMO_LAYERS = [f"features.{i}" for i in range(8)]
#: (channels, height, width) of each demo layer's output for a 28 x 28 digit
DEMO_SHAPES = {
    "features.0": (32, 26, 26), "features.1": (32, 26, 26), "features.2": (32, 13, 13),
    "features.3": (64, 11, 11), "features.4": (64, 11, 11), "features.5": (64, 5, 5),
    "features.6": (128, 3, 3), "features.7": (128, 3, 3),
}  # fmt: skip


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def predictions(demo):
    with torch.no_grad():
        return demo.model(demo.images).argmax(1).numpy()


@pytest.fixture
def ex(demo):
    """A fresh explorer on the whole validation set (2000 digits)."""
    w = ActivationExplorer(demo.model, demo.images, demo.labels, demo.classes, mean=demo.mean, std=demo.std)
    yield w
    w.close()


@pytest.fixture
def ex300(demo):
    """An explorer on the first 300 digits, for passes over the whole set."""
    w = ActivationExplorer(demo.model, demo.images[:300], demo.labels[:300], demo.classes, mean=demo.mean, std=demo.std)
    yield w
    w.close()


def layer_output(demo, index: int, layer: str) -> torch.Tensor:
    """The output of demo layer ``features.k`` for image ``index``, computed directly."""
    k = int(layer.split(".")[1])
    # under the model's lock: a background deconvnet pass puts hooks on the shared model
    with torch.no_grad():
        return demo.model.features[: k + 1](demo.images[index : index + 1])[0]


@contextlib.contextmanager
def forward_calls(model: nn.Module):
    """Record every call of ``model`` or of cnnwidgets' private views of it (a pre-hook, so
    passes stopped early count too) as (grad enabled,
    thread name). Grad-disabled passes are activation passes; the deconvnet runs with grad
    enabled. The hook is removed afterwards."""
    calls: list[tuple[bool, str]] = []

    def pre(m, _inp):
        calls.append((torch.is_grad_enabled(), threading.current_thread().name))

    handle = view_pre_hook(model, pre)
    try:
        yield calls
    finally:
        handle.remove()


def activation_passes(calls) -> list[tuple[bool, str]]:
    return [c for c in calls if not c[0]]


def decoded_maps(ex: ActivationExplorer) -> tuple[np.ndarray, np.ndarray, dict]:
    """The maps' codes (C, h, w), the channel of each tile (C,) and what they show."""
    assert ex._maps.dtype == np.uint8 and ex._order.dtype == np.int32
    return ex._maps, ex._order, ex._maps_info


def worker_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("cnnwidgets-") and t.is_alive()}


def requires_grad_flags(model: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


# ---------------------------------------------------------------- activations
@pytest.mark.parametrize("layer", ["features.0", "features.3", "features.4", "features.7"])
def test_activations_equal_layer_output(ex, demo, layer):
    for i in (0, 17):
        got = ex.activations(i, layer)
        want = layer_output(demo, i, layer).numpy()
        assert got.shape == DEMO_SHAPES[layer]
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_activations_default_to_current_index_and_layer(ex, demo):
    ex.index = 3
    ex.layer = "features.2"
    np.testing.assert_allclose(ex.activations(), layer_output(demo, 3, "features.2").numpy(), rtol=1e-5, atol=1e-5)


def test_layers_are_the_4d_outputs_of_the_demo(ex):
    assert list(ex.layers) == DEMO_LAYERS  # not "features" (a Sequential), not classifier.*
    assert ex.layer == "features.0"
    assert ex.n_images == 2000


def test_layer_argument(demo):
    w = ActivationExplorer(demo.model, demo.images[:10], layer="features.5")
    try:
        assert w.layer == "features.5"
        assert w._maps_info["layer"] == "features.5"
        assert w._maps.shape == DEMO_SHAPES["features.5"]
    finally:
        w.close()


def test_layers_of_a_resnet_exclude_containers(tiny_resnet):
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    w = ActivationExplorer(tiny_resnet, x)
    try:
        leaves = [
            "conv1", "bn1", "relu", "maxpool",
            "layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu", "layer1.0.conv2", "layer1.0.bn2",
            "layer2.0.conv1", "layer2.0.bn1", "layer2.0.relu", "layer2.0.conv2", "layer2.0.bn2",
            "layer2.0.downsample.0", "layer2.0.downsample.1", "avgpool",
        ]  # fmt: skip
        blocks = ["layer1.0", "layer2.0"]  # BasicBlocks: not plain containers, 4-D outputs
        assert sorted(w.layers) == sorted(leaves + blocks)
        assert [n for n in w.layers if n in leaves] == leaves  # execution order
        assert w.layer == "conv1"
    finally:
        w.close()


class Swapped(nn.Module):
    """Registers its layers in another order than it runs them: b, a, r vs a -> r -> b."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.b = nn.Conv2d(4, 6, 3)
        self.a = nn.Conv2d(1, 4, 3)
        self.r = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.head(self.b(self.r(self.a(x))))


def test_layers_are_in_execution_order_not_registration_order():
    w = ActivationExplorer(Swapped(), torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(5)))
    try:
        assert list(w.layers) == ["a", "r", "b", "head.0"]
        assert w.layer == "a"  # the default layer is the first one that runs
    finally:
        w.close()


# ---------------------------------------------------------------- one forward pass per image
def test_view_changes_run_no_activation_pass(ex, demo):
    ex.wait()
    for name, value in [("layer", "features.3"), ("channel", 7), ("sort", "max"), ("scale", "per_map"),
                        ("layer", "features.6"), ("sort", "mean"), ("channel", 100), ("scale", "shared")]:
        with forward_calls(demo.model) as calls:
            setattr(ex, name, value)
            ex.wait()
        assert activation_passes(calls) == [], (name, value)
        assert ex._maps_info["layer"] == ex.layer
    # the same through the page
    for name, value in [("layer", "features.4"), ("channel", 3), ("sort", "index"), ("scale", "per_map")]:
        with forward_calls(demo.model) as calls:
            ex.set_state({name: value})
            ex.wait()
        assert activation_passes(calls) == [], (name, value)
        assert getattr(ex, name) == value


def test_layer_and_channel_changes_run_only_the_deconvnet_pass(ex, demo):
    ex.wait()
    for name, value in [("layer", "features.3"), ("channel", 7)]:
        with forward_calls(demo.model) as calls:
            setattr(ex, name, value)
            ex.wait()
        # one pass with grad enabled: the projection of the new layer / channel
        assert calls == [(True, "cnnwidgets-deconvnet")], (name, value)


def test_sort_and_scale_changes_run_no_forward_pass_at_all(ex, demo):
    """Sorting and rescaling the maps changes neither the maps nor the projection."""
    ex.wait()
    for name, value in [("sort", "max"), ("scale", "per_map"), ("sort", "mean"), ("scale", "shared")]:
        with forward_calls(demo.model) as calls:
            setattr(ex, name, value)
            ex.wait()
        assert calls == [], (name, value)


def test_new_index_runs_exactly_one_activation_pass(ex, demo):
    ex.wait()
    for i in (11, 12, 13):
        with forward_calls(demo.model) as calls:
            ex.index = i
            ex.wait()
        assert len(activation_passes(calls)) == 1
        assert ex._maps_info["index"] == i and ex._image_info["index"] == i
        # everything about this image now comes from the cache
        with forward_calls(demo.model) as calls:
            for layer in DEMO_LAYERS:
                ex.activations(i, layer)
            ex.predict(i)
            ex.top_channels(3, i, "features.6")
        assert calls == []


def test_cache_keeps_the_last_images(ex, demo):
    ex.wait()
    n = ActivationExplorer.CACHE_IMAGES
    for i in range(1, n + 1):  # image 0 (shown at start) is now the oldest and evicted
        ex.activations(i)
    with forward_calls(demo.model) as calls:
        for i in range(1, n + 1):
            ex.activations(i, "features.3")
    assert calls == []
    with forward_calls(demo.model) as calls:
        ex.activations(0)
    assert len(activation_passes(calls)) == 1


def test_page_channel_click_during_forward_pass_does_not_run_it_twice(ex, demo):
    """The user clicks a map while the worker is still running the image's forward pass."""
    ex.wait()
    started = threading.Event()

    def slow(_m, _inp):
        if not torch.is_grad_enabled() and threading.current_thread().name == "cnnwidgets-activations":
            started.set()
            time.sleep(0.3)

    handle = view_pre_hook(demo.model, slow)
    try:
        with forward_calls(demo.model) as calls:
            ex.set_state({"index": 20})
            assert started.wait(5)
            ex.set_state({"channel": 5})
            ex.wait()
    finally:
        handle.remove()
    assert ex.index == 20 and ex.channel == 5 and ex.last_error is None
    assert len(activation_passes(calls)) == 1, calls


# ---------------------------------------------------------------- channels and projections
@pytest.mark.parametrize("layer", ["features.3", "features.6"])
def test_top_channels_is_argsort_of_map_max(ex, demo, layer):
    acts = layer_output(demo, 5, layer).numpy()
    want = np.argsort(-acts.reshape(acts.shape[0], -1).max(1), kind="stable")
    np.testing.assert_array_equal(ex.top_channels(5, 5, layer), want[:5])
    assert ex.top_channels(1000, 5, layer).tolist() == want.tolist()


@pytest.mark.parametrize("layer", ["features.0", "features.4", "features.7"])
def test_reconstruct_equals_core_reconstruct(ex, demo, layer):
    got = ex.reconstruct(9, layer)
    assert got.shape == (1, 28, 28) and got.dtype == np.float32
    proj, chans = cnnwidgets.core.reconstruct(demo.model, demo.images[9:10], layer)
    np.testing.assert_allclose(got, proj[0].numpy(), rtol=1e-5, atol=1e-6)
    assert np.abs(got).max() > 0
    # the strongest map is the projected one
    acts = layer_output(demo, 9, layer)
    assert int(chans[0]) == int(acts.flatten(1).amax(1).argmax())


def test_reconstruct_with_channel(ex, demo):
    for c in (0, 17):
        got = ex.reconstruct(4, "features.3", channel=c)
        proj, chans = cnnwidgets.core.reconstruct(demo.model, demo.images[4:5], "features.3", c)
        assert int(chans[0]) == c
        np.testing.assert_allclose(got, proj[0].numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ex.reconstruct(4, "features.3", 0), ex.reconstruct(4, "features.3", 17))
    with pytest.raises(ValueError, match="0..63"):
        ex.reconstruct(4, "features.3", channel=64)


def test_reconstruct_batch_uses_each_images_strongest_channel(ex, demo):
    idx = [0, 3, 8, 15, 42]
    proj, chans = ex.reconstruct_batch(idx, "features.6")
    assert proj.shape == (5, 1, 28, 28) and chans.shape == (5,)
    for j, i in enumerate(idx):
        acts = layer_output(demo, i, "features.6")
        assert chans[j] == int(acts.flatten(1).amax(1).argmax())
        np.testing.assert_allclose(proj[j], ex.reconstruct(i, "features.6"), rtol=1e-4, atol=1e-5)
    assert len(set(chans.tolist())) > 1  # a real test: not the same channel for all


@pytest.mark.parametrize(("layer", "channel"), [("features.3", 5), ("features.6", 40), ("features.1", 2)])
def test_top_images_equal_brute_force(ex300, demo, layer, channel):
    k = int(layer.split(".")[1])
    with torch.no_grad():
        maps = demo.model.features[: k + 1](demo.images[:300])[:, channel]
    scores = maps.flatten(1).amax(1).numpy()
    want = np.argsort(-scores.astype(np.float64), kind="stable")[:7]
    got = ex300.top_images(layer, channel, 7)
    assert got.tolist() == want.tolist()


def test_top_images_needs_a_channel(ex300):
    assert ex300.channel == -1
    with pytest.raises(ValueError, match="channel"):
        ex300.top_images("features.3")


# ---------------------------------------------------------------- what is sent to the page
@pytest.mark.parametrize("sort", ["index", "mean", "max"])
@pytest.mark.parametrize("scale", ["shared", "per_map"])
def test_maps_bytes_and_order(ex, demo, sort, scale):
    ex.index = 6
    ex.layer = "features.3"
    ex.sort = sort
    ex.scale = scale
    codes, order, meta = decoded_maps(ex)
    acts = layer_output(demo, 6, "features.3")
    assert codes.shape == (64, 11, 11)
    assert meta["index"] == 6 and meta["layer"] == "features.3"
    assert meta["sort"] == sort and meta["scale"] == scale
    np.testing.assert_array_equal(codes, maps_codes(acts, scale).codes)
    a = acts.numpy().astype(np.float64)
    if scale == "shared":  # one range for all maps: min -> 0, max -> 254
        want = np.floor((a - a.min()) / (a.max() - a.min()) * 254 + 0.5)
    else:
        lo = a.min(axis=(1, 2), keepdims=True)
        hi = a.max(axis=(1, 2), keepdims=True)
        want = np.floor((a - lo) / (hi - lo) * 254 + 0.5)
    assert np.abs(codes.astype(np.float64) - want).max() <= 1
    assert codes.max() == 254 and codes.min() == 0
    flat = a.reshape(64, -1)
    expected_order = {
        "index": np.arange(64),
        "mean": np.argsort(-flat.mean(1), kind="stable"),
        "max": np.argsort(-flat.max(1), kind="stable"),
    }[sort]
    assert order.tolist() == expected_order.tolist()
    assert ex._map_stats.dtype == np.float32 and ex._map_stats.shape == (64, 3)
    np.testing.assert_allclose(ex._map_stats, map_stats(acts), rtol=1e-6)


@pytest.mark.parametrize("layer", DEMO_LAYERS)
def test_bytes_per_update_are_the_pixels_shown(ex, layer):
    ex.layer = layer
    c, h, w = DEMO_SHAPES[layer]
    assert (ex._maps.shape, ex._maps.nbytes) == ((c, h, w), c * h * w)
    assert (ex._order.shape, ex._order.nbytes) == ((c,), 4 * c)
    assert (ex._map_stats.shape, ex._map_stats.nbytes) == ((c, 3), 4 * 3 * c)
    assert (ex._image.shape, ex._image.nbytes) == ((28, 28, 1), 28 * 28 * 1)
    ex.wait()
    assert (ex._recon.shape, ex._recon.dtype) == ((28, 28, 1), np.uint8)


def test_image_bytes_are_the_displayed_digit(ex, demo):
    ex.index = 2
    img = ex._image
    assert img.dtype == np.uint8 and img.shape == (28, 28, 1)
    raw = cnnwidgets.demo.load_mnist_arrays()[0][8000 + 2]  # the val split starts at 8000
    np.testing.assert_array_equal(img[..., 0], raw)


def test_maps_image_equals_reference_render(ex, reference_render):
    ex.layer = "features.5"
    ex.sort = "max"
    ex.zoom = 1
    codes, order, meta = decoded_maps(ex)
    assert meta["zoom"] == 1 and meta["columns"] == 8
    got = ex.maps_image()
    want = reference_render(codes[order], gray_lut(), columns=meta["columns"], zoom=1, padding=1)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, render_grid(codes[order], gray_lut(), columns=8, zoom=1, padding=1))
    assert got.shape == (8 * 6 - 1, 8 * 6 - 1, 3)


def test_automatic_zoom(ex):
    for layer, zoom in [("features.0", 2), ("features.3", 4), ("features.5", 10), ("features.6", 16)]:
        ex.layer = layer
        assert ex._maps_info["zoom"] == zoom  # round(48 / size), 1..16


def test_overlay_image_equals_blend_overlay(ex, demo):
    ex.index = 1
    ex.layer = "features.2"
    ex.channel = 4
    codes, _, _ = decoded_maps(ex)
    img = np.repeat(ex._image, 3, axis=-1)
    table = lut(OVERLAY_CMAP)
    np.testing.assert_array_equal(ex.overlay_image(), blend_overlay(img, codes[4], table, ex.opacity))
    np.testing.assert_array_equal(ex.overlay_image(9, 0.25), blend_overlay(img, codes[9], table, 0.25))
    np.testing.assert_array_equal(ex.overlay_image(9, 0.0), img)  # opacity 0: the digit only


def test_blend_overlay_by_hand():
    image = np.array([[[100, 0, 255], [10, 20, 30]], [[255, 255, 255], [0, 0, 0]]], np.uint8)  # 2 x 2 x 3
    table = np.zeros((256, 3), np.uint8)
    table[7] = [200, 255, 0]
    codes = np.array([[7]], np.uint8)  # one value, enlarged to the whole 2 x 2 image
    np.testing.assert_array_equal(blend_overlay(image, codes, table, 0.0), image)
    np.testing.assert_array_equal(blend_overlay(image, codes, table, 1.0), np.broadcast_to(table[7], (2, 2, 3)))
    # a = floor(0.5 * 255 + 0.5) = 128: (p * 127 + c * 128 + 127) // 255
    half = blend_overlay(image, codes, table, 0.5)
    assert half[0, 0].tolist() == [150, 128, 127]  # (12700+25600+127)//255, (0+32640+127)//255, (32385+0+127)//255
    assert half[0, 1].tolist() == [105, 138, 15]  # (1270+25600+127)//255, (2540+32640+127)//255, (3810+127)//255
    assert half[1, 1].tolist() == [100, 128, 0]
    assert half.dtype == np.uint8


def test_blend_overlay_upsamples_by_nearest_neighbour():
    image = np.zeros((4, 4, 3), np.uint8)
    table = np.zeros((256, 3), np.uint8)
    table[:4, 0] = [10, 20, 30, 40]
    codes = np.array([[0, 1], [2, 3]], np.uint8)
    out = blend_overlay(image, codes, table, 1.0)[..., 0]
    assert out.tolist() == [[10, 10, 20, 20], [10, 10, 20, 20], [30, 30, 40, 40], [30, 30, 40, 40]]


def test_image_info_label_predicted_correct(ex, demo, predictions):
    labels = demo.labels.numpy()
    wrong = np.flatnonzero(predictions != labels)
    right = np.flatnonzero(predictions == labels)
    assert len(wrong) > 0 and len(right) > 0
    for i in (int(right[0]), int(wrong[0])):
        ex.index = i
        meta = ex._image_info
        assert meta["index"] == i
        assert meta["label"] == str(labels[i])
        assert meta["predicted"] == str(predictions[i])
        assert meta["correct"] is bool(labels[i] == predictions[i])
        assert ex._image.shape == (28, 28, 1)
        assert ex.predict()[0] == predictions[i]


def test_image_info_without_labels_and_classes(demo, predictions):
    w = ActivationExplorer(demo.model, demo.images[:5])
    try:
        meta = w._image_info
        assert meta["label"] is None and meta["correct"] is None
        assert meta["predicted"] == int(predictions[0])
    finally:
        w.close()


def test_predict(ex, demo):
    for i in (0, 33):
        with torch.no_grad():
            p = torch.softmax(demo.model(demo.images[i : i + 1])[0], 0)
        c, prob = ex.predict(i)
        assert c == int(p.argmax())
        assert prob == pytest.approx(float(p.max()), rel=1e-5)
    ex.index = 33
    assert ex.predict() == ex.predict(33)


def test_request_top_images(ex300):
    ex300.layer = "features.3"
    ex300.channel = 5
    ex300.k = 6
    seen: list[float] = []
    ex300.observe(lambda ch: seen.append(ch["new"]), names="progress")
    ex300.request_top_images()
    assert ex300.wait()
    meta = ex300._top_info
    want = ex300.top_images("features.3", 5, 6)
    assert meta["indices"] == want.tolist()
    assert meta["layer"] == "features.3" and meta["channel"] == 5
    assert ex300._top.shape == (6, 28, 28, 1) and ex300._top.dtype == np.uint8
    thumbs = ex300._top
    np.testing.assert_array_equal(thumbs[0], ex300.display_image(int(want[0])))
    assert ex300.progress == -1.0
    assert seen == [0.0, pytest.approx(256 / 300), 1.0, -1.0]


def test_top_images_from_the_page(ex300):
    ex300.set_state({"channel": 3})
    ex300._dispatch_message(ex300, {"type": "top_images"}, [])
    assert ex300.wait()
    assert ex300._top_info["indices"] == ex300.top_images(channel=3, k=9).tolist()
    assert ex300.progress == -1.0


def test_request_top_images_without_channel_only_sets_status(ex300):
    ex300.request_top_images()
    assert ex300.wait()
    assert ex300._top_info == {} and ex300._top is None
    assert "click a map" in ex300.status


def test_recon_info_follows_channel(ex, demo):
    ex.layer = "features.3"
    ex.wait()
    strongest = int(layer_output(demo, 0, "features.3").flatten(1).amax(1).argmax())
    assert ex._recon_info["channel"] == strongest and ex._recon_info["strongest"] is True
    ex.channel = 12
    ex.wait()
    assert ex._recon_info["channel"] == 12 and ex._recon_info["strongest"] is False
    assert ex._recon_info["layer"] == "features.3"


def test_layer_change_resets_a_channel_the_layer_lacks(ex):
    ex.layer = "features.6"
    ex.channel = 100
    ex.layer = "features.0"  # 32 maps
    assert ex.channel == -1
    ex.channel = 20
    ex.layer = "features.3"  # 64 maps: 20 is still there
    assert ex.channel == 20


# ---------------------------------------------------------------- close
def test_close_stops_worker_threads(demo):
    w = ActivationExplorer(demo.model, demo.images[:20])
    workers = (w._worker, w._recon_worker, w._dataset_worker)
    assert all(x.alive for x in workers)
    w.close()
    assert not any(x.alive for x in workers)
    # a closed widget does not raise
    w.close()
    w.set_state({"index": 4})
    w._dispatch_message(w, {"type": "top_images"}, [])
    assert w.wait(5)
    repr(w)


def test_failed_construction_leaves_no_threads(demo):
    before = worker_threads()
    with pytest.raises(TypeError):
        ActivationExplorer(demo.model, demo.images[:5], selection="not a selection")
    with pytest.raises(ValueError):
        ActivationExplorer(demo.model, demo.images[:5], layer="nope")
    time.sleep(0.05)
    assert worker_threads() - before == set()


# ---------------------------------------------------------------- bad input
def test_wrong_channel_count(demo):
    rgb = demo.images[:4].repeat(1, 3, 1, 1)
    with pytest.raises(ValueError, match=r"\(3, 28, 28\)") as info:
        ActivationExplorer(demo.model, rgb)
    text = str(info.value)
    assert "the input images have 3 channel(s) (3 x 28 x 28)" in text  # the cause, first
    assert "'features.0' expects 1 channel(s)" in text
    assert isinstance(info.value.__cause__, RuntimeError)  # PyTorch's own error kept, chained


def test_too_small_images_are_named_as_the_cause_not_the_channels(demo):
    """4 x 4 digits have the right channel count: the message says they are too small and
    never blames the channels."""
    with pytest.raises(ValueError, match=r"too small for this network") as info:
        ActivationExplorer(demo.model, demo.images[:4, :, :4, :4])
    assert "channel" not in str(info.value).split("(PyTorch said")[0]


def test_empty_image_set(demo):
    with pytest.raises(ValueError, match="empty"):
        ActivationExplorer(demo.model, torch.empty(0, 1, 28, 28))


def test_labels_of_another_length(demo):
    with pytest.raises(ValueError, match="5") as info:
        ActivationExplorer(demo.model, demo.images[:10], demo.labels[:5])
    assert "10" in str(info.value)


def test_fewer_classes_than_outputs(demo):
    with pytest.raises(ValueError, match="10"):
        ActivationExplorer(demo.model, demo.images[:4], demo.labels[:4], ["zero", "one"])


def test_not_a_module(demo):
    with pytest.raises(TypeError, match="nn.Module"):
        ActivationExplorer(demo.model.state_dict(), demo.images[:4])


def test_unknown_layer(demo, ex):
    with pytest.raises(ValueError, match="nope") as info:
        ActivationExplorer(demo.model, demo.images[:4], layer="nope")
    assert "'features.0'" in str(info.value) and "'features.7'" in str(info.value)
    with pytest.raises(ValueError, match="features.7"):
        ex.activations(0, "classifier.1")  # exists, but its output is not 4-D
    with pytest.raises(ValueError, match="'features.3'"):
        ex.layer = "nope"
    assert ex.layer == "features.0"


def test_index_out_of_range_from_python(ex):
    for bad in (2000, -1):
        with pytest.raises(ValueError, match="0..1999"):
            ex.index = bad
        with pytest.raises(ValueError):
            ex.activations(bad)
        with pytest.raises(ValueError):
            ex.predict(bad)
        with pytest.raises(ValueError):
            ex.reconstruct(bad)
    with pytest.raises(ValueError):
        ex.reconstruct_batch([0, 2000])
    assert ex.index == 0


def test_bad_values_from_python_raise(ex):
    for name, value in [("channel", 32), ("channel", -2), ("sort", "size"), ("scale", "log"), ("opacity", 1.5),
                        ("zoom", 65), ("k", 0)]:
        old = getattr(ex, name)
        with pytest.raises(ValueError):
            setattr(ex, name, value)
        assert getattr(ex, name) == old


@pytest.mark.parametrize(
    ("state", "text"),
    [({"index": 10**6}, "index"), ({"layer": "nope"}, "nope"), ({"channel": 999}, "channel"),
     ({"sort": "size"}, "sort"), ({"index": 3, "channel": 999}, "channel")],
)
def test_bad_values_from_the_page_are_ignored(ex, state, text):
    before = {k: getattr(ex, k) for k in ("index", "layer", "channel", "sort")}
    maps_info = dict(ex._maps_info)
    ex.last_error = None
    ex.set_state(state)  # must not raise
    ex.wait()
    assert {k: getattr(ex, k) for k in before} == before
    assert ex.last_error is not None and text in ex.last_error
    assert ex._maps_info == maps_info


@pytest.mark.parametrize("content", [{"type": "bogus"}, "hello", None, [1, 2], {"no": "type"}])
def test_unknown_page_messages_never_raise_and_are_named(ex, content):
    ex.last_error = None
    ex._dispatch_message(ex, content, [])
    assert ex.wait()
    assert "unknown message" in ex.last_error and "'top_images', 'batch' or 'stop'" in ex.last_error
    assert ex.view_error == ""


def test_page_messages_go_through_the_base_dispatcher(ex300):
    """The one table (messages.json) routes each type to its handler: no _on_page_message."""
    assert not hasattr(ex300, "_on_page_message")
    assert ex300._dispatch_message in ex300._msg_callbacks.callbacks
    ex300._dispatch_message(ex300, {"type": "stop"}, [])
    assert ex300._stop_dataset.is_set()
    ex300._dispatch_message(ex300, {"type": "batch"}, [])
    assert ex300.wait()
    assert ex300._batch_info["indices"] == list(range(12)) and ex300.last_error is None


# ---------------------------------------------------------------- models and their state
def test_resnet_in_train_mode_is_left_as_found(tiny_resnet, count_hooks, flags):
    model = tiny_resnet.train()
    model.layer1[0].bn1.eval()  # mixed modes
    model.conv1.weight.requires_grad_(False)
    modes, grads = flags(model), requires_grad_flags(model)
    assert count_hooks(model) == 0
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(7))

    def unchanged():
        assert flags(model) == modes
        assert requires_grad_flags(model) == grads
        assert count_hooks(model) == 0

    w = ActivationExplorer(model, x, [0, 1, 2, 3, 4, 0], list("abcde"))
    try:
        w.wait()
        unchanged()
        # activations are those of the model in eval mode; the in-place ReLU does not alter
        # the stored BatchNorm output; a reused ReLU module keeps its first call
        ref = copy.deepcopy(model).eval()
        with torch.no_grad():
            xi = x[2:3]
            bn1 = ref.bn1(ref.conv1(xi))
            relu = torch.relu(bn1)
            pooled = ref.maxpool(relu)
            blk = ref.layer1[0]
            blk_relu1 = torch.relu(blk.bn1(blk.conv1(pooled)))
            blk_out = blk(pooled.clone())
        np.testing.assert_allclose(w.activations(2, "bn1"), bn1[0].numpy(), rtol=1e-5, atol=1e-6)
        assert (w.activations(2, "bn1") < 0).any()
        np.testing.assert_allclose(w.activations(2, "relu"), relu[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.activations(2, "layer1.0.relu"), blk_relu1[0].numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(w.activations(2, "layer1.0"), blk_out[0].numpy(), rtol=1e-5, atol=1e-6)
        train_ref = copy.deepcopy(model).train()
        with torch.no_grad():
            bn1_train = train_ref.bn1(train_ref.conv1(xi))
        assert not np.allclose(w.activations(2, "bn1"), bn1_train[0].numpy(), atol=1e-3)
        unchanged()
        # everything the widget does
        w.layer = "layer2.0.conv2"
        w.channel = 3
        w.sort = "max"
        w.set_state({"index": 4})
        w.wait()
        assert w._maps_info["index"] == 4
        w.reconstruct(1, "layer1.0.relu")
        w.reconstruct(1, "layer2.0.bn2", channel=2)
        proj, chans = w.reconstruct_batch([0, 1, 5], "layer1.0.conv2")
        assert proj.shape == (3, 3, 8, 8)
        w.top_images("layer1.0.relu", 1, 3)
        w.request_top_images()
        w.wait()
        assert len(w._top_info["indices"]) == 9 - 3  # k = 9, only 6 images
        w.predict(5)
        unchanged()
        # failing calls leave it as found too
        with pytest.raises(ValueError):
            w.reconstruct(0, "layer2.0.conv2", channel=99)
        unchanged()
        with pytest.raises(ValueError):
            w.top_images("layer2.0.conv2", 99)
        unchanged()
        with pytest.raises(ValueError):
            w.activations(0, "fc")
        w.set_state({"channel": 99})
        assert w.last_error is not None
        unchanged()
    finally:
        w.close()
    with pytest.raises(ValueError, match=r"\(1, 8, 8\)"):
        ActivationExplorer(model, x[:, :1])  # wrong channel count: the model raises inside
    unchanged()


def test_model_shared_by_two_explorers(demo, count_hooks):
    a = ActivationExplorer(demo.model, demo.images[:50])
    b = ActivationExplorer(demo.model, demo.images[50:100], layer="features.3")
    try:
        a.set_state({"index": 7})
        b.set_state({"index": 7})
        a.wait()
        b.wait()
        np.testing.assert_allclose(b.activations(), layer_output(demo, 57, "features.3").numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.activations(), layer_output(demo, 7, "features.0").numpy(), rtol=1e-5, atol=1e-5)
        assert count_hooks(demo.model) == 0
    finally:
        a.close()
        b.close()


# ---------------------------------------------------------------- page updates in the background
def test_page_index_change_runs_in_the_worker(ex, demo):
    ex.wait()
    with forward_calls(demo.model) as calls:
        ex.set_state({"index": 5})
        ex.wait()
    assert ex.index == 5
    assert ex._maps_info["index"] == 5 and ex._image_info["index"] == 5
    assert activation_passes(calls) == [(False, "cnnwidgets-activations")]
    assert ex.busy is False
    np.testing.assert_array_equal(decoded_maps(ex)[0], maps_codes(layer_output(demo, 5, "features.0")).codes)


def test_rapid_page_index_changes_latest_wins(ex):
    ex.wait()
    dropped, done = ex._worker.dropped, ex._worker.done
    for i in range(1, 31):
        ex.set_state({"index": i})
    assert ex.wait()
    assert ex.index == 30
    assert ex._maps_info["index"] == 30 and ex._image_info["index"] == 30
    assert (ex._worker.dropped - dropped) + (ex._worker.done - done) == 30
    assert ex.busy is False


def test_rapid_page_index_changes_while_busy_compute_only_the_last(ex, demo):
    ex.wait()
    started, release = threading.Event(), threading.Event()

    def gate():
        started.set()
        release.wait(10)

    ex._worker.submit(gate)
    assert started.wait(5)
    dropped, done = ex._worker.dropped, ex._worker.done
    with forward_calls(demo.model) as calls:
        for i in range(101, 111):
            ex.set_state({"index": i})
        release.set()
        assert ex.wait()
    assert ex._worker.dropped - dropped == 9
    assert ex._worker.done - done == 2  # the gate and index 110
    assert len(activation_passes(calls)) == 1  # only image 110 was run
    assert ex._maps_info["index"] == 110


# ---------------------------------------------------------------- the frame is sent from inside the pass
def _frame_events(ex, model):
    """Record, in order: the frame traits as they are set, and the classifier's start."""
    events: list[tuple[str, object]] = []
    names = ["_image", "_maps", "_image_info"]

    def watch(ch):
        events.append((ch["name"], ex._maps_info.get("index") if ch["name"] == "_maps" else None))

    ex.observe(watch, names=names)
    handle = view_pre_hook(model.classifier, lambda m, i: events.append(("classifier", None)))
    return events, lambda: (ex.unobserve(watch, names=names), handle.remove())


@pytest.mark.parametrize("from_page", [False, True])
def test_new_image_frame_is_sent_before_the_classifier_runs(ex, demo, from_page):
    ex.layer = "features.3"
    ex.wait()
    events, done = _frame_events(ex, demo.model)
    try:
        with forward_calls(demo.model) as calls:
            if from_page:
                ex.set_state({"index": 31})
            else:
                ex.index = 31
            ex.wait()
    finally:
        done()
    kinds = [e[0] for e in events]
    assert kinds == ["_image", "_maps", "classifier", "_image_info"], events
    assert events[1][1] == 31  # the maps' description was set with them, for the new image
    assert len(activation_passes(calls)) == 1
    codes, _, meta = decoded_maps(ex)
    assert meta["index"] == 31 and meta["layer"] == "features.3" and ex._image_info["index"] == 31
    np.testing.assert_array_equal(codes, maps_codes(layer_output(demo, 31, "features.3")).codes)
    # the pass went on to fill the cache: every layer and the prediction, no new pass
    with forward_calls(demo.model) as calls:
        for layer in DEMO_LAYERS:
            np.testing.assert_allclose(ex.activations(31, layer), layer_output(demo, 31, layer).numpy(),
                                       rtol=1e-5, atol=1e-5)
        ex.layer = "features.6"
        ex.predict()
    assert activation_passes(calls) == []
    assert ex.busy is False


def test_cached_image_sends_the_frame_after_the_pass(ex, demo):
    ex.index = 8
    ex.index = 9
    events, done = _frame_events(ex, demo.model)
    try:
        with forward_calls(demo.model) as calls:
            ex.index = 8  # in the cache: no pass, the frame comes from the cache
    finally:
        done()
    assert activation_passes(calls) == []
    assert [e[0] for e in events] == ["_image", "_image_info", "_maps"]
    assert ex._maps_info["index"] == 8


@pytest.mark.parametrize("layer", DEMO_LAYERS)
@pytest.mark.parametrize("scale", ["shared", "per_map"])
def test_maps_frame_equals_maps_codes_and_map_stats_on_the_demo(demo, layer, scale):
    for i in (0, 7, 123):
        acts = layer_output(demo, i, layer)
        codes, stats = _maps_frame(acts, scale)
        np.testing.assert_array_equal(codes, maps_codes(acts, scale).codes)
        np.testing.assert_array_equal(stats, map_stats(acts))
        assert codes.dtype == np.uint8 and stats.dtype == np.float32


def _edge_maps() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(12)
    r = torch.randn(6, 5, 4, generator=g)
    dead = r.clone()
    dead[[1, 4]] = 0.0  # dead ReLU channels
    const = r.clone()
    const[2] = 3.5  # a constant map that is not zero
    nan = r.clone()
    nan[3, 1, 2] = float("nan")
    inf = r.clone()
    inf[0, 0, 0] = float("inf")
    return {
        "random": r,
        "relu": r.clamp_min(0),
        "dead": dead,
        "all_dead": torch.zeros(4, 3, 3),
        "constant": const,
        "all_constant": torch.full((3, 2, 2), -1.25),
        "one_map": r[:1],
        "one_pixel": r[:, :1, :1],
        "negative": -r.abs() - 10,
        "tiny_range": 1.0 + r * 1e-7,
        "huge": r * 1e37,
        "overflowing_range": torch.tensor([[[3e38, -3e38]]]),
        "nan": nan,
        "inf": inf,
        "non_contiguous": r.transpose(1, 2),
        "float64": r.double(),
    }


@pytest.mark.parametrize("case", list(_edge_maps()))
@pytest.mark.parametrize("scale", ["shared", "per_map"])
def test_maps_frame_equals_the_reference_on_edge_cases(case, scale):
    import warnings

    acts = _edge_maps()[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the reference warns about NaN/Inf
        want_codes, want_stats = maps_codes(acts, scale).codes, map_stats(acts)
        codes, stats = _maps_frame(acts, scale)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(stats, want_stats)


def test_resnet_frame_and_cache_hold_values_before_the_residual_addition(tiny_resnet):
    """``out += identity`` changes bn2's output in place after the frame was sent: the frame
    and the cached maps still show bn2's own output."""
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(13))
    w = ActivationExplorer(tiny_resnet, x, layer="layer1.0.bn2")
    try:
        for i in (1, 2, 3):
            w.index = i
            ref = copy.deepcopy(tiny_resnet).eval()
            with torch.no_grad():
                stem = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x[i : i + 1]))))
                b = ref.layer1[0]
                bn2 = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(stem)))))[0]
            assert (bn2 < 0).any()
            np.testing.assert_allclose(w.activations(i, "layer1.0.bn2"), bn2.numpy(), rtol=1e-5, atol=1e-6)
            codes, _, meta = decoded_maps(w)
            assert meta["index"] == i
            np.testing.assert_array_equal(codes, maps_codes(torch.from_numpy(w.activations(i))).codes)
    finally:
        w.close()


# ---------------------------------------------------------------- the contract: choices, arrays, labels
def test_sort_and_scale_are_choices_of_the_core_literals(ex):
    from typing import get_args

    from cnnwidgets.core.activations import ChannelOrder, MapScale
    from cnnwidgets.widgets._base import Choice, InvalidValue

    traits = ex.traits()
    assert isinstance(traits["sort"], Choice) and traits["sort"].values == get_args(ChannelOrder)
    assert isinstance(traits["scale"], Choice) and traits["scale"].values == get_args(MapScale)
    with pytest.raises(InvalidValue, match=r"sort must be 'index', 'mean' or 'max', got 'size'"):
        ex.sort = "size"
    # from the page: rolled back, and the message is kept for the control
    ex.set_state({"scale": "log"})
    assert ex.scale == "shared"
    assert "'shared' or 'per_map'" in ex.control_errors["scale"]
    ex.set_state({"scale": "per_map"})
    assert ex.scale == "per_map" and "scale" not in ex.control_errors


def test_pictures_are_array_traits_without_meta_dicts(ex):
    from ipywidgets.widgets.widget import _remove_buffers

    ex.channel = 3
    ex.wait()
    assert not [k for k in ex.keys if k.endswith("_meta")]
    arrays = {"_image": ("uint8", [28, 28, 1]), "_maps": ("uint8", [32, 26, 26]), "_map_stats": ("float32", [32, 3]),
              "_order": ("int32", [32]), "_lut": ("uint8", [256, 3]), "_overlay_lut": ("uint8", [256, 3]),
              "_recon": ("uint8", [28, 28, 1])}
    state, paths, buffers = _remove_buffers(ex.get_state(list(arrays)))
    assert sorted(p[0] for p in paths) == sorted(arrays) and all(p[1] == "view" for p in paths)
    for name, (dtype, shape) in arrays.items():
        assert state[name] == {"dtype": dtype, "shape": shape}, name
    assert sum(b.nbytes for b in buffers) == sum(getattr(ex, k).nbytes for k in arrays)
    np.testing.assert_array_equal(ex._lut, gray_lut())
    np.testing.assert_array_equal(ex._overlay_lut, lut(OVERLAY_CMAP))


def test_layer_labels_give_type_and_output_shape(ex):
    assert ex.layer_labels == {
        "features.0": "Conv2d 32x26x26", "features.1": "ReLU 32x26x26", "features.2": "MaxPool2d 32x13x13",
        "features.3": "Conv2d 64x11x11", "features.4": "ReLU 64x11x11", "features.5": "MaxPool2d 64x5x5",
        "features.6": "Conv2d 128x3x3", "features.7": "ReLU 128x3x3",
    }  # fmt: skip
    assert list(ex.layer_labels) == list(ex.layers)


def test_maps_image_draws_the_given_gap_colour(ex):
    ex.layer = "features.5"
    ex.zoom = 1
    white, themed = ex.maps_image(), ex.maps_image(background=(30, 40, 50))
    assert white.shape == themed.shape == (47, 47, 3)
    gaps = np.all(white == 255, axis=-1) & ~np.all(themed == 255, axis=-1)
    assert gaps.sum() == 47 * 47 - 64 * 5 * 5  # all but the 8 x 8 maps of 5 x 5 pixels
    assert (themed[gaps] == [30, 40, 50]).all()
    assert (themed[~gaps] == white[~gaps]).all()


# ---------------------------------------------------------------- colour scales: the exact range shown
@pytest.mark.parametrize("layer", ["features.0", "features.3", "features.7"])
def test_shared_colour_scale_is_the_range_of_all_maps(ex, demo, layer):
    ex.index = 4
    ex.layer = layer
    ex.wait()
    acts = layer_output(demo, 4, layer).numpy()
    maps = ex.color_scales["maps"]
    assert (maps["min"], maps["max"]) == (float(acts.min()), float(acts.max()))
    assert maps["label"] == "activation" and "channel" not in maps
    codes, _, _ = decoded_maps(ex)
    # the ends of the scale are the ends of the colours: min -> code 0, max -> code 254
    assert (codes[acts == acts.min()] == 0).all() and (codes[acts == acts.max()] == 254).all()
    assert "overlay" not in ex.color_scales  # no channel selected: no overlay
    ex.channel = 5
    assert ex.color_scales["overlay"]["min"] == maps["min"] and ex.color_scales["overlay"]["max"] == maps["max"]
    assert ex.color_scales["overlay"]["channel"] == 5


def test_per_map_colour_scale_is_the_selected_maps_range(ex, demo):
    ex.layer = "features.3"
    ex.sort = "max"
    ex.scale = "per_map"
    acts = layer_output(demo, 0, "features.3").numpy()
    first = int(ex._order[0])
    maps = ex.color_scales["maps"]
    assert maps["channel"] == first  # nothing selected: the first tile's map
    assert (maps["min"], maps["max"]) == (float(acts[first].min()), float(acts[first].max()))
    assert "per map" in maps["note"]
    ex.channel = 17
    for key in ("maps", "overlay"):
        got = ex.color_scales[key]
        assert (got["min"], got["max"], got["channel"]) == (float(acts[17].min()), float(acts[17].max()), 17)
    codes, _, _ = decoded_maps(ex)
    assert codes[17][acts[17] == acts[17].max()].tolist() == [254] * int((acts[17] == acts[17].max()).sum())


def test_projection_colour_scale_is_the_range_of_the_projection(ex):
    ex.layer = "features.4"
    ex.channel = 9
    ex.wait()
    proj = ex.reconstruct(0, "features.4", 9)
    scale = ex.color_scales["projection"]
    assert (scale["min"], scale["max"]) == (float(proj.min()), float(proj.max()))
    # the picture is that projection min-max scaled: its darkest pixel is the minimum
    assert ex._recon[..., 0][proj[0] == proj.min()].tolist() == [0]
    assert ex._recon[..., 0][proj[0] == proj.max()].tolist() == [255]


def test_an_rgb_projection_has_no_value_scale(tiny_resnet):
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    w = ActivationExplorer(tiny_resnet, x)
    try:
        w.wait()
        assert w._recon.shape == (8, 8, 3)
        assert set(w.color_scales) == {"maps"}
    finally:
        w.close()


# ---------------------------------------------------------------- stale panels after a layer change
def test_a_layer_change_clears_the_top_images_and_the_batch_view_and_says_so(ex300):
    ex300.layer = "features.3"
    ex300.channel = 5
    ex300.request_top_images()
    ex300.wait()
    ex300.request_batch_view()
    ex300.wait()
    assert ex300._top_info["layer"] == ex300._batch_info["layer"] == "features.3"
    assert ex300._top_info["indices"] and ex300._batch.shape == (12, 2, 28, 28, 3)
    ex300.layer = "features.4"
    ex300.wait()
    assert ex300._top is None and ex300._batch is None
    assert "channel 5 of 'features.3'" in ex300._top_info["note"] and "'features.4'" in ex300._top_info["note"]
    assert "'features.3'" in ex300._batch_info["note"] and "'features.4'" in ex300._batch_info["note"]
    assert "indices" not in ex300._top_info and "indices" not in ex300._batch_info
    # a new pass fills them again, for the new layer
    ex300.request_top_images()
    ex300.wait()
    assert ex300._top_info["layer"] == "features.4" and "note" not in ex300._top_info
    assert ex300._top_info["indices"] == ex300.top_images("features.4", 5, 9).tolist()


def test_a_pass_for_the_old_layer_is_stopped_and_not_shown(ex300, demo):
    ex300.layer = "features.3"
    ex300.channel = 2
    ex300.wait()
    started, release = threading.Event(), threading.Event()

    def slow(_m, _inp):
        if threading.current_thread().name == "cnnwidgets-top-images" and not started.is_set():
            started.set()
            release.wait(10)

    handle = view_pre_hook(demo.model, slow)
    try:
        ex300.request_top_images()
        assert started.wait(10)
        ex300.layer = "features.6"  # while the pass over the data runs for features.3
        release.set()
        assert ex300.wait()
    finally:
        handle.remove()
    assert ex300._top is None and ex300._top_info == {}
    assert ex300.status == "stopped: the layer changed to 'features.6'"
    assert ex300.progress == -1.0 and ex300.view_error == ""


def test_batch_view_pictures_are_the_image_and_its_projection(ex):
    ex.layer = "features.6"
    ex.index = 20
    ex.request_batch_view(3)
    ex.wait()
    proj, chans = ex.reconstruct_batch([20, 21, 22], "features.6")
    assert ex._batch_info == {"indices": [20, 21, 22], "channels": chans.tolist(), "layer": "features.6"}
    for j, i in enumerate((20, 21, 22)):
        np.testing.assert_array_equal(ex._batch[j, 0], np.repeat(ex.display_image(i), 3, axis=-1))
        p = proj[j, 0]
        assert ex._batch[j, 1][p == p.min()].tolist() == [[0, 0, 0]]
        assert ex._batch[j, 1][p == p.max()].tolist() == [[255, 255, 255]]


# ---------------------------------------------------------------- a Selection this view cannot follow
def test_a_selection_index_outside_the_images_is_said_not_ignored(demo):
    sel = cnnwidgets.Selection()
    w = ActivationExplorer(demo.model, demo.images[:10], selection=sel)
    try:
        w.index = 4
        sel.index = 50
        assert w.index == 4 and w._maps_info["index"] == 4
        assert w.selection_note == ("The shared selection is on image 50, which this view does not hold "
                                    "(its images are 0..9): it still shows image 4.")
        sel.index = 7  # one it holds: taken, the note goes
        assert w.index == 7 and w.selection_note == ""
        sel.index = 10
        assert "image 10" in w.selection_note
        w.index = 2  # the user picks another image in this view: the note goes
        assert w.selection_note == "" and sel.index == 2
    finally:
        w.close()


def test_a_selection_layer_without_maps_is_said_not_ignored(demo):
    sel = cnnwidgets.Selection()
    w = ActivationExplorer(demo.model, demo.images[:10], selection=sel, layer="features.3")
    try:
        sel.layer = "classifier.1"
        assert w.layer == "features.3" and w._maps_info["layer"] == "features.3"
        label = w._all_labels["classifier.1"]
        assert label.startswith("Linear")
        assert w.selection_note == (f"The shared selection is on layer 'classifier.1' ({label}), which has no "
                                    "feature maps this view can show: it still shows 'features.3'.")
        sel.layer = "features.5"
        assert w.layer == "features.5" and w.selection_note == ""
    finally:
        w.close()


def test_a_selection_note_from_the_start(demo):
    sel = cnnwidgets.Selection(index=99)
    w = ActivationExplorer(demo.model, demo.images[:5], selection=sel)
    try:
        assert w.index == 0 and "image 99" in w.selection_note
        assert w.get_state("selection_note")["selection_note"] == w.selection_note  # synced to the page
    finally:
        w.close()


# ---------------------------------------------------------------- failures of background work, in the view
def test_a_failed_projection_shows_in_the_view_until_one_succeeds(ex, monkeypatch):
    ex.wait()
    real = ex._reconstruct

    def broken(*args):
        raise RuntimeError("deconvnet has no rule for this layer")

    monkeypatch.setattr(ex, "_reconstruct", broken)
    ex.channel = 3
    ex.wait()
    assert ex.view_error == "projection failed: RuntimeError: deconvnet has no rule for this layer"
    assert ex._recon_info["channel"] != 3  # the old projection stays, and the view says why
    monkeypatch.setattr(ex, "_reconstruct", real)
    ex.channel = 4
    ex.wait()
    assert ex.view_error == "" and ex._recon_info["channel"] == 4


def test_a_failed_top_images_pass_shows_in_the_view(ex300, monkeypatch):
    from cnnwidgets.widgets import activation_explorer as module

    def broken(*args, **kwargs):
        raise ValueError("the layer ran out of memory")

    monkeypatch.setattr(module, "top_images", broken)
    ex300.channel = 1
    ex300.request_top_images()
    assert ex300.wait()
    assert ex300.view_error == "top images failed: ValueError: the layer ran out of memory"
    assert ex300.progress == -1.0 and ex300.status == "top images failed"
    assert ex300._top is None
    monkeypatch.undo()
    ex300.request_top_images()
    assert ex300.wait()
    assert ex300.view_error == "" and len(ex300._top_info["indices"]) == 9


def test_failures_of_two_tasks_are_both_shown(ex300, monkeypatch):
    from cnnwidgets.widgets import activation_explorer as module

    monkeypatch.setattr(module, "top_images", lambda *a, **k: (_ for _ in ()).throw(ValueError("no data")))
    monkeypatch.setattr(ex300, "_reconstruct", lambda *a: (_ for _ in ()).throw(RuntimeError("no rule")))
    ex300.channel = 2
    ex300.request_top_images()
    assert ex300.wait()
    # the two run on separate threads: either may fail first, both are shown
    assert sorted(ex300.view_error.split(" | ")) == [
        "projection failed: RuntimeError: no rule", "top images failed: ValueError: no data"]
