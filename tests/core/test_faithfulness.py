"""Faithfulness evidence (cnnwidgets.core.faithfulness): deletion/insertion curves and the
cascading model-parameter randomization check, against hand-computed answers and against
Quantus 0.6.0 (PixelFlipping, MPRT, correlation_spearman) where the definitions are shared."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

import cnnwidgets.core.faithfulness as faithfulness
from cnnwidgets.core.faithfulness import deletion_insertion, randomization_check, spearman_correlation
from cnnwidgets.core.imageops import gaussian_blur
from cnnwidgets.core.passes import Stopped
from cnnwidgets.core.saliency import attribute
from cnnwidgets.core.saliency.integrated_gradients import BLUR_SIGMA_FRACTION
from tests.conftest import hook_count, make_tiny_resnet, requires_grad_flags, training_flags, view_pre_hook
from tests.zoo import ZOO, example_input

#: tiny convolutions: one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


def _import_quantus():
    """Quantus 0.6.0 imports zennit when it is installed, and zennit needs torchvision, which
    this environment lacks: hide zennit while quantus is imported (it is only used for
    Quantus's own explanation functions, which these tests do not call)."""
    try:
        import quantus
    except ModuleNotFoundError as exc:
        if "torchvision" not in str(exc):
            pytest.skip(f"quantus cannot be imported: {exc}")
        for k in [k for k in sys.modules if k == "quantus" or k.startswith(("quantus.", "zennit"))]:
            del sys.modules[k]
        saved = sys.modules.get("zennit")
        sys.modules["zennit"] = None  # importlib.util.find_spec("zennit") is None now
        try:
            import quantus
        finally:
            del sys.modules["zennit"]
            if saved is not None:
                sys.modules["zennit"] = saved
    return quantus


@pytest.fixture(scope="module")
def quantus():
    pytest.importorskip("scipy")
    return _import_quantus()


def two_class_linear(w: torch.Tensor) -> nn.Sequential:
    """Logits (0, w . x): class 1's probability is sigmoid(w . x)."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(w.numel(), 2, bias=False)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.stack([torch.zeros(w.numel(), dtype=torch.float64), w.flatten().double()]))
    return net


def small_cnn(seed: int = 0, c: int = 3, side: int = 12) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(c, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(8 * (side // 2) ** 2, 5)).eval()


def snapshot(model: nn.Module) -> tuple:
    state = {k: (v.detach().clone(), v.data_ptr()) for k, v in model.state_dict(keep_vars=True).items()}
    return state, training_flags(model), requires_grad_flags(model), hook_count(model)


def assert_unchanged(model: nn.Module, before: tuple) -> None:
    state, flags, grads, hooks = before
    now = model.state_dict(keep_vars=True)
    assert set(now) == set(state)
    for k, (v, ptr) in state.items():
        assert torch.equal(now[k].detach(), v) and now[k].data_ptr() == ptr, k
    assert training_flags(model) == flags and requires_grad_flags(model) == grads and hook_count(model) == hooks


# ---------------------------------------------------------------- deletion and insertion: known answers
def test_the_curves_of_a_linear_model_by_hand():
    # logits (0, z): p = sigmoid(z). Contributions 3, 2, 1, 0, -1 ... of one channel; baseline 0:
    # deleting the top k leaves z = total - (sum of the k largest), inserting them gives their sum
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 4, 5, dtype=torch.float64, generator=g) + 0.5
    w = torch.randn(4, 5, dtype=torch.float64, generator=g)
    contribution = (w * x[0, 0]).flatten()
    f = deletion_insertion(two_class_linear(w), x, contribution.view(4, 5), target=1, steps=10, baseline="zeros")
    ordered = torch.sort(contribution, descending=True).values
    kept = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(ordered, 0)])[::2]  # 2 pixels per step
    np.testing.assert_allclose(f.fractions, np.arange(11) / 10, rtol=0, atol=0)
    np.testing.assert_allclose(f.deletion, torch.sigmoid(contribution.sum() - kept).numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(f.insertion, torch.sigmoid(kept).numpy(), rtol=1e-6, atol=1e-7)
    # trapezoid areas over [0, 1]
    assert f.deletion_auc == pytest.approx(np.sum((f.deletion[1:] + f.deletion[:-1]) / 2) / 10, rel=1e-12)
    assert f.insertion_auc == pytest.approx(np.sum((f.insertion[1:] + f.insertion[:-1]) / 2) / 10, rel=1e-12)
    assert f.target == 1 and f.baseline == "zeros"


def test_channels_are_summed_ties_keep_raster_order_and_the_ends_are_shared():
    # 2 x 2 image, 2 channels; the channel sums are 1, 5, 1, 5: order 1, 3 (ties in raster order), then 0, 2
    w = torch.tensor([1.0, 10.0, 100.0, 1000.0], dtype=torch.float64)
    net = two_class_linear(torch.cat([w, w]))
    x = torch.full((1, 2, 2, 2), 1e-3, dtype=torch.float64)
    a = torch.tensor([[[0.5, 2.0], [0.5, 2.0]], [[0.5, 3.0], [0.5, 3.0]]])
    f = deletion_insertion(net, x, a, target=1, steps=4, baseline=0.0)
    z = 2e-3 * np.array([1111.0, 1101.0, 101.0, 100.0, 0.0])  # remove pixels 1, 3, 0, 2 one by one
    np.testing.assert_allclose(f.deletion, 1 / (1 + np.exp(-z)), rtol=1e-6)
    assert f.insertion[0] == f.deletion[-1] and f.insertion[-1] == f.deletion[0]
    # the same map as H x W, as 1 x C x H x W and as numpy gives the same curves
    for same in (a.sum(0), a[None], a.numpy()):
        np.testing.assert_array_equal(deletion_insertion(net, x, same, target=1, steps=4, baseline=0.0).deletion,
                                      f.deletion)


def test_the_true_contribution_beats_random_and_reversed_maps():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, generator=g)
    w = torch.randn(3, 8, 8, dtype=torch.float64, generator=g)
    net = two_class_linear(w)
    true = w * x[0]
    best = deletion_insertion(net, x, true, target=1, steps=32, baseline="zeros")
    for other in (-true, torch.randn(8, 8, generator=g), torch.rand(3, 8, 8, generator=g)):
        f = deletion_insertion(net, x, other, target=1, steps=32, baseline="zeros")
        # for a linear score removing the k largest contributions leaves the least: the deletion
        # curve of the true map is lowest at every point, its insertion curve highest
        assert np.all(best.deletion <= f.deletion + 1e-7) and np.all(best.insertion >= f.insertion - 1e-7)
        assert best.deletion_auc < f.deletion_auc - 0.01 and best.insertion_auc > f.insertion_auc + 0.01


def test_baselines_and_the_predicted_class():
    model, x = ZOO["resnet"](), example_input("resnet", n=1, size=32, seed=4)
    a = attribute(model, x, "grad_x_input")
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
        blurred = gaussian_blur(x, BLUR_SIGMA_FRACTION * 32)
        p_blur = torch.softmax(model(blurred), dim=1)[0]
        p_mean = torch.softmax(model(x.mean(dim=(2, 3), keepdim=True).expand_as(x)), dim=1)[0]
    top = int(probs.argmax())
    f = deletion_insertion(model, x, a, steps=8, baseline="blur")  # default class: the predicted one
    assert f.target == top and f.baseline == "blur"
    assert deletion_insertion(model, x, a, steps=8).baseline == "zeros"  # the default baseline
    assert f.deletion[0] == pytest.approx(float(probs[top]), abs=1e-6)
    assert f.deletion[-1] == pytest.approx(float(p_blur[top]), abs=1e-6)
    torch.testing.assert_close(torch.as_tensor(f.deletion),
                               torch.as_tensor(deletion_insertion(model, x, a, steps=8, baseline=blurred).deletion))
    assert deletion_insertion(model, x, a, 2, steps=8, baseline="mean").deletion[-1] == pytest.approx(
        float(p_mean[2]), abs=1e-6)
    assert deletion_insertion(model, x, a, 2, steps=8, baseline=0.25).baseline == "0.25"


def test_a_final_softmax_is_applied_once_and_a_single_logit_reads_as_a_sigmoid():
    model, x = ZOO["softmax_net"](), example_input("softmax_net", n=1, size=32)
    with torch.no_grad():
        p = model(x)[0]
    with pytest.warns(UserWarning, match="Softmax"):
        f = deletion_insertion(model, x, torch.rand(32, 32), target=4, steps=4)
    assert f.deletion[0] == pytest.approx(float(p[4]), abs=1e-6)
    binary, xb = ZOO["binary"](), example_input("binary", n=1, size=32)
    with torch.no_grad():
        z = float(binary(xb).flatten()[0])
    f0 = deletion_insertion(binary, xb, torch.rand(32, 32), target=0, steps=4)
    f1 = deletion_insertion(binary, xb, torch.rand(32, 32), target=1, steps=4)
    assert f1.insertion[-1] == pytest.approx(1 / (1 + np.exp(-z)), abs=1e-6)
    assert f0.insertion[-1] == pytest.approx(1 - f1.insertion[-1], abs=1e-6)


# ---------------------------------------------------------------- deletion and insertion: batching, progress, stop
def test_batches_progress_and_stop():
    net, x = small_cnn(), torch.rand(1, 3, 12, 12)
    a = torch.rand(12, 12)
    calls: list[tuple[int, int]] = []
    f = deletion_insertion(net, x, a, target=0, steps=12, batch_size=10, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(10, 24), (20, 24), (24, 24)]  # 2 * steps images: the curves share their ends
    np.testing.assert_allclose(deletion_insertion(net, x, a, target=0, steps=12).deletion, f.deletion, rtol=1e-6,
                               atol=1e-7)
    ev = threading.Event()
    ev.set()
    with pytest.raises(Stopped) as info:
        deletion_insertion(net, x, a, target=0, steps=12, stop=ev)
    assert (info.value.done, info.value.total) == (0, 24)
    seen: list[int] = []
    with pytest.raises(Stopped) as info:
        deletion_insertion(net, x, a, target=0, steps=12, batch_size=10, progress=lambda d, t: seen.append(d),
                           stop=lambda: len(seen) >= 1)
    assert info.value.done == 10 and seen == [10]


def test_one_forward_per_batch_without_gradients_and_the_model_left_as_found():
    net = make_tiny_resnet().train()
    before = snapshot(net)
    seen: list[tuple[int, bool]] = []
    hook = nn.modules.module.register_module_forward_pre_hook(
        lambda m, inp: seen.append((inp[0].shape[0], torch.is_grad_enabled())) if type(m) is type(net) else None)
    try:
        deletion_insertion(net, torch.randn(1, 3, 8, 8), torch.rand(8, 8), target=3, steps=16, batch_size=12)
    finally:
        hook.remove()
    assert [b for b, _ in seen] == [12, 12, 8] and not any(g for _, g in seen)
    assert_unchanged(net, before)


def test_224_pixels_at_100_steps_go_through_the_model_in_a_few_batches():
    """2 * steps images at 224 x 224 in batches of about FORWARD_BATCH_VALUES input values (10
    images): 20 forward passes, not one per step or per pixel (the cost is measured in tests/bench)."""
    from cnnwidgets.core.saliency._common import FORWARD_BATCH_VALUES

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                        nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
    x, a = torch.rand(1, 3, 224, 224), torch.rand(3, 224, 224)
    seen = []
    hook = view_pre_hook(net[0], lambda m, args: seen.append(args[0].shape[0]))
    try:
        f = deletion_insertion(net, x, a, 0, steps=100)
    finally:
        hook.remove()
    per_batch = FORWARD_BATCH_VALUES // (3 * 224 * 224)
    assert per_batch == 10
    assert f.deletion.shape == (101,)
    assert sum(seen) <= 2 * 100 + 1 and max(seen) <= per_batch
    assert len(seen) <= -(-(2 * 100 + 1) // per_batch) + 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(x=torch.rand(2, 3, 8, 8)), "takes one image"),
    (dict(attribution=torch.rand(8, 7)), "H x W = 8 x 8"),
    (dict(attribution=torch.rand(2, 3, 8, 8)), "for one image"),
    (dict(attribution=torch.full((8, 8), float("nan"))), "NaN"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(steps=65), "at most the number of pixels"),
    (dict(baseline="black"), "baseline must be one of 'blur', 'zeros', 'mean'"),
    (dict(baseline=torch.zeros(2, 2, 2)), "does not broadcast"),
    (dict(target=9), r"target must be in 0\.\.4"),
])
def test_deletion_errors(kwargs, message):
    args = dict(model=small_cnn(side=8), x=torch.rand(1, 3, 8, 8), attribution=torch.rand(8, 8), target=0, steps=16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        deletion_insertion(**args)


# ---------------------------------------------------------------- deletion against Quantus
def test_deletion_curve_equals_quantus_pixel_flipping(quantus):
    """Quantus's PixelFlipping removes ``features_in_step`` values (channel values, not pixels)
    at a time, in the order of ``argsort(-a)`` of the map broadcast to all channels, replaces
    them by the baseline cumulatively and records the softmax probability of the target after
    each step (no point at 0 removed, no insertion curve). With a map of distinct values per
    pixel and ``features_in_step = C * pixels per step`` it removes the same pixels as our
    deletion: its curve is our ``deletion[1:]``. A float baseline is shared exactly; Quantus's
    "mean"/"black" baselines are recomputed from the partly perturbed image at every step, which
    ours ("mean": the original image's channel means) are not. (Quantus also asserts that H * W,
    not C * H * W, is a multiple of features_in_step: hence steps that are multiples of 3.)"""
    net = small_cnn(seed=1)
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    a = torch.randn(12, 12, generator=torch.Generator().manual_seed(2))  # distinct values: no ties
    for target, steps, baseline in ((2, 48, 0.3), (4, 24, -1.0)):
        ours = deletion_insertion(net, x, a, target=target, steps=steps, baseline=baseline)
        metric = quantus.PixelFlipping(features_in_step=3 * 144 // steps, perturb_baseline=baseline, normalise=False,
                                       abs=False, disable_warnings=True)
        theirs = metric(model=net, x_batch=x.numpy(), y_batch=np.array([target]), a_batch=a.numpy()[None, None],
                        softmax=True, device="cpu", channel_first=True)
        theirs = np.asarray(theirs[0])
        assert theirs.shape == (steps,)
        # float32 probabilities; the batches of the forward passes differ (measured: <= 1.5e-8)
        np.testing.assert_allclose(ours.deletion[1:], theirs, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Spearman
def test_spearman_matches_scipy_and_quantus_with_ties(quantus):
    import scipy.stats

    g = np.random.default_rng(0)
    for size, high in ((50, 5), (200, 1000), (64, 2)):
        a, b = g.integers(0, high, size).astype(float), g.integers(0, high, size).astype(float)
        expected = scipy.stats.spearmanr(a, b)[0]
        assert spearman_correlation(a, b) == pytest.approx(expected, abs=1e-12)
        q = quantus.similarity_func.correlation_spearman(a[None], b[None], batched=True)[0]
        assert spearman_correlation(torch.as_tensor(a), torch.as_tensor(b)) == pytest.approx(q, abs=1e-12)
    m = g.random((7, 9))
    assert spearman_correlation(m, m) == 1.0 and spearman_correlation(m, -m) == -1.0
    assert spearman_correlation(m, 3 * m + 1) == 1.0
    assert np.isnan(spearman_correlation(m, np.zeros((7, 9))))


# ---------------------------------------------------------------- randomization
def test_randomization_leaves_the_users_model_bit_identical():
    net = make_tiny_resnet().train()
    net.fc.weight.requires_grad_(False)
    calls = []
    handle = net.conv1.register_forward_hook(lambda *a: calls.append(1))
    before = snapshot(net)
    x = torch.randn(1, 3, 8, 8)
    r = randomization_check(net, x, "grad_x_input", 2)
    assert_unchanged(net, before)
    assert calls == []
    assert r.layers[0] == "fc" and r.layers[-1] == "conv1" and len(r.spearman) == len(r.layers)
    # the user's model gives the same map afterwards
    torch.testing.assert_close(faithfulness._reduced(attribute(net, x, "grad_x_input", 2)), r.original, rtol=0, atol=0)
    handle.remove()


def test_default_layers_are_the_convolutions_and_linear_layers_that_run_from_the_top():
    model, x = ZOO["resnet"](), example_input("resnet", n=1, size=32)
    r = randomization_check(model, x, "vanilla", 1)
    convs = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert set(r.layers) == set(convs) and r.layers[0] == "fc" and r.layers[-1] == "conv1"
    # execution order, not registration order: in a block the shortcut's 1x1 conv runs after conv2
    assert r.layers.index("layer4.0.downsample.0") < r.layers.index("layer4.0.conv2")
    assert not any(".bn" in n for n in r.layers)
    g = ZOO["googlenet"]()
    assert not any(n.startswith("aux1") for n in randomization_check(g, x, "vanilla", 1, layers=6).layers)
    assert randomization_check(model, x, "vanilla", 1, layers=3).layers == r.layers[:3]


def test_an_unused_layer_keeps_the_map_and_spearman_is_1():
    class WithSpare(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = small_cnn(seed=2)
            self.spare = nn.Linear(4, 4)  # never called

        def forward(self, x):
            return self.net(x)

    model, x = WithSpare().eval(), torch.randn(1, 3, 12, 12)
    r = randomization_check(model, x, "grad_x_input", 3, layers=["spare", "net.5"])
    assert r.layers == ("spare", "net.5")
    assert r.spearman[0] == 1.0 and torch.equal(r.maps[0], r.original)
    assert r.spearman[1] < 0.999 and not torch.equal(r.maps[1], r.original)


def test_randomization_is_seeded_cumulative_and_keeps_the_original_target():
    model, x = small_cnn(seed=3), torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    state = torch.random.get_rng_state()
    a = randomization_check(model, x, "grad_x_input")
    assert torch.equal(torch.random.get_rng_state(), state)  # torch's global generator untouched
    b = randomization_check(model, x, "grad_x_input", seed=0)
    c = randomization_check(model, x, "grad_x_input", seed=1)
    np.testing.assert_array_equal(a.spearman, b.spearman)
    assert not np.allclose(a.spearman, c.spearman)
    with torch.no_grad():
        assert a.target == int(model(x).argmax())
    # cumulative: the map after the last layer differs from randomizing that layer alone
    alone = randomization_check(model, x, "grad_x_input", layers=["0"])
    assert not torch.allclose(alone.maps[0], a.maps[-1])


def test_gradcam_keeps_its_layer_and_other_methods_run():
    model, x = ZOO["resnet"](), example_input("resnet", n=1, size=32, seed=1)
    r = randomization_check(model, x, "gradcam", 2, layers=4)
    assert r.original.shape == (32, 32) and all(m.shape == (32, 32) for m in r.maps)
    assert r.method == "gradcam" and r.target == 2
    # the default layer (layer3.1 at 32 x 32) is found on the original model and kept
    np.testing.assert_array_equal(randomization_check(model, x, "gradcam", 2, layers=4, layer="layer3.1").spearman,
                                  r.spearman)
    r2 = randomization_check(model, x, "gradcam", 2, layers=4, layer="layer2")
    assert not torch.equal(r2.original, r.original)
    s = randomization_check(model, x, "smoothgrad", 2, layers=2, samples=3, noise=0.1)
    np.testing.assert_array_equal(s.spearman, randomization_check(model, x, "smoothgrad", 2, layers=2, samples=3,
                                                                  noise=0.1).spearman)


def test_randomization_progress_stop_and_errors():
    model, x = small_cnn(seed=4), torch.randn(1, 3, 12, 12)
    calls = []
    r = randomization_check(model, x, "vanilla", 0, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)] and r.layers == ("5", "2", "0")
    ev = threading.Event()
    ev.set()
    with pytest.raises(Stopped) as info:
        randomization_check(model, x, "vanilla", 0, stop=ev)
    assert (info.value.done, info.value.total) == (0, 3)
    done: list[int] = []
    with pytest.raises(Stopped) as info:
        randomization_check(model, x, "vanilla", 0, progress=lambda d, t: done.append(d), stop=lambda: bool(done))
    assert info.value.done == 1
    with pytest.raises(ValueError, match="is not in the model"):
        randomization_check(model, x, "vanilla", 0, layers=["nope"])
    with pytest.raises(ValueError, match="no parameters"):
        randomization_check(model, x, "vanilla", 0, layers=["1"])
    with pytest.raises(ValueError, match="one image"):
        randomization_check(model, torch.randn(2, 3, 12, 12), "vanilla", 0)
    with pytest.raises(ValueError, match="method must be one of"):
        randomization_check(model, x, "lime", 0)
    with pytest.raises(ValueError, match="not an option of any attribution method"):
        randomization_check(model, x, "vanilla", 0, windw=3)


def test_a_torchscript_model_is_copied_and_left_alone():
    sm = torch.jit.script(small_cnn(seed=5))
    before = {k: v.clone() for k, v in sm.state_dict().items()}
    r = randomization_check(sm, torch.randn(1, 3, 12, 12), "vanilla", 1)
    assert r.layers == ("5", "2", "0")
    assert all(torch.equal(before[k], v) for k, v in sm.state_dict().items())


# ---------------------------------------------------------------- randomization against Quantus
def _quantus_reset(module: nn.Module, generator: torch.Generator) -> None:
    """Quantus's randomization of one layer (``get_random_layer_generator``: ``torch.manual_seed(
    seed + 1)`` then ``module.reset_parameters()``, seed 42), on new tensors of our private copy
    (reset_parameters writes in place, and the copy's tensors alias the user's until replaced)."""
    for owner in module.modules():
        for k, p in list(owner._parameters.items()):
            if p is not None:
                owner._parameters[k] = nn.Parameter(p.detach().clone(), requires_grad=False)
    torch.manual_seed(42 + 1)
    module.reset_parameters()


@pytest.mark.parametrize("method", ["grad_x_input", "vanilla", "gradcam"])
def test_per_layer_spearman_equals_quantus_mprt_given_the_same_randomized_models(quantus, monkeypatch, method):
    """Quantus's MPRT (layer_order="top_down", correlation_spearman) re-initializes the modules
    that have ``reset_parameters`` (BatchNorm included) in reverse registration order with
    torch's default init reseeded at 43 for every layer; ours draws Gaussians with each
    tensor's own statistics from a private generator, conv/linear layers in reverse execution
    order. On a Sequential of convs and a linear layer (no BatchNorm: the two layer lists and
    orders coincide) and with Quantus's re-initialization substituted for ours, both compute the
    same randomized models; Quantus gets our attribution as its explain_func (reduced as ours:
    |a| summed over channels; its normalise-by-max and abs do not change ranks), so the
    per-layer Spearman correlations must agree to rounding."""
    net = small_cnn(seed=6)
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(7))
    target = 2

    def explain_func(model, inputs, targets, **kwargs):
        a = attribute(model, torch.as_tensor(inputs), method, torch.as_tensor(targets))
        return faithfulness._reduced(a)[None, None].float().numpy()

    metric = quantus.MPRT(similarity_func=quantus.similarity_func.correlation_spearman, layer_order="top_down",
                          seed=42, disable_warnings=True)
    with torch.random.fork_rng(devices=[]):
        theirs = metric(model=net, x_batch=x.numpy(), y_batch=np.array([target]), a_batch=None,
                        explain_func=explain_func, device="cpu", channel_first=True)
        monkeypatch.setattr(faithfulness, "_randomize_layer", _quantus_reset)
        ours = randomization_check(net, x, method, target)
    assert theirs["original"] == [pytest.approx(1.0)]
    assert list(ours.layers) == [k for k in theirs if k != "original"] == ["5", "2", "0"]
    expected = np.array([theirs[k][0] for k in ours.layers])
    np.testing.assert_allclose(ours.spearman, expected, rtol=1e-6, atol=1e-6, equal_nan=True)
