"""ActivationExplorer and TSNEScatter on every model of the test zoo (``tests/zoo.py``).

For each architecture family (and float16 copies of a few, and a ``torch.compile``'d one) both
views are built with the zoo's natural ``output=`` selector. Known answers are computed here,
independently of cnnwidgets: layer outputs from forward hooks on a deep copy of the model in
eval mode, class probabilities from the model's own output (a final Softmax/Sigmoid module is
the model's own probability; plain logits get one softmax; a single logit its sigmoid;
segmentation scores the share of pixels whose top class is k). Every test checks that the
user's model is left exactly as it was found (weights, training flags, hooks, requires_grad),
with the model put in training mode first so that a view running it in eval mode would show.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets import ActivationExplorer, TSNEScatter
from tests.conftest import hook_count, requires_grad_flags, training_flags
from tests.zoo import OUTPUT_SELECTORS, ZOO, compiled, example_input, half

NAMES = sorted(ZOO)
HALF = ("resnet", "binary", "softmax_net", "segnet")
N_EXPLORER = 6  # images in the explorer (one top-images pass over them)
N_MAP = 40  # images in the t-SNE map
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


#: tiny convolutions: one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- independent references
def images_for(name: str, n: int) -> torch.Tensor:
    return example_input(name, n, 64 if name == "vit" else 32, seed=1)


def inner(model: nn.Module) -> nn.Module:
    """The module a torch.compile wrapper runs (the model itself otherwise)."""
    return getattr(model, "_orig_mod", model)


def reference_pass(model: nn.Module, x: torch.Tensor):
    """Run a deep copy of ``model`` in eval mode on ``x`` (in the model's dtype).

    Returns the output, the first-call output of every layer (cloned as it is produced, so
    later in-place operations do not change it) in the order the calls finished, and the
    inputs of every ``nn.Linear`` call in order.
    """
    m = copy.deepcopy(inner(model)).eval()
    dtype = next(m.parameters()).dtype
    outs: OrderedDict[str, torch.Tensor] = OrderedDict()
    linear_inputs: list[torch.Tensor] = []
    modules = dict(m.named_modules())

    def hook(name):
        def fn(mod, inp, out):
            if isinstance(out, torch.Tensor) and name not in outs:
                outs[name] = out.detach().clone()
            if isinstance(mod, nn.Linear):
                linear_inputs.append(inp[0].detach().clone())
        return fn

    for name, mod in modules.items():
        if name:
            mod.register_forward_hook(hook(name))
    with torch.no_grad():
        out = m(x.to(dtype))
    return out, outs, linear_inputs, modules


def expected_probabilities(name: str, out) -> torch.Tensor:
    """N x K probabilities from the model's own output, written out per family."""
    if name == "segnet":
        top = out["out"].float().argmax(dim=1).flatten(1)  # N x (H*W)
        k = out["out"].shape[1]
        return torch.stack([torch.bincount(row, minlength=k).float() / row.numel() for row in top])
    if name.startswith("detector"):
        return out[1].float()  # the score head ends in nn.Softmax: its own probabilities
    if name == "binary":
        p = torch.sigmoid(out.float()[:, 0])
        return torch.stack([1 - p, p], dim=1)
    if name == "binary_sigmoid":
        p = out.float()[:, 0]  # the model's own sigmoid
        return torch.stack([1 - p, p], dim=1)
    if name == "softmax_net":
        return out.float()  # the model's own softmax, applied once
    return torch.softmax(out.float(), dim=1)


def first_map_layer(outs: OrderedDict, modules: dict) -> str:
    return next(k for k, v in outs.items() if v.dim() == 4 and not isinstance(modules[k], CONTAINERS))


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "ptrs": {k: v.data_ptr() for k, v in model.state_dict().items()},
        "training": training_flags(model),
        "hooks": hook_count(model),
        "grad": requires_grad_flags(model),
        "forward": [n for n, m in model.named_modules() if "forward" in m.__dict__],
    }


