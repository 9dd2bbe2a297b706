"""SaliencyViewer on the models people bring (``tests/zoo.py``): every zoo model, float16 and
``torch.compile`` variants, every attribution method, through the viewer's API and its compare
view.

Known answers: the probabilities are computed here independently of cnnwidgets (softmax of the
logits, the model's own softmax output, the sigmoid of a single logit, the share of pixels per
class of a segmentation); the viewer's maps equal :func:`cnnwidgets.core.attribute` called on
its own; on a net without a rectifier guided backprop IS the plain gradient (and the viewer says
so), on every ReLU net it is not.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import SaliencyViewer
from cnnwidgets.core import to_heatmap
from cnnwidgets.core.colormaps import heat_codes, lut
from cnnwidgets.widgets.saliency_viewer import attribution_overlay
from cnnwidgets.core.layers import not_a_cnn_notice
from cnnwidgets.core.saliency import METHODS, REGISTRY, attribute
from tests.conftest import hook_count, requires_grad_flags, training_flags
from tests.zoo import LRP_REFUSED, OUTPUT_SELECTORS, RELU_FAMILY, ZOO, compiled, example_input, half

SIZE = 64
#: Grad-CAM and its family: they read a layer's feature maps for a class score.
CAMS = [m for m, spec in REGISTRY.items() if spec.takes_layer and spec.targeted]
N_IMAGES = 3
FAST = {"steps": 4, "samples": 3}  # few passes per map: the checks are about plumbing, not quality
#: name -> (zoo model, wrapper): float16 copies and a torch.compile'd model besides the zoo itself.
VARIANTS = {"resnet_half": ("resnet", half), "convnext_half": ("convnext", half), "resnet_compiled": ("resnet", compiled)}
CASES = sorted(ZOO) + list(VARIANTS)


#: tiny convolutions: one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- helpers
def build(case: str) -> tuple[str, nn.Module]:
    """(zoo name, model) for a case of :data:`CASES`."""
    name, wrap = VARIANTS.get(case, (case, None))
    model = ZOO[name]()
    return name, (model if wrap is None else wrap(model))


def inner(model: nn.Module) -> nn.Module:
    """The module a torch.compile wrapper runs (the model itself otherwise)."""
    return model._modules.get("_orig_mod", model) if type(model).__name__ == "OptimizedModule" else model


def snapshot(model: nn.Module) -> dict:
    m = inner(model)
    return {
        "state": {k: v.detach().clone() for k, v in m.state_dict().items()},
        "training": training_flags(model),
        "hooks": hook_count(m) + hook_count(model),
        "requires_grad": requires_grad_flags(m),
        "grads": [p.grad for p in m.parameters()],
    }


def assert_as_found(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{k} changed"
    assert after["training"] == before["training"]
    assert after["hooks"] == before["hooks"]
    assert after["requires_grad"] == before["requires_grad"]
    assert all(g is None for g in after["grads"])


def independent_probabilities(name: str, model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """N x K, computed here without cnnwidgets: what the bar chart must show."""
    m = inner(model)
    dtype = next(m.parameters()).dtype
    with torch.no_grad():
        out = m(x.to(dtype))
    if name == "segnet":  # the share of the pixels whose top class is k
        top = out["out"].argmax(1).flatten(1)
        shares = torch.stack([torch.bincount(t, minlength=out["out"].shape[1]) for t in top]).float()
        return (shares / top.shape[1]).numpy()
    if name in ("detector", "detector_namedtuple"):  # the score head's own softmax
        return out[1].float().numpy()
    if name == "binary":  # one logit: [1 - sigmoid, sigmoid]
        p = torch.sigmoid(out.float())
        return torch.cat([1 - p, p], 1).numpy()
    if name == "binary_sigmoid":  # the model's own sigmoid
        p = out.float()
        return torch.cat([1 - p, p], 1).numpy()
    if name == "softmax_net":  # the model's own softmax: never a second one
        return out.float().numpy()
    return torch.softmax(out.float(), 1).numpy()


def viewer(model: nn.Module, name: str, x: torch.Tensor, **kw) -> SaliencyViewer:
    sv = SaliencyViewer(model, x, output=OUTPUT_SELECTORS.get(name), **kw)
    sv.steps, sv.samples = FAST["steps"], FAST["samples"]
    return sv


def run_compare(sv: SaliencyViewer, methods) -> list[dict]:
    sv.compare_methods = list(methods)
    sv.view = "compare"
    assert sv.wait(60)
    meta = sv._panels_meta
    assert meta["kind"] == "compare" and [it["method"] for it in meta["items"]] == list(methods)
    assert sv.progress == -1.0
    return meta["items"]


# ---------------------------------------------------------------- every model, every method
@pytest.mark.filterwarnings("ignore:the model ends in:UserWarning")  # the softmax/sigmoid bypass, tested below
@pytest.mark.parametrize("case", CASES)
def test_every_method_on_every_zoo_model(case):
    name, model = build(case)
    before = snapshot(model)
    x = example_input(name, n=N_IMAGES, size=SIZE)
    sv = viewer(model, name, x)
    try:
        # the bars: probabilities from the head, checked against an independent computation
        want = independent_probabilities(name, model, x)
        tol = {"rtol": 2e-2, "atol": 2e-3} if "half" in case else {"rtol": 1e-4, "atol": 1e-6}
        for i in range(N_IMAGES):
            got = sv.probabilities(i)
            assert got.dtype == np.float32 and got.shape == (want.shape[1],)
            np.testing.assert_allclose(got, want[i], **tol)
        np.testing.assert_allclose(np.asarray(sv._bars.y), want[0], **tol)
        assert len(sv.class_names) == want.shape[1] == sv._n_classes
        assert sv.layer in sv.layers
        if name == "googlenet":  # the aux head never runs in eval: not Grad-CAM's default
            assert not sv.layer.startswith("aux1") and not any(n.startswith("aux1") for n in sv.layers)

        # every method through the viewer's API
        cam_refused = name == "vit"
        maps = {}
        for m in METHODS:
            if cam_refused and m in CAMS:
                with pytest.raises(ValueError, match="vision transformer"):
                    sv.attribution(1, m)
                continue
            if m == "lrp" and name in LRP_REFUSED:
                with pytest.raises(ValueError, match=re.escape(LRP_REFUSED[name])):
                    sv.attribution(1, m)
                continue
            a = sv.attribution(1, m)
            assert a.dtype == np.float32
            assert a.shape == ((SIZE, SIZE) if not REGISTRY[m].input_shaped else (3, SIZE, SIZE)), m
            assert np.isfinite(a).all(), m
            if m not in CAMS:  # a CAM may be all zero after its ReLU
                assert np.abs(a).max() > 0, m
            maps[m] = a
        # the viewer's maps are the core's, with the viewer's output and settings
        target = sv.resolve_target(1)
        sel = OUTPUT_SELECTORS.get(name)
        for m, params in [("vanilla", {}), ("integrated_gradients", {"steps": FAST["steps"], "baseline": "black"})]:
            ref = attribute(model, x[1:2], m, target, output=sel, **params)[0].float().numpy()
            np.testing.assert_allclose(maps[m], ref, rtol=1e-4, atol=1e-6)
        if name in RELU_FAMILY:  # the guided rule changes the map on every ReLU net
            assert not np.allclose(maps["guided_backprop"], maps["vanilla"])

        # the same methods side by side: every panel drawn, with what the method reported
        items = run_compare(sv, METHODS)
        assert sv._panels.shape == (len(METHODS), SIZE, SIZE)
        for k, it in enumerate(items):
            if cam_refused and it["method"] in CAMS:
                assert "vision transformer" in it["error"]
                continue
            if it["method"] == "lrp" and name in LRP_REFUSED:
                assert LRP_REFUSED[name] in it["error"]
                continue
            assert "error" not in it, it
            assert sv.panel_overlay(k).shape == (SIZE, SIZE, 3)
        by = {it["method"]: it for it in items}
        assert by["integrated_gradients"]["note"].startswith("delta ")
        assert "rule on" in by["guided_backprop"]["note"] and "rule on" in by["deconvnet"]["note"]
        if name in RELU_FAMILY:
            assert "ReLU" in by["guided_backprop"]["note"]
        failed = (len(CAMS) if cam_refused else 0) + (name in LRP_REFUSED)
        assert sv._panels_meta["failed"] == failed
        assert (f"{failed} of {len(METHODS)} panels failed" in sv.status) == bool(failed)
    finally:
        sv.close()
    assert_as_found(model, before)


# ---------------------------------------------------------------- heads
@pytest.mark.filterwarnings("ignore:the model ends in Sigmoid:UserWarning")
def test_binary_two_classes_class_zero_is_the_negated_logit():
    model = ZOO["binary_sigmoid"]()
    x = example_input("binary_sigmoid", n=2, size=SIZE)
    sv = viewer(model, "binary_sigmoid", x, classes=["cat"])
    try:
        assert sv.class_names == ["not cat", "cat"]
        assert "Sigmoid" in sv.model_note and "one logit" in sv.model_note
        for i in range(2):
            one = sv.attribution(i, "vanilla", "cat")
            np.testing.assert_allclose(sv.attribution(i, "vanilla", "not cat"), -one, rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(sv.attribution(i, "vanilla", 0), -one, rtol=1e-6, atol=1e-8)
        sv.target = 0
        assert sv._heat_meta["target"] == 0 and sv._heat_meta["target_name"] == "not cat"
        assert "error" not in sv._heat_meta
        with pytest.raises(ValueError, match="0..1"):
            sv.target = 2
    finally:
        sv.close()


def test_segmentation_region_and_pixel_shares():
    model = ZOO["segnet"]()
    x = example_input("segnet", n=2, size=SIZE)
    box = (0.0, 0.0, 0.5, 0.5)
    sv = viewer(model, "segnet", x, region=box)
    try:
        assert "segmentation" in sv.model_note
        assert sv._image_meta["probs_label"] == "share of pixels"
        with torch.no_grad():
            out = model(x)["out"]
        mask = torch.zeros(SIZE, SIZE)
        mask[: SIZE // 2, : SIZE // 2] = 1
        region_scores = (out * mask).sum((2, 3)) / mask.sum()
        for i in range(2):
            pred = int(region_scores[i].argmax())
            assert sv.resolve_target(i) == pred  # "predicted": the top mean score over the region
            want = attribute(model, x[i : i + 1], "vanilla", pred, output="out", region=box)[0].numpy()
            np.testing.assert_allclose(sv.attribution(i, "vanilla"), want, rtol=1e-5, atol=1e-7)
            whole = attribute(model, x[i : i + 1], "vanilla", pred, output="out")[0].numpy()
            assert not np.allclose(want, whole)  # the region matters
            np.testing.assert_allclose(sv.attribution(i, "vanilla", region=None), whole, rtol=1e-5, atol=1e-7)
    finally:
        sv.close()


def test_grid_view_one_failing_image_keeps_the_others():
    """A per-image region mask that is empty for image 1: that panel says why, the others are drawn."""
    model = ZOO["segnet"]()
    x = example_input("segnet", n=3, size=SIZE)
    masks = np.ones((3, SIZE, SIZE), np.float32)
    masks[1] = 0
    sv = viewer(model, "segnet", x, region=masks)
    try:
        sv.grid_size = 3
        sv.view = "grid"
        assert sv.wait(60)
        meta = sv._panels_meta
        assert [it["index"] for it in meta["items"]] == [0, 1, 2]
        assert "region is empty" in meta["items"][1]["error"]
        assert "error" not in meta["items"][0] and "error" not in meta["items"][2]
        assert "1 of 3 images failed" in sv.status and sv.progress == -1.0
        np.testing.assert_array_equal(sv.panel_overlay(1), sv._images.display_rgb(1))  # the image alone
        assert not np.array_equal(sv.panel_overlay(0), sv._images.display_rgb(0))
        # the single view of image 1: the error in the status line, not a stale map
        sv.index = 1
        assert sv.wait(60)
        assert "region is empty" in sv._heat_meta["error"] and "region is empty" in sv.status
        np.testing.assert_array_equal(sv.overlay_image(), sv._images.display_rgb(1))
    finally:
        sv.close()


def test_output_and_region_are_validated():
    det = ZOO["detector"]()
    x = example_input("detector", n=2, size=SIZE)
    with pytest.raises(ValueError, match="output=") as info:
        SaliencyViewer(det, x)
    assert "tensor 1 x 4" in str(info.value) and "tensor 1 x 3" in str(info.value)
    with pytest.raises(TypeError, match="output"):
        SaliencyViewer(det, x, output=1.5)
    with pytest.raises(ValueError, match="output=5"):
        SaliencyViewer(det, x, output=5)
    with pytest.raises(ValueError, match="segmentation"):
        SaliencyViewer(ZOO["resnet"](), x, region=(0, 0, 0.5, 0.5))
    seg_x = example_input("segnet", n=2, size=SIZE)
    with pytest.raises(ValueError, match="region box"):
        SaliencyViewer(ZOO["segnet"](), seg_x, output="out", region=(0.5, 0, 0.2, 1))
    with pytest.raises(ValueError, match="one mask per image"):
        SaliencyViewer(ZOO["segnet"](), seg_x, output="out", region=np.ones((3, SIZE, SIZE)))


# ---------------------------------------------------------------- models without a rectifier
def tanh_cnn() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1), nn.Tanh(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    ).eval()


def test_no_rectifier_the_panels_say_guided_backprop_is_the_plain_gradient():
    model = tanh_cnn()
    before = snapshot(model)
    x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    sv = SaliencyViewer(model, x)
    try:
        vanilla = sv.attribution(0, "vanilla")
        for m in ("guided_backprop", "deconvnet"):
            with pytest.warns(UserWarning, match="plain gradient"):
                a = sv.attribution(0, m)
            np.testing.assert_array_equal(a, vanilla)
        items = run_compare(sv, ["vanilla", "guided_backprop", "deconvnet", "guided_gradcam"])
        assert items[0]["note"] == ""
        for it in items[1:3]:
            assert it["note"] == "no rectifying activation: same as the plain gradient"
        assert "plain gradient times Grad-CAM" in items[3]["note"]
        np.testing.assert_array_equal(sv.panel_overlay(1), sv.panel_overlay(0))  # the same picture ...
        np.testing.assert_array_equal(sv.panel_overlay(2), sv.panel_overlay(0))  # ... and said so
        sv.method = "guided_backprop"  # the single view says it in the status line
        assert "plain gradient" in sv.status and "plain gradient" in sv._heat_meta["note"]
    finally:
        sv.close()
    assert_as_found(model, before)


# ---------------------------------------------------------------- errors stay in their panel
def test_a_failing_method_keeps_the_other_panels(monkeypatch):
    model = ZOO["resnet"]()
    model.train()  # the viewer runs it in eval mode; the user's BatchNorm statistics must not move
    model.layer2.eval()
    before = snapshot(model)
    x = example_input("resnet", n=2, size=SIZE)
    sv = viewer(model, "resnet", x)
    try:
        spec = REGISTRY["smoothgrad"]

        @functools.wraps(spec.function)
        def boom(*args, **kwargs):
            raise RuntimeError("boom: the method broke")

        monkeypatch.setitem(REGISTRY, "smoothgrad", dataclasses.replace(spec, function=boom))
        methods = ["vanilla", "smoothgrad", "integrated_gradients", "guided_backprop", "gradcam"]
        items = run_compare(sv, methods)
        assert items[1]["error"] == "RuntimeError: boom: the method broke"
        assert all("error" not in it for k, it in enumerate(items) if k != 1)
        assert "1 of 5 panels failed" in sv.status
        target = sv.resolve_target(0)
        for k in (0, 2, 3, 4):  # the other panels are the real maps
            m = methods[k]
            params = {"steps": sv.steps, "baseline": sv.baseline, "seed": 0} if m == "integrated_gradients" else {}
            if m == "gradcam":
                params = {"layer": sv.layer}
            a = attribute(model, x[:1], m, target, **params)[0].numpy()
            codes = heat_codes(to_heatmap(a[None] if a.ndim == 2 else a, "abs"), False)
            want = attribution_overlay(sv._images.display_rgb(0), codes, lut(sv.cmap), sv.opacity)
            np.testing.assert_array_equal(sv.panel_overlay(k), want)
        np.testing.assert_array_equal(sv.panel_overlay(1), sv._images.display_rgb(0))

        # single view: the error is in the status line (from Python and from the page)
        sv.method = "smoothgrad"
        assert "boom" in sv.status and "boom" in sv._heat_meta["error"] and sv.busy is False
        sv.set_state({"method": "vanilla"})
        assert sv.wait(60)
        assert "boom" not in sv.status and "error" not in sv._heat_meta
        sv.set_state({"method": "smoothgrad"})
        assert sv.wait(60)
        assert "boom" in sv.status and sv.busy is False

        # a run that fails outside any one method still ends the progress indicator
        def broken(_i):
            raise RuntimeError("display broke")

        monkeypatch.setattr(sv._images, "display", broken)
        sv.compare_methods = ["vanilla"]
        assert sv.wait(60)
        assert sv.progress == -1.0 and "display broke" in sv.status
    finally:
        sv.close()
    assert_as_found(model, before)


def test_vit_notice_gradients_work_gradcam_refused_in_the_view():
    model = ZOO["vit"]()
    x = example_input("vit", n=2, size=SIZE)
    sv = viewer(model, "vit", x, method="gradcam")
    try:
        assert not_a_cnn_notice("conv_proj") in sv.model_note
        assert sv.layers == ["conv_proj"]
        assert "vision transformer" in sv._heat_meta["error"] and "Grad-CAM failed" in sv.status
        assert sv.progress == -1.0 and sv.busy is False
        sv.method = "vanilla"
        assert "error" not in sv._heat_meta and sv.status == ""
        # an explicit layer is the user's choice
        assert sv.attribution(0, "gradcam", layer="conv_proj").shape == (SIZE, SIZE)
    finally:
        sv.close()


def test_common_options_for_every_method():
    model = ZOO["softmax_net"]()
    x = example_input("softmax_net", n=2, size=SIZE)
    sv = viewer(model, "softmax_net", x)
    try:
        common = {"steps": 8, "samples": 2, "noise": 0.1, "baseline": "black", "seed": 1, "batch_size": 4,
                  "integration": "gausslegendre", "channel": 1}
        for m in METHODS:
            if REGISTRY[m].targeted and m != "eigencam":  # a class score: the softmax is bypassed, and said so
                with pytest.warns(UserWarning, match="Softmax"):
                    a = sv.attribution(0, m, **common)
            else:
                a = sv.attribution(0, m, **common)
            assert np.isfinite(a).all()
        with pytest.warns(UserWarning, match="Softmax"):
            np.testing.assert_array_equal(sv.attribution(0, "vanilla", steps=8), sv.attribution(0, "vanilla"))
        with pytest.raises(ValueError, match="integrated_gradients: .*steps"):
            sv.attribution(0, "vanilla", stepz=8)
    finally:
        sv.close()


def test_float16_maps_and_statistics_are_float32():
    model = half(ZOO["resnet"]())
    x = example_input("resnet", n=2, size=SIZE)
    sv = viewer(model, "resnet", x)
    try:
        assert sv.probabilities(0).dtype == np.float32
        e = sv.explanation(0, "integrated_gradients")
        assert e.attribution.dtype == torch.float32 and e.delta is not None and torch.isfinite(e.delta).all()
        ref = attribute(ZOO["resnet"](), x[:1], "vanilla", sv.resolve_target(0))[0].numpy()
        got = sv.attribution(0, "vanilla")
        # float16 forward and backward: close to the float32 model's gradient, not equal
        assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.9
    finally:
        sv.close()
