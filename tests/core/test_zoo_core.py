"""Every attribution method on every model of the zoo (tests/zoo.py), against known answers
and against Captum: structured outputs, single logits, final softmax/sigmoid, functional
ReLUs and other activations, float16 and torch.compile."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.core.layers import cam_layer, view_defaults
from cnnwidgets.core.model import get_layer
from cnnwidgets.core.saliency import METHODS, REGISTRY, attribute, explain, integrated_gradients
from tests.conftest import hook_count, requires_grad_flags, training_flags
from tests.zoo import CLASSIFIERS, LRP_REFUSED, OUTPUT_SELECTORS, RELU_FAMILY, ZOO, compiled, example_input, half

#: Grad-CAM and its family: they read a layer's feature maps for a class score.
CAMS = [m for m, spec in REGISTRY.items() if spec.takes_layer and spec.targeted]

captum = pytest.importorskip("captum")
from captum.attr import GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency  # noqa: E402


#: tiny convolutions: one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def _model(name: str) -> nn.Module:
    return ZOO[name]()


def snapshot(model: nn.Module) -> tuple:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, training_flags(model), requires_grad_flags(model), hook_count(model)


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    state, flags, grads, hooks = before
    now = model.state_dict()
    assert set(now) == set(state)
    for k, v in state.items():
        assert torch.equal(now[k], v), k
    assert training_flags(model) == flags and requires_grad_flags(model) == grads and hook_count(model) == hooks


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().flatten(), b.detach().double().flatten()
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


class _Logits(nn.Module):
    """What our methods differentiate, as a module for Captum: the selected output, with a final
    softmax/sigmoid passed through (Captum hooks the modules inside)."""

    def __init__(self, model: nn.Module, output=None) -> None:
        super().__init__()
        self.inner = model
        self.output = output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from cnnwidgets.core.outputs import select_output
        from cnnwidgets.core.runner import logits_only

        with logits_only(self.inner):
            return select_output(self.inner(x), self.output)


# ---------------------------------------------------------------- every method, every model
@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_method_runs_on_every_zoo_model_and_leaves_it_as_found(name):
    model = _model(name)
    x = example_input(name, n=2, size=64)
    output = OUTPUT_SELECTORS.get(name)
    before = snapshot(model)
    defaults = view_defaults(model, x)
    for method in METHODS:
        if name == "vit" and method in CAMS:
            with pytest.raises(ValueError, match="patch embedding"):
                attribute(model, x, method, output=output)
            continue
        if method == "lrp" and name in LRP_REFUSED:  # not a ReLU CNN: refused, naming the layers
            with pytest.raises(ValueError, match=re.escape(LRP_REFUSED[name])):
                attribute(model, x, method, output=output)
            continue
        layer = defaults["activation"] if method == "layer_gradient" else None
        e = explain(model, x, method, output=output, layer=layer, steps=8, samples=4, seed=0)
        a = e.attribution
        assert torch.isfinite(a).all(), method
        expected = (2, 64, 64) if not REGISTRY[method].input_shaped else (2, 3, 64, 64)
        assert tuple(a.shape) == expected and a.dtype == torch.float32, method
        if REGISTRY[method].input_shaped or name in RELU_FAMILY:
            # (a class activation map ends in a ReLU: with PReLU, Hardswish, GELU ... feature maps it
            # may be all zero, e.g. Grad-CAM++ on the detector's PReLU features)
            assert a.abs().sum() > 0, method
    assert_unchanged(model, before)


def test_a_structured_output_without_output_says_how_to_pick_one():
    x = example_input("detector", n=2, size=64)
    with pytest.raises(ValueError, match=r"a tuple of 2: \[0\] tensor 2 x 4, \[1\] tensor 2 x 3.*output=1"):
        attribute(_model("detector"), x, "vanilla")
    with pytest.raises(ValueError, match=r"'out': tensor 2 x 4 x 64 x 64.*output='out'"):
        attribute(_model("segnet"), x, "gradcam")
    with pytest.raises(ValueError, match=r"Detection\(boxes: tensor 2 x 4, scores: tensor 2 x 3\).*output='scores'"):
        attribute(_model("detector_namedtuple"), x, "integrated_gradients")
    # a layer-only method needs no output
    assert attribute(_model("detector"), x, "layer_gradient", layer=view_defaults(_model("detector"), x)["activation"]).shape == x.shape


@pytest.mark.parametrize("name", ["resnet", "convnext", "efficientnet", "binary", "segnet"])
def test_float16_models_work_and_agree_with_float32(name):
    model = _model(name)
    x = example_input(name, n=2, size=64)
    h = half(model)
    output = OUTPUT_SELECTORS.get(name)
    target = 1  # the same class for both precisions (a predicted one may flip)
    for method in ("vanilla", "integrated_gradients", "gradcam"):
        full = attribute(model, x, method, target, output=output, steps=16)
        low = attribute(h, x, method, target, output=output, steps=16)  # x is cast to float16 for the model
        assert low.dtype == torch.float32 and torch.isfinite(low).all()
        assert pearson(full, low) > 0.95, method


def test_torch_compile_is_unwrapped_and_gives_the_eager_result():
    model = _model("resnet")
    x = example_input("resnet", n=2, size=64)
    c = compiled(model)
    for method in ("vanilla", "guided_backprop", "gradcam"):
        torch.testing.assert_close(attribute(c, x, method, 3), attribute(model, x, method, 3), rtol=1e-5, atol=1e-6)
    # layer names of the wrapper are accepted with or without the prefix
    a = attribute(c, x, "gradcam", 3, layer="_orig_mod.layer4.1")
    torch.testing.assert_close(a, attribute(model, x, "gradcam", 3, layer="layer4.1"), rtol=1e-5, atol=1e-6)
    assert view_defaults(c, x)["cam"] == "layer4.1"


def test_data_parallel_is_unwrapped():
    model = _model("resnet")
    x = example_input("resnet", n=2, size=64)
    torch.testing.assert_close(attribute(nn.DataParallel(model), x, "vanilla", 2), attribute(model, x, "vanilla", 2))


# ---------------------------------------------------------------- completeness
#: Nets whose activations are smooth (GELU, SiLU) or that are linear in the input along the
#: path: the quadrature error at 64 steps is far below 1 % of the score difference.
SMOOTH = ["convnext", "efficientnet", "vit", "binary", "binary_sigmoid", "segnet", "softmax_net"]
#: Piecewise-linear nets (ReLU, PReLU, max pooling): along the path the gradient jumps at every
#: kink, so a 64-point rule leaves an error of a few percent of the score difference on these
#: random-weight nets (measured: 1-6 %, 47 % for a GoogLeNet image whose score difference is
#: 0.09), a tiny fraction of the map's total absolute attribution.
PIECEWISE_LINEAR = ["resnet", "densenet", "googlenet", "mobilenet_v3", "detector", "detector_namedtuple"]


def _ig_and_score_difference(name: str):
    model = _model(name)
    x = example_input(name, n=3, size=64, seed=1)
    output = OUTPUT_SELECTORS.get(name)
    e = explain(model, x, "integrated_gradients", output=output, steps=64)
    from cnnwidgets.core.runner import Scores, logits_only, using_model

    with using_model(model) as run, logits_only(run), torch.no_grad():
        scores = Scores(run, output)
        s_x = scores(run(x))
        s_0 = scores(run(torch.zeros_like(x)))
    t = s_x.argmax(dim=1)  # explain's default target: the predicted class
    diff = (s_x - s_0).gather(1, t.view(-1, 1))[:, 0]
    # the reported delta is the completeness error, computed independently here
    torch.testing.assert_close(e.delta, e.attribution.sum(dim=(1, 2, 3)) - diff, rtol=1e-4, atol=1e-4)
    return e, diff


@pytest.mark.parametrize("name", SMOOTH)
def test_integrated_gradients_completeness_within_one_percent_at_64_steps(name):
    """Sum of attributions = S(x) - S(0) within 1 % of the score difference: ConvNeXt's
    LayerNorm included (the rule never evaluates the gradient at the black baseline)."""
    e, diff = _ig_and_score_difference(name)
    rel = (e.delta.abs() / diff.abs()).max().item()
    assert rel < 0.01, f"{name}: delta {e.delta.tolist()} for score differences {diff.tolist()}"


@pytest.mark.parametrize("name", PIECEWISE_LINEAR)
def test_integrated_gradients_delta_is_small_beside_the_attribution_on_relu_nets(name):
    e, diff = _ig_and_score_difference(name)
    mass = e.attribution.abs().sum(dim=(1, 2, 3))
    assert (e.delta.abs() < 0.01 * mass).all(), f"{name}: delta {e.delta.tolist()}, mass {mass.tolist()}"
    assert any("convergence delta" in n for n in e.notes)  # and the user is told its size


# ---------------------------------------------------------------- activation rules
@pytest.mark.parametrize("name", RELU_FAMILY)
def test_guided_backprop_differs_from_the_gradient_on_every_relu_family_net(name):
    model = _model(name)
    x = example_input(name, n=2, size=64)
    output = OUTPUT_SELECTORS.get(name)
    plain = attribute(model, x, "vanilla", 1, output=output)
    e = explain(model, x, "guided_backprop", 1, output=output)
    assert e.rule.applied["ReLU"] > 0
    assert pearson(plain, e.attribution) < 0.99, "guided backprop is the plain gradient"
    d = explain(model, x, "deconvnet", 1, output=output)
    assert pearson(plain, d.attribution) < 0.99 and d.rule.total == e.rule.total


def test_rule_counts_see_functional_relus_and_other_activations():
    x = example_input("resnet", n=1, size=64)
    counts = {name: explain(_model(name), x, "guided_backprop", 0).rule for name in
              ("resnet", "densenet", "googlenet", "efficientnet", "convnext", "mobilenet_v3")}
    # ResNet: one nn.ReLU module called twice per block, and once in the stem: 2 * 8 + 1 calls
    assert dict(counts["resnet"].applied) == {"ReLU": 17}
    assert counts["densenet"].applied["ReLU"] > 0 and counts["googlenet"].applied["ReLU"] > 0  # F.relu
    assert set(counts["efficientnet"].applied) == {"SiLU"} and counts["efficientnet"].gates["Sigmoid"] > 0
    assert set(counts["convnext"].applied) == {"GELU"}
    assert set(counts["mobilenet_v3"].applied) == {"ReLU", "Hardswish"}
    assert counts["mobilenet_v3"].gates["Hardsigmoid"] > 0


# ---------------------------------------------------------------- defaults
def test_default_layers_per_view_on_the_zoo():
    x = example_input("resnet", n=1, size=64)
    d = view_defaults(_model("resnet"), x)
    assert d["cam"] == "layer4.1" and d["feature"] == "avgpool" and d["activation"] == "conv1"
    assert d["optimizer"].startswith(("layer3", "layer4"))  # mid-to-deep, not conv1
    g = view_defaults(_model("googlenet"), x)
    assert not g["cam"].startswith("aux1") and not g["optimizer"].startswith("aux1")
    assert cam_layer(_model("googlenet"), x) == g["cam"]
    v = view_defaults(_model("vit"), x)
    assert v["patch_embedding"] == "conv_proj" and v["cam"] is None


# ---------------------------------------------------------------- against Captum
def _captum_inputs(name: str):
    model = _model(name)
    x = example_input(name, n=2, size=64, seed=2)
    # our class t is Captum's output column t; for a single logit, our class 1 is the logit itself
    ours_t, captum_t = (1, 0) if name in ("binary", "binary_sigmoid") else (3, 3)
    return model, x, ours_t, captum_t, _Logits(model, OUTPUT_SELECTORS.get(name))


CAPTUM_NETS = [*CLASSIFIERS, "binary", "binary_sigmoid"]


@pytest.mark.parametrize("name", CAPTUM_NETS)
def test_plain_gradient_and_integrated_gradients_agree_with_captum(name):
    model, x, t, ct, fn = _captum_inputs(name)
    ours = attribute(model, x, "vanilla", t)
    theirs = Saliency(fn).attribute(x.clone().requires_grad_(True), target=ct, abs=False)
    assert pearson(ours, theirs) >= 0.99
    ours = attribute(model, x, "integrated_gradients", t, steps=50)
    theirs = IntegratedGradients(fn).attribute(x, baselines=torch.zeros_like(x), target=ct, n_steps=50,
                                               method="gausslegendre", internal_batch_size=100)
    assert pearson(ours, theirs) >= 0.99


#: Nets whose every rectifier is an nn.ReLU module: the only ones where Captum's GuidedBackprop
#: (which overrides nn.ReLU modules) applies the rule everywhere.
RELU_MODULE_NETS = ["resnet", "softmax_net", "binary", "binary_sigmoid"]


@pytest.mark.parametrize("name", RELU_MODULE_NETS)
def test_guided_backprop_agrees_with_captum_on_relu_module_nets(name):
    model, x, t, ct, fn = _captum_inputs(name)
    ours = attribute(model, x, "guided_backprop", t)
    theirs = GuidedBackprop(fn).attribute(x.clone(), target=ct)
    assert pearson(ours, theirs) >= 0.99


@pytest.mark.parametrize("name", ["densenet", "googlenet"])
def test_functional_relus_get_the_rule_where_captum_gives_the_plain_gradient(name):
    """DenseNet and GoogLeNet call F.relu: Captum's GuidedBackprop leaves them alone, so its map is
    the plain gradient; ours applies the rule (and differs)."""
    model, x, t, ct, fn = _captum_inputs(name)
    captum_gbp = GuidedBackprop(fn).attribute(x.clone(), target=ct)
    plain = attribute(model, x, "vanilla", t)
    ours = attribute(model, x, "guided_backprop", t)
    if name == "googlenet":  # no nn.ReLU module at all: Captum's map is the plain gradient
        assert pearson(captum_gbp, plain) > 0.999
    assert pearson(ours, plain) < 0.99


@pytest.mark.parametrize("name", [*CLASSIFIERS, "binary"])
def test_gradcam_agrees_with_captum(name):
    model, x, t, ct, fn = _captum_inputs(name)
    layer = cam_layer(model, x)
    ours = attribute(model, x, "gradcam", t)
    module = get_layer(model, layer)
    low = LayerGradCam(fn, module).attribute(x.clone(), target=ct, relu_attributions=True)
    theirs = LayerAttribution.interpolate(low, tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    assert pearson(ours, theirs) >= 0.99
