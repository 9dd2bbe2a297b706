"""Tests for the SaliencyViewer widget, in plain Python (no browser, no kernel).

Known answers come from :func:`cnnwidgets.core.attribute` called on its own, from the model's
logits computed directly, and from the documented display helpers (``to_heatmap``,
``heat_codes``, ``blend_overlay``).
"""

from __future__ import annotations

import copy
import threading
import time
import warnings

import numpy as np
import pytest

from tests.conftest import view_pre_hook
import torch
from torch import nn

import cnnwidgets
from cnnwidgets import SaliencyViewer, Selection
from cnnwidgets.core import attribute, to_display, to_heatmap
from cnnwidgets.core.colormaps import heat_codes, lut
from cnnwidgets.core.saliency import REGISTRY
from cnnwidgets.widgets.saliency_viewer import BASE_LEVEL, METHOD_TIPS as SV_TIPS, attribution_overlay

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # small passes: one intra-op thread

#: Grad-CAM and its family: they read a layer's feature maps for a class score.
CAMS = [m for m, spec in REGISTRY.items() if spec.takes_layer and spec.targeted]

N = 100  # first N validation digits; digit 94 is misclassified by the demo model
MISCLASSIFIED = 94
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
FAST = {"steps": 6, "samples": 4, "noise": 0.2}  # small IG / SmoothGrad settings, to keep tests quick
PAGE_BAD = [
    ({"method": "nope"}, "nope"),
    ({"target": 10}, "target"),
    ({"target": -3}, "target"),
    ({"layer": "classifier.1"}, "classifier.1"),
    ({"index": N}, "index"),
    ({"view": "mosaic"}, "view"),
    ({"opacity": 1.5}, "opacity"),
    ({"steps": 0}, "steps"),
    ({"cmap": "no-such-map"}, "no-such-map"),
    ({"compare_methods": ["vanilla", "bogus"]}, "bogus"),
]


# ---------------------------------------------------------------- fixtures and helpers
@pytest.fixture(scope="module")
def logits(demo):
    with torch.no_grad():
        return demo.model(demo.images[:N])


@pytest.fixture(scope="module")
def sv_ro(demo):
    """A viewer only read from (explicit index/method/target in every call), shared by a module."""
    w = SaliencyViewer(demo.model, demo.images[:N], demo.labels[:N], NAMES, mean=demo.mean, std=demo.std)
    w.steps, w.samples, w.noise = FAST["steps"], FAST["samples"], FAST["noise"]
    yield w
    w.close()


@pytest.fixture
def sv(demo):
    w = SaliencyViewer(demo.model, demo.images[:N], demo.labels[:N], NAMES, mean=demo.mean, std=demo.std)
    w.steps, w.samples, w.noise = FAST["steps"], FAST["samples"], FAST["noise"]
    yield w
    w.close()


def core_params(sv: SaliencyViewer, method: str) -> dict:
    """The keyword arguments the viewer documents for ``method``, from its traits."""
    if method == "smoothgrad":
        return {"samples": sv.samples, "noise": sv.noise, "seed": 0}
    if method == "integrated_gradients":
        return {"steps": sv.steps, "baseline": sv.baseline, "seed": 0}
    if method in CAMS:
        return {"layer": sv.layer}
    if method == "occlusion":
        window, stride = sv.occlusion_window()
        return {"window": window, "stride": stride}
    if method == "lrp":
        return {"rule": sv.lrp_rule}
    if method == "layer_gradient":
        return {"layer": sv.layer, "channel": sv.channel if sv.channel >= 0 else None}
    return {}


def reference(model, x, method, target, **params) -> np.ndarray:
    a = attribute(model, x, method, None if method == "layer_gradient" else target, **params)
    return a[0].numpy()


def display_rgb(demo, i: int) -> np.ndarray:
    img = to_display(demo.images[i], mean=demo.mean, std=demo.std)
    return np.repeat(img, 3, axis=-1)


def decoded_heat(sv: SaliencyViewer) -> np.ndarray:
    assert sv._heat.dtype == np.uint8 and sv._heat.ndim == 2
    return sv._heat