def assert_left_as_found(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["training"] == before["training"]
    assert after["hooks"] == before["hooks"]
    assert after["grad"] == before["grad"]
    assert after["forward"] == before["forward"]
    assert after["ptrs"] == before["ptrs"]
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k


def build(name: str, dtype: str = "float32") -> nn.Module:
    model = ZOO[name]()
    if dtype == "float16":
        model = half(model)
    model.train()  # found in training mode: the views must run eval copies and leave it so
    return compiled(model) if dtype == "compiled" else model


# ---------------------------------------------------------------- every model
CASES = [(n, "float32") for n in NAMES] + [(n, "float16") for n in HALF] + [("resnet", "compiled")]


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_activation_explorer_on_the_zoo(name, dtype):
    model = build(name, dtype)
    before, before_inner = snapshot(model), snapshot(inner(model))
    x = images_for(name, N_EXPLORER)
    out, outs, _, modules = reference_pass(model, x)
    probs = expected_probabilities(name, out)
    tol = {"rtol": 2e-3, "atol": 2e-3} if dtype == "float16" else {"rtol": 1e-4, "atol": 1e-5}
    binary = name.startswith("binary")
    classes = ["cat"] if binary else None
    labels = probs.argmax(1).tolist()  # correct by construction, except image 1
    labels[1] = (labels[1] + 1) % probs.shape[1]
    w = ActivationExplorer(model, x, labels, classes, output=OUTPUT_SELECTORS.get(name))
    try:
        assert w.wait(60)
        # the default layer: the first non-container layer with feature maps, rendered
        assert w.layer == first_map_layer(outs, modules)
        meta = w._maps_info
        ref = outs[w.layer][0].float()
        assert (meta["layer"], meta["index"], *w._maps.shape) == (w.layer, 0, *ref.shape)
        assert w._maps.size == ref.numel() > 0
        acts = w.activations()
        assert acts.dtype == np.float32
        np.testing.assert_allclose(acts, ref.numpy(), **tol)
        # the deconvnet projection of the strongest map arrived, shaped like the image
        assert w._recon_info["layer"] == w.layer and w._recon.shape[:2] == tuple(x.shape[2:])
        proj = w.reconstruct()
        assert proj.shape == tuple(x.shape[1:]) and proj.dtype == np.float32 and np.isfinite(proj).all()
        # prediction and probability: one softmax, sigmoid of a single logit, pixel shares
        for i in (0, 1, N_EXPLORER - 1):
            c, p = w.predict(i)
            assert p == pytest.approx(float(probs[i].max()), **{"rel": tol["rtol"], "abs": tol["atol"]})
            assert probs[i, c] == pytest.approx(float(probs[i].max()), abs=tol["atol"])
        w.index = 1
        m = w._image_info
        c1, p1 = w.predict(1)
        assert m["probability"] == pytest.approx(p1) and m["correct"] is False
        if binary:
            assert m["predicted"] == ["not cat", "cat"][c1]
            assert "one logit" in w.model_note
        else:
            assert m["predicted"] == c1
        if name in ("softmax_net", "binary_sigmoid", "detector", "detector_namedtuple"):
            assert "applied once" in w.model_note  # the detector's scores end in nn.Softmax (as ONet's)
        if name == "segnet":
            assert "share of pixels" in w.model_note
        if name == "vit":
            assert "vision transformer" in w.model_note and w.layers == ["conv_proj"]
        if dtype == "compiled":
            assert "torch.compile" in w.model_note
        elif name not in ("softmax_net", "binary", "binary_sigmoid", "segnet", "vit", "detector", "detector_namedtuple"):
            assert w.model_note == ""  # plain logits (or a selected score tensor): nothing to say
        # top images of channel 0 over the set: the largest maxima of that map
        if dtype != "float16":  # see test_top_images_of_a_float16_model
            k = 3
            top = w.top_images(channel=0, k=k)
            scores = outs[w.layer][:, 0].flatten(1).amax(1).float().numpy()
            np.testing.assert_allclose(np.sort(scores[top])[::-1], np.sort(scores)[::-1][:k], rtol=1e-5, atol=1e-6)
        assert w.last_error is None
    finally:
        w.close()
    assert_left_as_found(model, before)
    assert_left_as_found(inner(model), before_inner)  # the module a torch.compile wrapper runs


@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_tsne_scatter_on_the_zoo(name, dtype):
    model = build(name, dtype)
    before = snapshot(model)
    x = images_for(name, N_MAP)
    out, outs, linear_inputs, modules = reference_pass(model, x)
    probs = expected_probabilities(name, out)
    ts = TSNEScatter(model, x, method="tsne", perplexity=5, n_iter=60, output=OUTPUT_SELECTORS.get(name))
    try:
        assert ts.wait(60)
        assert not ts.status.startswith("error"), ts.status
        assert ts.status.startswith(f"t-SNE of {ts.features.shape[1]}-d features of {ts.layer}")
        assert ts.iteration == 60 and ts.n_iter == 60
        # the default layer: never a container, never an un-pooled feature map
        assert not isinstance(modules[ts.layer], CONTAINERS)
        ref = outs[ts.layer].float()
        if ref.dim() == 4 and ref.shape[2] * ref.shape[3] > 1:
            assert ts._pool == "avg"
        pooled = ref.flatten(2).mean(2) if ts._pool == "avg" and ref.dim() >= 3 else ref.reshape(len(x), -1)
        feats = ts.features
        assert feats.shape == (N_MAP, pooled.shape[1]) and feats.dtype == np.float32
        tol = {"rtol": 2e-3, "atol": 2e-3} if dtype == "float16" else {"rtol": 1e-4, "atol": 1e-5}
        np.testing.assert_allclose(feats, pooled.numpy(), **tol)
        # for a classifier whose input is a module's output: the penultimate feature vector
        if linear_inputs and name not in ("densenet", "vit"):
            # densenet's classifier takes relu(norm5) pooled by functional calls, the feature
            # layer is norm5 (its output before that in-place ReLU); vit's takes the class token
            np.testing.assert_allclose(feats, linear_inputs[-1].float().reshape(N_MAP, -1).numpy(), **tol)
        emb = ts.embedding
        assert emb.shape == (N_MAP, 2) and np.isfinite(emb).all()
        # predictions: the top class of the independent probabilities, for every image
        want = probs.argmax(1).numpy()
        got = ts.predicted
        if dtype == "float16":  # near-ties may flip in half precision: only where the top two differ
            top2 = torch.topk(probs, 2, dim=1).values
            sure = (top2[:, 0] - top2[:, 1] > 1e-2).numpy()
            np.testing.assert_array_equal(got[sure], want[sure])
        else:
            np.testing.assert_array_equal(got, want)
        assert ts._predicted.dtype == np.int16
        np.testing.assert_array_equal(ts._predicted, got)
        assert ts.last_error is None
    finally:
        ts.close()
    assert_left_as_found(model, before)


# ---------------------------------------------------------------- structured output, no output=
@pytest.mark.parametrize("name", ["detector", "detector_namedtuple", "segnet"])
def test_a_structured_output_without_output_shows_maps_and_says_to_pass_output(name):
    model = build(name)
    before = snapshot(model)
    x = images_for(name, N_EXPLORER)
    _, outs, _, modules = reference_pass(model, x)
    w = ActivationExplorer(model, x)
    try:
        assert w.wait(60)
        # the layer views work
        assert w.layer == first_map_layer(outs, modules)
        np.testing.assert_allclose(w.activations(0), outs[w.layer][0].numpy(), rtol=1e-4, atol=1e-5)
        assert w._maps_info["layer"] == w.layer and w._maps.size > 0
        assert w._recon_info["layer"] == w.layer and w._recon.size > 0
        w.layer = w.layers[-1]
        w.channel = 0
        w.wait()
        np.testing.assert_allclose(w.activations(2), outs[w.layers[-1]][2].numpy(), rtol=1e-4, atol=1e-5)
        w.request_top_images()
        assert w.wait(60)
        assert len(w._top_info["indices"]) == N_EXPLORER
        # the prediction parts say what to pass, instead of a class read from the boxes
        assert "No predicted class" in w.model_note and "say which tensor holds the class scores" in w.model_note
        assert f"output={OUTPUT_SELECTORS[name]!r}" in w.model_note  # the scores, never the boxes
        assert w._image_info["predicted"] is None and w._image_info["probability"] is None
        with pytest.raises(ValueError, match=r"output=") as info:
            w.predict(0)
        assert not isinstance(info.value, (KeyError, AttributeError))
        assert w.last_error is None
    finally:
        w.close()
    ts = TSNEScatter(model, x[:5].repeat(2, 1, 1, 1), method="pca")
    try:
        assert ts.wait(60)
        assert ts.features.shape[0] == 10 and np.isfinite(ts.embedding).all()
        assert "no predicted classes" in ts.status and "output=" in ts.model_note, ts.status
        assert ts._predicted is None
        with pytest.raises(ValueError, match=r"output="):
            ts.predicted
        assert ts.last_error is None
    finally:
        ts.close()
    assert_left_as_found(model, before)


def test_status_of_the_explorer_names_the_output_to_pass():
    model = build("detector")
    w = ActivationExplorer(model, images_for("detector", 3))
    try:
        assert "output=1" in w.status  # the example selector: the scores, not the boxes
        assert "tuple of 2" in w.status
    finally:
        w.close()


def test_labels_are_checked_against_the_heads_classes():
    """A single logit reads as two classes; segmentation scores as their K channels."""
    x = images_for("binary", 5)
    with pytest.raises(ValueError, match="2"):
        ActivationExplorer(build("binary"), x, classes=[])  # no name for a 2-class head
    w = ActivationExplorer(build("binary"), x, classes=["a", "b"])
    w.close()
    with pytest.raises(ValueError, match="4"):
        TSNEScatter(build("segnet"), x, classes=["a", "b"], output="out", method="pca")


def test_top_images_of_a_float16_model():
    model = build("resnet", "float16")
    w = ActivationExplorer(model, images_for("resnet", N_EXPLORER))
    try:
        w.channel = 0
        w.request_top_images()
        assert w.wait(60)
        assert len(w._top_info.get("indices", [])) == N_EXPLORER, (w.status, w.view_error)
    finally:
        w.close()


# ---------------------------------------------------------------- errors that name the cause
def test_too_small_images_and_wrong_channels_get_the_clear_message():
    tiny = torch.zeros(6, 3, 2, 2)  # softmax_net halves twice with max pools: 2 x 2 is too small
    for make in (lambda: ActivationExplorer(build("softmax_net"), tiny),
                 lambda: TSNEScatter(build("softmax_net"), tiny, method="pca")):
        with pytest.raises(ValueError, match=r"too small for this network") as info:
            make()
        assert isinstance(info.value.__cause__, RuntimeError)
    gray = images_for("resnet", 6)[:, :1]
    model = build("resnet")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"have 1 channel\(s\)") as info:
        ActivationExplorer(model, gray)
    assert "'conv1' expects 3 channel(s)" in str(info.value)
    with pytest.raises(ValueError, match=r"have 1 channel\(s\)"):
        TSNEScatter(model, gray, method="pca")
    assert_left_as_found(model, before)  # also after the errors: no hook left behind
