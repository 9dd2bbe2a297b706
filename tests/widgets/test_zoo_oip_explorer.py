"""OIPOptimizer, FilterGrid and the Explorer on every model of the test zoo (``tests/zoo.py``):
the architectures people bring, with their structured outputs, grouped convolutions, final
softmax or sigmoid, auxiliary heads, half precision and wrappers (issue #12)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import Explorer, FilterGrid, OIPOptimizer
from cnnwidgets.core.layers import not_a_cnn_notice, view_defaults
from cnnwidgets.core.model import conv_layers, get_layer
from tests.conftest import hook_count, requires_grad_flags, training_flags
from tests.zoo import CLASSIFIERS, OUTPUT_SELECTORS, ZOO, compiled, example_input, half

NAMES = sorted(ZOO)
#: example_input's images are uniform noise standardized with these: in display space, [0, 1).
MEAN, STD = 0.45, 0.25
#: Classes each model's (selected) output reads as.
N_CLASSES = {
    **dict.fromkeys((*CLASSIFIERS, "vit"), 10),
    "segnet": 4,  # segmentation scores N x 4 x H x W
    "detector": 3,
    "detector_namedtuple": 3,
    "binary": 2,  # one logit: two classes
    "binary_sigmoid": 2,
}


#: tiny convolutions: one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def users_model(name: str) -> nn.Module:
    """A fresh zoo model in a state the views must leave alone: train mode but one block in
    eval, the first parameter frozen."""
    model = ZOO[name]().train()
    next(iter(model.children())).eval()
    next(model.parameters()).requires_grad_(False)
    return model


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": training_flags(model),
        "requires_grad": requires_grad_flags(model),
        "hooks": hook_count(model),
    }


def assert_as_found(model: nn.Module, before: dict) -> None:
    state = model.state_dict()
    assert list(state) == list(before["state"])
    for k, v in state.items():
        old = before["state"][k]
        assert v.dtype == old.dtype and torch.equal(v, old), f"{k} changed"  # BatchNorm statistics too
    assert training_flags(model) == before["training"]
    assert requires_grad_flags(model) == before["requires_grad"]
    assert hook_count(model) == before["hooks"] == 0
    assert all(p.grad is None for p in model.parameters())


def rises(history: list[float]) -> bool:
    return len(history) == 5 and bool(np.isfinite(history).all()) and history[-1] > history[0]


# ---------------------------------------------------------------- OIPOptimizer
@pytest.mark.parametrize("name", NAMES)
def test_oip_on_every_model(name):
    model = users_model(name)
    before = snapshot(model)
    images = example_input(name, n=2)  # noise the model is calibrated on: no dead start
    d = view_defaults(model, images[:1])
    w = OIPOptimizer(model, images=images, mean=MEAN, std=STD, init="dataset", output=OUTPUT_SELECTORS.get(name))
    try:
        # the default layer: a mid-to-deep conv (a ViT has only its patch embedding)
        assert w.layer == (d["optimizer"] or d["patch_embedding"])
        assert isinstance(get_layer(model, w.layer), nn.Conv2d)
        if name != "vit":
            assert w.layer != conv_layers(model)[0]
        w.channel = 1
        w.run(steps=5)  # a channel objective reads a layer: any output structure
        assert rises(w.history), w.history
        assert w.n_classes == N_CLASSES[name] and w.class_note == ""
        w.objective, w.class_index = "class", 0
        w.run(steps=5)
        assert rises(w.history), w.history
        p = np.asarray(w.probabilities)
        assert p.shape == (N_CLASSES[name],) and np.all(p >= 0) and p.sum() == pytest.approx(1.0, abs=1e-4)
        assert w.status.startswith("done after 5 steps; the model says class")
        if name == "vit":
            assert not_a_cnn_notice("conv_proj") in w.model_note
        if name in ("softmax_net", "binary_sigmoid"):
            assert ("Softmax" if name == "softmax_net" else "Sigmoid") in w.model_note
    finally:
        w.close()
    assert_as_found(model, before)


@pytest.mark.parametrize("name", sorted(OUTPUT_SELECTORS))
def test_oip_without_output_keeps_the_channel_objectives(name):
    """A tuple, dict or named tuple without output=: the class objective is off, and the view says
    to pass output=; channel objectives work."""
    model = ZOO[name]()
    w = OIPOptimizer(model, images=example_input(name, n=1), mean=MEAN, std=STD, init="dataset")
    try:
        assert w.n_classes == 0
        assert "output=" in w.class_note and repr(OUTPUT_SELECTORS[name]) in w.class_note
        assert w.class_note in w.model_note  # shown above the view
        w.run(steps=5)
        assert rises(w.history)
        w.objective = "class"
        with pytest.raises(ValueError, match="output="):
            w.run(steps=2)
        w.status = ""
        w._dispatch_message(w, {"type": "start"}, [])  # Start pressed on the page: no traceback
        assert "output=" in w.status and not w.running
    finally:
        w.close()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", ["resnet", "mobilenet_v3", "detector"])
def test_oip_on_a_half_precision_model(name, dtype):
    model = half(ZOO[name]()) if dtype == torch.float16 else ZOO[name]().to(dtype)
    before = snapshot(model)
    w = OIPOptimizer(model, images=example_input(name, n=1), mean=MEAN, std=STD, init="dataset",
                     output=OUTPUT_SELECTORS.get(name))
    try:
        w.run(steps=5)
        assert rises(w.history)
        assert w.result.images.dtype == torch.float32
        w.objective = "class"
        w.run(steps=5)
        assert rises(w.history)
        assert len(w.probabilities) == N_CLASSES[name] and np.isfinite(w.probabilities).all()
    finally:
        w.close()
    assert_as_found(model, before)


def test_oip_on_a_compiled_model():
    model = ZOO["resnet"]()
    w = OIPOptimizer(compiled(model), input_shape=(3, 64, 64))
    try:
        assert w.layer == view_defaults(model, example_input("resnet", n=1))["optimizer"]  # the inner names
        assert "torch.compile" in w.model_note
        w.run(steps=3)
        assert len(w.history) == 3
    finally:
        w.close()


def test_oip_says_when_the_input_is_too_small():
    with pytest.raises(ValueError, match=r"rejects inputs of shape \(3, 8, 8\).*too small"):
        OIPOptimizer(ZOO["googlenet"](), input_shape=(3, 8, 8))


# ---------------------------------------------------------------- FilterGrid
@pytest.mark.parametrize("name", NAMES)
def test_filter_grid_on_every_model(name):
    model = ZOO[name]()
    before = snapshot(model)
    grid = FilterGrid(model)
    try:
        labels = {}
        for layer in conv_layers(model):
            grid.layer = layer
            m = get_layer(model, layer)
            label = grid._grid["label"]
            labels[layer] = label
            assert label.startswith(f"{layer} · {type(m).__name__} {m.in_channels}→{m.out_channels}")
            if m.groups == 1:
                assert "groups" not in label and "depthwise" not in label
            elif m.groups == m.in_channels:
                assert f"{m.in_channels}→{m.out_channels}, depthwise" in label
            else:
                assert f"{m.in_channels}→{m.out_channels}, groups {m.groups}" in label
            assert grid._grid["in_channels"] == m.in_channels // m.groups  # what one filter reads
            assert grid.n_tiles > 0 and len(grid._codes) > 0
        if name in ("mobilenet_v3", "efficientnet", "convnext"):
            assert any("depthwise" in v for v in labels.values())
    finally:
        grid.close()
    assert_as_found(model, before)


# ---------------------------------------------------------------- Explorer
@pytest.mark.parametrize("name", NAMES)
def test_explorer_on_every_model(name):
    model = users_model(name)
    before = snapshot(model)
    images = example_input(name, n=40)
    d = view_defaults(model, images[:1])
    ex = Explorer(model, images, mean=MEAN, std=STD, tsne_images=40, output=OUTPUT_SELECTORS.get(name))
    try:
        assert ex.defaults == d
        assert ex.activations.layer == d["activation"] == ex.selection.layer
        assert ex.optimizer.layer == (d["optimizer"] or d["patch_embedding"])
        if d["cam"] is not None:
            assert ex.saliency.layer == d["cam"]
        assert ex.tsne.layer == d["feature"]
        first = conv_layers(model)[0]
        if name != "vit":
            # issue #12: Grad-CAM and the optimizer are not put on the first conv layer
            assert ex.saliency.layer != first and ex.optimizer.layer != first
        if name == "googlenet":
            assert not ex.saliency.layer.startswith("aux")  # the aux head never runs in eval
        # a filter click on the first layer does not retarget the optimizer on its own layer
        opt_before = (ex.optimizer.layer, ex.optimizer.channel)
        ex.filters.set_state({"layer": first, "channel": 1})
        assert (ex.selection.layer, ex.selection.channel) == (first, 1)
        if ex.optimizer.layer != first:
            assert (ex.optimizer.layer, ex.optimizer.channel) == opt_before
        assert ex.activations.wait() and ex.saliency.wait()
    finally:
        ex.close()
    assert_as_found(model, before)


@pytest.mark.parametrize("wrap", ["float16", "compiled"])
def test_explorer_on_a_half_precision_and_a_compiled_model(wrap):
    model = ZOO["resnet"]()
    given = half(model) if wrap == "float16" else compiled(model)
    inner = given if wrap == "float16" else model
    before = snapshot(inner)
    images = example_input("resnet", n=20)
    ex = Explorer(given, images, mean=MEAN, std=STD, tsne_images=20)
    try:
        d = view_defaults(inner, images[:1].to(next(inner.parameters()).dtype))
        assert (ex.saliency.layer, ex.optimizer.layer) == (d["cam"], d["optimizer"]) == ("layer4.1", "layer3.1.conv1")
        ex.optimizer.run(steps=5)
        assert rises(ex.optimizer.history)
        assert ex.activations.wait() and ex.saliency.wait()
    finally:
        ex.close()
    assert_as_found(inner, before)