def dimmed_gray(demo, i: int) -> np.ndarray:
    """The image as the overlay draws it under the map: gray, brightest at BASE_LEVEL (uint8 H x W x 3)."""
    img = to_display(demo.images[i], mean=demo.mean, std=demo.std)[..., 0].astype(np.int32)
    return np.repeat(((img * BASE_LEVEL + 127) // 255).astype(np.uint8)[..., None], 3, axis=-1)


def requires_grad_flags(model: nn.Module) -> dict[str, bool]:
    return {name: p.requires_grad for name, p in model.named_parameters()}


def saliency_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("cnnwidgets-saliency") and t.is_alive()}


# ---------------------------------------------------------------- attributions
def test_layers_and_defaults(sv):
    assert list(sv.layers) == [f"features.{i}" for i in range(8)]  # the 4-D outputs, no containers
    # Grad-CAM's default (view_defaults' "cam"): the last layer that ran with a feature map
    # larger than 1 x 1, here the ReLU after the last conv
    assert sv.layer == "features.7"
    assert list(sv.methods) == list(cnnwidgets.core.METHODS)
    assert sv.class_names == NAMES
    assert sv.n_images == N
    assert sv.target == -1 and sv.method == "vanilla"


@pytest.mark.parametrize("method", list(cnnwidgets.core.METHODS))
def test_attribution_equals_core_attribute(sv_ro, demo, logits, method):
    for i in (0, 9):  # (digit 7 has an all-zero Grad-CAM map at features.6)
        target = int(logits[i].argmax())
        got = sv_ro.attribution(i, method)
        want = reference(demo.model, demo.images[i : i + 1], method, target, **core_params(sv_ro, method))
        assert got.dtype == np.float32
        assert got.shape == ((28, 28) if not REGISTRY[method].input_shaped else (1, 28, 28))
        assert np.abs(got).max() > 0  # a real map, not zeros
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_attribution_params_override_traits(sv_ro, demo, logits):
    sv = sv_ro
    target = int(logits[3].argmax())
    got = sv.attribution(3, "integrated_gradients", steps=11, baseline="blur")
    want = reference(demo.model, demo.images[3:4], "integrated_gradients", target, steps=11, baseline="blur", seed=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, sv.attribution(3, "integrated_gradients"))
    got = sv.attribution(3, "gradcam", layer="features.3")
    np.testing.assert_allclose(got, reference(demo.model, demo.images[3:4], "gradcam", target, layer="features.3"),
                               rtol=1e-5, atol=1e-7)
    got = sv.attribution(3, "layer_gradient", layer="features.3", channel=5)
    want = reference(demo.model, demo.images[3:4], "layer_gradient", None, layer="features.3", channel=5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_attribution_follows_traits(sv, demo, logits):
    sv.index, sv.method, sv.layer, sv.channel = 12, "layer_gradient", "features.3", 9
    want = reference(demo.model, demo.images[12:13], "layer_gradient", None, layer="features.3", channel=9)
    np.testing.assert_allclose(sv.attribution(), want, rtol=1e-5, atol=1e-7)
    sv.method, sv.layer = "gradcam", "features.4"
    want = reference(demo.model, demo.images[12:13], "gradcam", int(logits[12].argmax()), layer="features.4")
    np.testing.assert_allclose(sv.attribution(), want, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------- targets
def test_resolve_target(sv, demo, logits):
    i = MISCLASSIFIED
    pred, label = int(logits[i].argmax()), int(demo.labels[i])
    assert pred != label
    assert sv.resolve_target(i) == pred  # the widget's default: predicted
    assert sv.resolve_target(i, "predicted") == pred
    assert sv.resolve_target(i, "true") == label
    assert sv.resolve_target(i, "label") == label
    assert sv.resolve_target(i, 3) == 3
    assert sv.resolve_target(i, "seven") == 7
    sv.target = -2
    assert sv.resolve_target(i) == label
    sv.target = 5
    assert sv.resolve_target(i) == 5


def test_target_true_explains_the_label_not_the_prediction(sv_ro, demo, logits):
    sv = sv_ro
    i = MISCLASSIFIED
    pred, label = int(logits[i].argmax()), int(demo.labels[i])
    x = demo.images[i : i + 1]
    got_true = sv.attribution(i, "vanilla", "true")
    np.testing.assert_allclose(got_true, reference(demo.model, x, "vanilla", label), rtol=1e-5, atol=1e-7)
    got_pred = sv.attribution(i, "vanilla", "predicted")
    np.testing.assert_allclose(got_pred, reference(demo.model, x, "vanilla", pred), rtol=1e-5, atol=1e-7)
    assert not np.allclose(got_true, got_pred)
    np.testing.assert_allclose(sv.attribution(i, "vanilla", "two"), reference(demo.model, x, "vanilla", 2),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(sv.attribution(i, "vanilla", 2), sv.attribution(i, "vanilla", "two"))


def test_constructor_target_forms(demo, logits):
    for target, code in [("predicted", -1), ("true", -2), (4, 4), ("eight", 8)]:
        w = SaliencyViewer(demo.model, demo.images[:10], demo.labels[:10], NAMES, target=target)
        try:
            assert w.target == code
            want = {-1: int(logits[0].argmax()), -2: int(demo.labels[0])}.get(code, code)
            assert w._heat_meta["target"] == want
            assert w._heat_meta["target_name"] == NAMES[want]
            assert w._bars.selected == [want]
        finally:
            w.close()


def test_true_target_without_labels_falls_back_to_predicted(demo, logits):
    w = SaliencyViewer(demo.model, demo.images[:10], target="true")
    try:
        assert w.resolve_target(3) == int(logits[3].argmax())
        assert w.class_names == [str(k) for k in range(10)]
    finally:
        w.close()


# ---------------------------------------------------------------- what the page receives
@pytest.mark.parametrize("method", ["vanilla", "integrated_gradients", "gradcam", "guided_gradcam"])
@pytest.mark.parametrize("mode", ["abs", "signed"])
def test_heat_codes_are_heat_codes_of_to_heatmap(sv, demo, logits, method, mode):
    sv.index = 21
    sv.mode = mode
    sv.method = method
    a = reference(demo.model, demo.images[21:22], method, int(logits[21].argmax()), **core_params(sv, method))
    heat = to_heatmap(a[None] if a.ndim == 2 else a, mode)
    want = heat_codes(heat, mode == "signed")
    meta = sv._heat_meta
    assert (meta["index"], meta["method"], meta["mode"], sv._heat.shape) == (21, method, mode, (28, 28))
    assert meta["target"] == int(logits[21].argmax())
    np.testing.assert_array_equal(decoded_heat(sv), want)
    table = lut("diverging") if mode == "signed" else lut(sv.cmap)
    np.testing.assert_array_equal(sv._heat_lut, table)
    # the overlay, as the page draws it
    np.testing.assert_array_equal(sv.overlay_image(),
                                  attribution_overlay(display_rgb(demo, 21), want, table, sv.opacity, mode == "signed"))
    # the colour scale's ends: the attribution that to_heatmap divides by (0 or -S at the low end)
    a3 = (a[None] if a.ndim == 2 else a).astype(np.float64)
    top = float(np.abs(a3).max(0).max()) if mode == "abs" else float(np.abs(a3.sum(0)).max())
    assert top > 0
    assert sv.heat_range() == ((0.0, top) if mode == "abs" else (-top, top))
    assert (meta["vmin"], meta["vmax"]) == sv.heat_range()
    # the codes span that scale: the largest |value| is at one end of it
    assert (want.max() == 254) if mode == "abs" else (np.abs(want.astype(int) - 127).max() == 127)


def test_colour_scale_says_what_the_value_is(sv):
    assert sv._heat_meta["value"] == "attribution, |gradient|"
    sv.method = "grad_x_input"
    assert sv._heat_meta["value"] == "attribution, |gradient \u00d7 input|"
    sv.mode = "signed"
    assert sv._heat_meta["value"] == "signed attribution, gradient \u00d7 input"
    sv.mode, sv.method = "abs", "gradcam"
    assert sv._heat_meta["value"] == "attribution, Grad-CAM"  # >= 0: no absolute value taken


def test_overlay_follows_opacity_and_cmap(sv, demo):
    sv.index = 5
    sv.cmap, sv.opacity = "viridis", 0.25
    want = attribution_overlay(display_rgb(demo, 5), decoded_heat(sv), lut("viridis"), 0.25)
    np.testing.assert_array_equal(sv.overlay_image(), want)
    sv.opacity = 0.0  # no cover: the image alone, as dimmed gray
    np.testing.assert_array_equal(sv.overlay_image(), dimmed_gray(demo, 5))


def test_attribution_overlay_known_values():
    """The image is dimmed gray; each pixel of the map covers it in proportion to its value."""
    gray = lut("gray")
    white = np.full((1, 3, 1), 255, np.uint8)
    # white ink under no / half / full attribution, opacity 1: 128 (dimmed ink), the mix, the colour
    got = attribution_overlay(white, np.array([[0, 127, 254]], np.uint8), gray, 1.0)[0, :, 0].tolist()
    cover = (255 * 127 + 127) // 254  # code 127 of 254, at opacity 1 (a = 255)
    assert cover == 128 and gray[127, 0] == 128
    assert got == [128, (128 * (255 - cover) + 128 * cover + 127) // 255, 255]
    # colour image: the luminance (77 R + 150 G + 29 B + 128) >> 8, dimmed
    red = np.array([[[255, 0, 0]]], np.uint8)
    assert attribution_overlay(red, np.zeros((1, 1), np.uint8), gray, 0.8)[0, 0].tolist() == [
        ((77 * 255 + 128 >> 8) * BASE_LEVEL + 127) // 255] * 3
    # signed: zero (code 127) leaves the image, both ends cover it at `opacity`
    table = lut("diverging")
    out = attribution_overlay(np.zeros((1, 3, 1), np.uint8), np.array([[0, 127, 254]], np.uint8), table, 1.0, signed=True)
    assert out[0, 1].tolist() == [0, 0, 0]
    assert out[0, 0].tolist() == table[0].tolist() and out[0, 2].tolist() == table[254].tolist()
    # a non-finite value (code 255) is drawn in its colour at `opacity`
    assert attribution_overlay(np.zeros((1, 1, 1), np.uint8), np.full((1, 1), 255, np.uint8), gray, 1.0)[0, 0].tolist() \
        == gray[255].tolist()


def test_bright_ink_and_high_attribution_do_not_look_alike(sv, demo):
    """The old blend (the map at 0.6 over the image as it is) drew a white stroke under no
    attribution as bright as the top of the colour scale; now ink is at most BASE_LEVEL."""
    sv.index = 0
    codes = decoded_heat(sv)
    img = to_display(demo.images[0], mean=demo.mean, std=demo.std)[..., 0]
    out = sv.overlay_image().astype(int)
    chroma = out.max(-1) - out.min(-1)
    ink_low = (img >= 200) & (codes <= 25)  # bright ink, little attribution
    top = codes >= 200  # high attribution
    assert ink_low.sum() >= 5 and top.sum() >= 1
    # ink stays a dim gray (no brighter than BASE_LEVEL, hardly any colour) ...
    assert out[ink_low].max() <= BASE_LEVEL and chroma[ink_low].max() <= 10
    # ... while high attribution is a saturated colour
    assert chroma[top].min() >= 60


def test_image_array_is_the_displayed_digit(sv, demo, logits):
    sv.index = MISCLASSIFIED
    meta = sv._image_meta
    img = sv._image
    assert img.dtype == np.uint8 and img.shape == (28, 28, 1)
    np.testing.assert_array_equal(img, to_display(demo.images[MISCLASSIFIED], mean=demo.mean, std=demo.std))
    pred = int(logits[MISCLASSIFIED].argmax())
    assert meta["predicted"] == NAMES[pred]
    assert meta["label"] == NAMES[int(demo.labels[MISCLASSIFIED])]
    assert meta["correct"] is False
    assert meta["probability"] == pytest.approx(float(torch.softmax(logits[MISCLASSIFIED], 0)[pred]), rel=1e-5)


def test_probabilities_are_softmax_of_the_logits(sv_ro, logits):
    sv = sv_ro
    for i in (0, 33, MISCLASSIFIED):
        p = sv.probabilities(i)
        assert p.shape == (10,)
        assert p.sum() == pytest.approx(1.0, abs=1e-5)
        np.testing.assert_allclose(p, torch.softmax(logits[i], 0).numpy(), rtol=1e-5, atol=1e-7)


def test_bars_show_the_probabilities_and_the_target(sv, logits):
    for i in (0, MISCLASSIFIED):
        sv.index = i
        np.testing.assert_allclose(np.asarray(sv._bars.y), torch.softmax(logits[i], 0).numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(sv._bars.y), sv.probabilities())
        assert list(sv._bars.x) == NAMES
        assert list(sv._bars.selected) == [int(logits[i].argmax())]
    sv.target = -2
    assert list(sv._bars.selected) == [int(sv._images.label(MISCLASSIFIED))]
    sv.target = 6
    assert list(sv._bars.selected) == [6]
    assert sv._heat_meta["target"] == 6


def test_clicking_a_bar_sets_the_target(sv, demo):
    sv.index = 8
    sv._bars.selected = [3]
    assert sv.target == 3
    assert sv._heat_meta["target"] == 3 and sv._heat_meta["target_name"] == "three"
    np.testing.assert_allclose(sv.attribution(), reference(demo.model, demo.images[8:9], "vanilla", 3),
                               rtol=1e-5, atol=1e-7)
    # through the bars' own page state, as a click in the browser arrives
    sv._bars.set_state({"selected": [9]})
    assert sv.target == 9 and list(sv._bars.selected) == [9]
    # a multi-selection or an empty one changes nothing
    sv._bars.selected = [1, 2]
    assert sv.target == 9
    sv._bars.selected = []
    assert sv.target == 9


def test_clicking_the_bar_of_the_predicted_class_keeps_predicted(sv, logits):
    pred = int(logits[0].argmax())
    sv._bars.selected = [pred]
    assert sv.target == -1  # still "predicted": the bar shown is the one explained


# ---------------------------------------------------------------- compare and grid views
def test_compare_view_one_panel_per_method(sv, demo, logits):
    sv.index = 14
    sv.compare_methods = ["vanilla", "smoothgrad", "integrated_gradients", "gradcam"]
    sv.view = "compare"
    assert sv.wait(60)
    meta = sv._panels_meta
    assert meta["kind"] == "compare"
    assert [it["method"] for it in meta["items"]] == ["vanilla", "smoothgrad", "integrated_gradients", "gradcam"]
    assert all(it["index"] == 14 for it in meta["items"])
    pred = int(logits[14].argmax())
    assert all(it["target"] == pred and it["target_name"] == NAMES[pred] for it in meta["items"])
    assert sv._panels.shape == (4, 28, 28) and sv._panel_images.shape == (4, 28, 28, 1)
    assert sv._panels.dtype == sv._panel_images.dtype == np.uint8
    assert sv.progress == -1.0
    for k, m in enumerate(meta["items"]):
        a = reference(demo.model, demo.images[14:15], m["method"], pred, **core_params(sv, m["method"]))
        a3 = a[None] if a.ndim == 2 else a
        codes = heat_codes(to_heatmap(a3, "abs"), False)
        np.testing.assert_array_equal(sv._panels[k], codes)
        want = attribution_overlay(display_rgb(demo, 14), codes, lut(sv.cmap), sv.opacity)
        np.testing.assert_array_equal(sv.panel_overlay(k), want)
        # each panel's colour scale: its own 0 .. max |attribution|
        assert (m["vmin"], m["vmax"]) == (0.0, float(np.abs(a3.astype(np.float64)).max()))
        assert m["value"].startswith("attribution, ")
    # the single-view map is the compare panel of the same method
    sv.method = "smoothgrad"
    assert sv.wait(60)
    np.testing.assert_array_equal(sv.overlay_image(), sv.panel_overlay(1))


def test_default_compare_methods(sv):
    sv.view = "compare"
    assert sv.wait(60)
    assert [it["method"] for it in sv._panels_meta["items"]] == [
        "vanilla", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam", "guided_gradcam"]


def test_grid_view_grid_size_images(sv, demo, logits):
    sv.method = "grad_x_input"
    sv.grid_size = 5
    sv.index = 30
    sv.view = "grid"
    assert sv.wait(60)
    meta = sv._panels_meta
    assert meta["kind"] == "grid"
    assert [it["index"] for it in meta["items"]] == [30, 31, 32, 33, 34]
    assert all(it["method"] == "grad_x_input" for it in meta["items"])
    for k in range(5):
        i = 30 + k
        assert meta["items"][k]["target"] == int(logits[i].argmax())
        a = reference(demo.model, demo.images[i : i + 1], "grad_x_input", int(logits[i].argmax()))
        want = attribution_overlay(display_rgb(demo, i), heat_codes(to_heatmap(a, "abs"), False), lut(sv.cmap), sv.opacity)
        np.testing.assert_array_equal(sv.panel_overlay(k), want)
    # near the end of the set the grid is shorter
    sv.index = N - 2
    assert sv.wait(60)
    assert [it["index"] for it in sv._panels_meta["items"]] == [N - 2, N - 1]
    # the page changes the grid size
    sv.set_state({"grid_size": 3, "index": 2})
    assert sv.wait(60)
    assert [it["index"] for it in sv._panels_meta["items"]] == [2, 3, 4]


def test_stop_message_stops_a_panel_run(sv):
    started = threading.Event()
    sv.observe(lambda c: started.set() if c["new"] > 0 else None, "progress")
    sv.steps = 150  # slow panels: IG with 150 steps
    sv.compare_methods = ["integrated_gradients"] * 6
    sv.view = "compare"
    assert started.wait(60)
    sv._dispatch_message(sv, {"type": "stop"}, [])  # the page's Stop button
    assert sv.wait(60)
    assert sv.status == "stopped" and sv.progress == -1.0


# ---------------------------------------------------------------- a model ending in softmax
@pytest.fixture
def softmax_model(demo):
    return nn.Sequential(copy.deepcopy(demo.model), nn.Softmax(dim=1)).eval()


def test_softmax_model_status_and_attributions_use_the_logits(softmax_model, demo, logits):
    w = SaliencyViewer(softmax_model, demo.images[:N], demo.labels[:N], NAMES)
    try:
        # what the model's head is goes in the banner above the view (not repeated per map)
        assert "Softmax" in w.model_note and "scores before it" in w.model_note
        assert "softmax" not in w.status.lower() and "softmax" not in w._heat_meta["note"].lower()
        assert w.layer == "0.features.7"
        w.steps, w.samples = FAST["steps"], FAST["samples"]
        for method in ("vanilla", "integrated_gradients", "smoothgrad", "guided_backprop", "gradcam"):
            with pytest.warns(UserWarning, match="Softmax"):
                got = w.attribution(MISCLASSIFIED, method)
            params = core_params(w, method)
            if "layer" in params:
                params["layer"] = "features.7"  # the same layer in the bare model
            want = reference(demo.model, demo.images[MISCLASSIFIED : MISCLASSIFIED + 1], method,
                             int(logits[MISCLASSIFIED].argmax()), **params)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        # the page's map too
        w.index = MISCLASSIFIED
        a = reference(demo.model, demo.images[MISCLASSIFIED : MISCLASSIFIED + 1], "vanilla",
                      int(logits[MISCLASSIFIED].argmax()))
        np.testing.assert_array_equal(decoded_heat(w), heat_codes(to_heatmap(a, "abs"), False))
    finally:
        w.close()


def test_softmax_model_probabilities_are_the_models_output(softmax_model, demo, logits):
    """The bars show class probabilities: for a model that already ends in softmax they must be
    its output (= softmax of the logits), not a second softmax of probabilities."""
    w = SaliencyViewer(softmax_model, demo.images[:N], demo.labels[:N], NAMES)
    try:
        want = torch.softmax(logits[0], 0).numpy()
        np.testing.assert_allclose(w.probabilities(0), want, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(w._bars.y), want, rtol=1e-4, atol=1e-6)
    finally:
        w.close()


# ---------------------------------------------------------------- bad input
def test_bad_method(demo, sv):
    with pytest.raises(ValueError, match="nope") as info:
        SaliencyViewer(demo.model, demo.images[:4], method="nope")
    assert "'vanilla'" in str(info.value) and "'gradcam'" in str(info.value)
    with pytest.raises(ValueError, match="'integrated_gradients'"):
        sv.method = "nope"
    assert sv.method == "vanilla"
    with pytest.raises(ValueError, match="'smoothgrad'"):
        sv.attribution(0, "nope")


def test_target_out_of_range(demo, sv):
    for bad in (10, -3):
        with pytest.raises(ValueError, match="0..9"):
            sv.target = bad
        assert sv.target == -1
    with pytest.raises(ValueError, match="0..9"):
        sv.attribution(0, "vanilla", 10)
    with pytest.raises(ValueError, match="0..9"):
        sv.resolve_target(0, 12)
    with pytest.raises(ValueError, match="seven"):
        sv.attribution(0, "vanilla", "sevn")
    with pytest.raises(ValueError, match="0..9"):
        SaliencyViewer(demo.model, demo.images[:4], target=10)


def test_layer_without_spatial_output(demo, sv):
    with pytest.raises(ValueError, match="spatial") as info:
        sv.layer = "classifier.1"
    assert "'features.0'" in str(info.value) and "'features.7'" in str(info.value)
    assert sv.layer == "features.7"
    with pytest.raises(ValueError, match="'features.6'"):
        SaliencyViewer(demo.model, demo.images[:4], layer="classifier.1")
    with pytest.raises(ValueError, match="'features.6'"):
        SaliencyViewer(demo.model, demo.images[:4], layer="nope")
    with pytest.raises(ValueError, match="classifier.1"):
        sv.attribution(0, "gradcam", layer="classifier.1")


def test_bad_index_and_counts(sv):
    for bad in (N, -1):
        with pytest.raises(ValueError, match=f"0..{N - 1}"):
            sv.index = bad
        with pytest.raises(ValueError, match=f"0..{N - 1}"):
            sv.attribution(bad)
        with pytest.raises(ValueError, match=f"0..{N - 1}"):
            sv.probabilities(bad)
    for name, value in [("steps", 0), ("samples", 1001), ("grid_size", 0), ("noise", -0.1), ("opacity", 2.0),
                        ("mode", "log"), ("view", "mosaic"), ("baseline", "white"), ("cmap", "nope"),
                        ("compare_methods", ["vanilla", "bogus"])]:
        old = getattr(sv, name)
        with pytest.raises(ValueError):
            setattr(sv, name, value)
        assert getattr(sv, name) == old


def test_bad_images_and_classes(demo):
    with pytest.raises(ValueError, match=r"\(3, 28, 28\)"):
        SaliencyViewer(demo.model, demo.images[:4].repeat(1, 3, 1, 1))
    with pytest.raises(ValueError, match="10"):
        SaliencyViewer(demo.model, demo.images[:4], demo.labels[:4], ["a", "b"])
    with pytest.raises(TypeError, match="Selection"):
        SaliencyViewer(demo.model, demo.images[:4], selection="nope")


@pytest.mark.parametrize(("state", "text"), PAGE_BAD)
def test_bad_values_from_the_page_are_ignored(sv, state, text):
    sv.index = 3
    before = {k: getattr(sv, k) for k in ("index", "method", "target", "layer", "view", "opacity", "steps", "cmap")}
    heat = (sv._heat, dict(sv._heat_meta))
    sv.last_error = None
    sv.set_state(state)  # must not raise
    assert sv.wait(30)
    assert {k: getattr(sv, k) for k in before} == before
    assert sv.last_error is not None and text in sv.last_error
    assert (sv._heat, sv._heat_meta) == heat


def test_page_values_update_in_the_background(sv, demo, logits):
    sv.set_state({"index": 40})
    assert sv.wait(30)
    assert sv._heat_meta["index"] == 40 and sv._image_meta["index"] == 40
    a = reference(demo.model, demo.images[40:41], "vanilla", int(logits[40].argmax()))
    np.testing.assert_array_equal(decoded_heat(sv), heat_codes(to_heatmap(a, "abs"), False))
    np.testing.assert_allclose(np.asarray(sv._bars.y), torch.softmax(logits[40], 0).numpy(), rtol=1e-5, atol=1e-7)
    assert list(sv._bars.selected) == [int(logits[40].argmax())]
    sv.set_state({"method": "gradcam"})
    assert sv.wait(30)
    a = reference(demo.model, demo.images[40:41], "gradcam", int(logits[40].argmax()), layer="features.7")
    np.testing.assert_array_equal(decoded_heat(sv), heat_codes(to_heatmap(a[None], "abs"), False))
    assert sv.busy is False and sv.last_error is None


def test_page_index_and_method_changes_while_busy_update_image_and_bars(sv, demo, logits):
    """A new index and a new method arrive while the worker is still busy (e.g. with a slow
    Integrated Gradients map): the latest-wins worker keeps only the last job, which must still
    show the new image and its probabilities, not only the new map."""
    gate, running = threading.Event(), threading.Event()
    sv._worker.submit(lambda: (running.set(), gate.wait(30)))  # stands for a slow earlier update
    assert running.wait(30)
    sv.set_state({"index": 40})
    sv.set_state({"method": "gradcam"})
    gate.set()
    assert sv.wait(30)
    assert sv.index == 40 and sv._heat_meta["index"] == 40 and sv._heat_meta["method"] == "gradcam"
    a = reference(demo.model, demo.images[40:41], "gradcam", int(logits[40].argmax()), layer="features.7")
    np.testing.assert_array_equal(decoded_heat(sv), heat_codes(to_heatmap(a[None], "abs"), False))
    assert sv._image_meta["index"] == 40  # the digit under the map
    np.testing.assert_allclose(np.asarray(sv._bars.y), torch.softmax(logits[40], 0).numpy(), rtol=1e-5, atol=1e-7)


def test_a_background_update_does_not_swallow_the_notebooks_warnings(sv, demo, recwarn):
    """A page event computes the map on the worker thread, which records the attribution's
    warnings (for the softmax note). A warning raised meanwhile by the user's own code (the main
    thread) must still reach the user."""
    inside, go = threading.Event(), threading.Event()

    def pre(_m, _inp):  # holds the worker inside the attribution's gradient pass
        on_worker = threading.current_thread().name == "cnnwidgets-saliency"
        if on_worker and torch.is_grad_enabled() and not inside.is_set():
            inside.set()
            go.wait(30)

    handle = view_pre_hook(demo.model, pre)
    try:
        sv.set_state({"index": 5})
        assert inside.wait(30)
        warnings.warn("a warning from the notebook", UserWarning)
        go.set()
        assert sv.wait(30)
    finally:
        go.set()
        handle.remove()
    assert sv._heat_meta["index"] == 5
    assert any("a warning from the notebook" in str(r.message) for r in recwarn.list)


@pytest.mark.parametrize("content", [{"type": "bogus"}, "hello", None, [1, 2], {"no": "type"}, {"type": "stop"}])
def test_page_messages_never_raise(sv, content):
    sv._dispatch_message(sv, content, [])
    assert sv.wait(10)
    if content != {"type": "stop"}:
        assert "unknown message" in sv.last_error and "'stop'" in sv.last_error


# ---------------------------------------------------------------- Selection
def test_selection_drives_index_target_and_layer(demo, logits):
    sel = Selection()
    w = SaliencyViewer(demo.model, demo.images[:N], demo.labels[:N], NAMES, selection=sel)
    try:
        assert sel.layer == "features.7"  # the viewer fills an empty Selection
        sel.index = 17
        assert w.index == 17 and w._heat_meta["index"] == 17
        sel.target = 2
        assert w.target == 2 and w._heat_meta["target"] == 2
        sel.layer = "features.3"
        assert w.layer == "features.3"
        sel.layer = "classifier.1"  # not a spatial layer: the viewer keeps its own, and says so
        assert w.layer == "features.3"
        assert "layer 'classifier.1' has no feature maps" in w.selection_note and "'features.3'" in w.selection_note
        sel.index = 5000  # beyond this viewer's images: ignored, and said
        assert w.index == 17
        assert "image 5000, which this view does not have (images 0..99): it shows image 17" in w.selection_note
        sel.index, sel.layer = 18, "features.4"  # values it can show: the notes go
        assert w.index == 18 and w.layer == "features.4" and "shared selection" not in w.selection_note and w.selection_note == ""
        w._bars.selected = [7]  # a bar click reaches the Selection
        assert sel.target == 7
        w.set_state({"index": 3})
        assert w.wait(30)
        assert sel.index == 3
    finally:
        w.close()
    sel.index = 9  # a closed viewer no longer follows
    assert w.index == 3


# ---------------------------------------------------------------- model state
def test_model_state_is_left_as_found(demo, count_hooks, flags):
    model = copy.deepcopy(demo.model).train()  # dropout on in train mode
    model.features[3].eval()  # mixed modes
    model.features[0].weight.requires_grad_(False)
    modes, grads = flags(model), requires_grad_flags(model)
    assert count_hooks(model) == 0

    def unchanged():
        assert flags(model) == modes
        assert requires_grad_flags(model) == grads
        assert count_hooks(model) == 0
        assert all(p.grad is None for p in model.parameters())

    w = SaliencyViewer(model, demo.images[:20], demo.labels[:20], NAMES)
    try:
        unchanged()
        w.steps, w.samples = 4, 3
        ref = copy.deepcopy(model).eval()
        for method in cnnwidgets.core.METHODS:
            got = w.attribution(2, method)
            unchanged()
            # eval-mode attributions (deterministic: no dropout)
            np.testing.assert_array_equal(got, w.attribution(2, method))
            want = reference(ref, demo.images[2:3], method, w.resolve_target(2), **core_params(w, method))
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        w.probabilities(3)
        w.resolve_target(3)
        unchanged()
        w.view = "compare"
        assert w.wait(60)
        unchanged()
        w.set_state({"index": 4, "method": "guided_gradcam", "view": "grid", "grid_size": 3})
        assert w.wait(60)
        assert w._panels_meta["kind"] == "grid"
        unchanged()
        w._bars.selected = [1]
        w.set_state({"target": 99})  # rejected
        w.layer = "features.1"
        w.method = "deconvnet"
        assert w.wait(60)  # the grid panels are recomputed in the background (in eval mode)
        unchanged()
        with pytest.raises(ValueError):
            w.attribution(0, "gradcam", layer="classifier.1")  # an error inside the call
        unchanged()
    finally:
        w.close()
    unchanged()


# ---------------------------------------------------------------- close
def test_close_stops_worker_threads(demo):
    w = SaliencyViewer(demo.model, demo.images[:20])
    workers = (w._worker, w._panel_worker)
    assert all(x.alive for x in workers)
    assert {x._thread for x in workers} <= saliency_threads()
    w.close()
    assert not any(x.alive for x in workers)
    # a closed viewer does not raise
    w.close()
    w.set_state({"index": 4})
    w._dispatch_message(w, {"type": "stop"}, [])
    assert w.wait(5)
    repr(w)


def test_close_during_a_panel_run(demo):
    w = SaliencyViewer(demo.model, demo.images[:20])
    started = threading.Event()
    w.observe(lambda c: started.set() if c["new"] > 0 else None, "progress")
    w.steps = 150
    w.compare_methods = ["integrated_gradients"] * 8
    w.view = "compare"
    assert started.wait(60)
    w.close()  # stops the run between two panels and joins the threads
    assert not w._panel_worker.alive and not w._worker.alive


def test_failed_construction_leaves_no_threads(demo):
    before = saliency_threads()
    with pytest.raises(ValueError):
        SaliencyViewer(demo.model, demo.images[:5], layer="classifier.1")
    with pytest.raises(ValueError):
        SaliencyViewer(demo.model, demo.images[:5], target=42)
    time.sleep(0.05)
    assert saliency_threads() - before == set()


def test_method_labels_and_options_come_from_the_core_registry(sv):
    from cnnwidgets.core.saliency import REGISTRY

    assert list(sv.method_info) == list(REGISTRY) == list(sv.methods)
    for name, spec in REGISTRY.items():
        assert sv.method_info[name] == {"label": spec.label, "reference": spec.reference,
                                        "tip": SV_TIPS[name], "layer": spec.takes_layer,
                                        "steps": spec.takes_steps, "samples": spec.takes_samples,
                                        "window": spec.takes_window, "rule": spec.takes_rule}
        assert "\n" not in SV_TIPS[name] and len(SV_TIPS[name]) < 110  # one line
    assert sv.method_info["gradcam"]["label"] == "Grad-CAM" and sv.method_info["layer_gradient"]["layer"]


# ---------------------------------------------------------------- the widget contract
def test_choices_come_from_the_core_literals():
    from typing import get_args

    from cnnwidgets.core.saliency import Baseline, HeatmapMode, Method
    from cnnwidgets.widgets._base import Choice
    from cnnwidgets.widgets.saliency_viewer import SaliencyLayout

    traits = SaliencyViewer.class_traits()
    for name, alias in [("method", Method), ("mode", HeatmapMode), ("baseline", Baseline), ("view", SaliencyLayout)]:
        assert isinstance(traits[name], Choice), name
        assert traits[name].values == get_args(alias), name
    assert get_args(Method) == tuple(cnnwidgets.core.METHODS)


def test_arrays_go_as_ndarray_traits_with_dtype_and_shape(sv):
    from ipywidgets.widgets.widget import _remove_buffers

    sv.view = "compare"
    assert sv.wait(60)
    names = ["_image", "_probs", "_heat", "_heat_lut", "_panels", "_panel_images"]
    state, paths, buffers = _remove_buffers(sv.get_state(names))
    assert sorted(p[0] for p in paths) == sorted(names) and all(p[1] == "view" for p in paths)
    assert state["_image"] == {"dtype": "uint8", "shape": [28, 28, 1]}
    assert state["_probs"] == {"dtype": "float32", "shape": [10]}
    assert state["_heat"] == {"dtype": "uint8", "shape": [28, 28]}
    assert state["_heat_lut"] == {"dtype": "uint8", "shape": [256, 3]}
    assert state["_panels"] == {"dtype": "uint8", "shape": [6, 28, 28]}
    assert state["_panel_images"] == {"dtype": "uint8", "shape": [6, 28, 28, 1]}
    # no shape travels in the metadata any more
    for meta in (sv._image_meta, sv._heat_meta, sv._panels_meta):
        assert not {"h", "w", "c"} & set(meta)


def test_a_refused_page_value_is_kept_for_its_control(sv):
    for name, bad in [("steps", 0), ("samples", 5000), ("grid_size", 101), ("noise", 2.0)]:
        before = getattr(sv, name)
        sv.set_state({name: bad})
        assert getattr(sv, name) == before
        assert f"{name} must be" in sv.control_errors[name] and str(bad) in sv.control_errors[name]
    sv.set_state({"method": "nope"})
    assert "'integrated_gradients'" in sv.control_errors["method"]
    sv.set_state({"steps": 20})  # the next valid change clears that field's message only
    assert sv.wait(30)
    assert sv.steps == 20 and "steps" not in sv.control_errors and "samples" in sv.control_errors


def test_layer_labels_give_type_and_output_shape(sv):
    assert list(sv.layer_labels) == list(sv.layers)
    assert sv.layer_labels["features.0"] == "Conv2d 32x26x26"
    assert sv.layer_labels["features.7"] == "ReLU 128x3x3"


# ---------------------------------------------------------------- the class chart
def test_chart_fills_its_container_and_says_what_it_shows(sv):
    assert sv.chart.layout.width == "100%"
    assert sv.chart.title == "image 0 \u00b7 click a class to explain it"
    assert sv.chart.axes[1].label == "probability"
    sv.index = 7
    assert sv.chart.title.startswith("image 7 ")


def test_a_click_anywhere_in_a_column_explains_that_class(sv):
    """A bar near 0 % has no height to click: the full-height column behind it takes the click."""
    sv.index = 8
    p = sv.probabilities()
    low = int(np.argmin(p))
    assert p[low] < 1e-3
    assert list(sv._columns.y) == [1.0] * 10 and sv._columns.opacities == [0.0]
    sv._columns.set_state({"selected": [low]})  # as a click in the browser arrives
    assert sv.target == low and sv._heat_meta["target"] == low
    assert list(sv._bars.selected) == [low]  # the bar shows the explained class
    assert sv._columns.selected is None  # the column is never drawn selected, and clickable again
    sv._columns.set_state({"selected": [2]})
    assert sv.target == 2
    sv._columns.set_state({"selected": ["x"]})  # junk: ignored, the chart shows the class explained
    assert sv.target == 2 and list(sv._bars.selected) == [2] and "selected bar" in sv.last_error


def test_a_wrong_prediction_is_drawn_in_the_error_colour(sv, logits):
    sv.index = MISCLASSIFIED
    pred = int(logits[MISCLASSIFIED].argmax())
    assert sv._image_meta["correct"] is False
    colors = list(sv._bars.colors)
    assert colors[pred] == SaliencyViewer.WRONG_COLOR
    assert colors.count(SaliencyViewer.BAR_COLOR) == 9
    sv.index = 0
    assert sv._image_meta["correct"] is True and set(sv._bars.colors) == {SaliencyViewer.BAR_COLOR}


# ---------------------------------------------------------------- failures shown in the view
def test_a_failed_map_is_a_failure_in_the_status_line(sv, monkeypatch):
    import dataclasses

    from cnnwidgets.core.saliency import REGISTRY

    def boom(*a, **k):
        raise RuntimeError("no gradient today")

    monkeypatch.setitem(REGISTRY, "smoothgrad", dataclasses.replace(REGISTRY["smoothgrad"], function=boom))
    sv.set_state({"method": "smoothgrad"})
    assert sv.wait(30)
    assert "no gradient today" in sv._heat_meta["error"] and sv.heat_range() != sv.heat_range()  # nan
    assert "SmoothGrad failed" in sv.status and sv.status_error is True
    sv.set_state({"method": "vanilla"})
    assert sv.wait(30)
    assert "error" not in sv._heat_meta and sv.status_error is False and sv.status == ""
