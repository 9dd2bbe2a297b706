"""Occlusion (cnnwidgets.core.saliency.occlusion): known answers on linear models, agreement
with Captum's Occlusion on the zoo, batching, argument checks, and the user's model left as
it was found."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from cnnwidgets.core.imageops import gaussian_blur
from cnnwidgets.core.saliency.integrated_gradients import BLUR_SIGMA_FRACTION
from cnnwidgets.core.saliency.occlusion import occlusion
from tests.conftest import hook_count, make_tiny_resnet, requires_grad_flags, training_flags
from tests.zoo import ZOO, example_input

#: tiny convolutions: one thread (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def _zoo(name: str) -> nn.Module:
    return ZOO[name]()


def linear_net(c: int, h: int, w: int, classes: int = 3, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, classes)).double()


def brute_force(weight: torch.Tensor, x: torch.Tensor, window, stride, baseline: float) -> torch.Tensor:
    """The definition, window by window, for the linear score ``sum w * x`` (+ bias): the drop
    when window W is covered is ``sum over W and channels of w * (x - baseline)``; a pixel gets
    the mean drop of the windows covering it. Windows start at 0, s, 2s, ... (ceil((H - h) / s)
    + 1 of them) and the last one is cut at the border (Captum's placement)."""
    (wh, ww), (sh, sw) = window, stride
    n, c, h, w = x.shape
    g = (weight.view(1, c, h, w) * (x - baseline)).sum(dim=1)  # N x H x W contribution per pixel
    total = torch.zeros(n, h, w, dtype=x.dtype)
    count = torch.zeros(h, w, dtype=x.dtype)
    for i in range(math.ceil((h - wh) / sh) + 1):
        for j in range(math.ceil((w - ww) / sw) + 1):
            rs, cs = slice(i * sh, min(i * sh + wh, h)), slice(j * sw, min(j * sw + ww, w))
            drop = g[:, rs, cs].sum(dim=(1, 2))
            total[:, rs, cs] += drop.view(n, 1, 1)
            count[rs, cs] += 1
    return (total / count)[:, None].expand(n, c, h, w)


# ---------------------------------------------------------------- known answers
def test_a_1x1_window_gives_each_pixels_contribution_on_a_linear_model():
    net = linear_net(3, 5, 4)
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = net[1].weight[2].view(1, 3, 5, 4)
    for baseline in (0.0, 0.5):
        got = occlusion(net, x, target=2, window=1, stride=1, baseline=baseline)
        expected = (w * (x - baseline)).sum(dim=1, keepdim=True).expand(2, 3, 5, 4)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)


def test_hand_computed_rows():
    # one row of 3 pixels with contributions 1, 2, 4; windows of 2 at stride 1 cover pixels {0, 1}
    # (drop 3) and {1, 2} (drop 6): the middle pixel gets their mean, 4.5
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 1, bias=False)).double()
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 2.0, 4.0]]))
    x = torch.ones(1, 1, 1, 3, dtype=torch.float64)
    got = occlusion(net, x, target=1, window=(1, 2), stride=1)  # a single logit: class 1 scores it
    assert got.flatten().tolist() == [3.0, 4.5, 6.0]
    # 6 pixels of contribution 1, window 3, stride 2: windows [0, 3), [2, 5) and [4, 6) (cut at
    # the border, Captum's placement): drops 3, 3, 2
    net6 = nn.Sequential(nn.Flatten(), nn.Linear(6, 2, bias=False)).double()
    with torch.no_grad():
        net6[1].weight.copy_(torch.stack([torch.ones(6), torch.zeros(6)]))
    got = occlusion(net6, torch.ones(1, 1, 1, 6, dtype=torch.float64), target=0, window=(1, 3), stride=(1, 2))
    assert got.flatten().tolist() == [3.0, 3.0, 3.0, 3.0, 2.5, 2.0]


@pytest.mark.parametrize("window, stride", [(3, 1), (3, 2), ((2, 4), (1, 3)), ((7, 6), (2, 5)), (7, 7)])
def test_linear_model_matches_the_definition_window_by_window(window, stride):
    c, h, w = 2, 7, 9
    net = linear_net(c, h, w, seed=3)
    x = torch.randn(2, c, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    pair = lambda v: (v, v) if isinstance(v, int) else v  # noqa: E731
    got = occlusion(net, x, target=[0, 2], window=window, stride=stride, baseline=-0.25)
    expected = torch.stack([
        brute_force(net[1].weight[t], x[i:i + 1], pair(window), pair(stride), -0.25)[0] for i, t in enumerate((0, 2))
    ])
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-13)


def test_a_single_logit_scores_class_0_as_its_negative():
    model, x = _zoo("binary"), example_input("binary", n=1, size=32)
    torch.testing.assert_close(occlusion(model, x, 0, window=6, stride=3), -occlusion(model, x, 1, window=6, stride=3),
                               rtol=0, atol=0)


# ---------------------------------------------------------------- against Captum
captum = pytest.importorskip("captum")
from captum.attr import Occlusion  # noqa: E402


def _captum(model, x, target, window, stride, baseline=0.0, per_eval=64):
    (wh, ww), (sh, sw) = ((window, window) if isinstance(window, int) else window,
                          (stride, stride) if isinstance(stride, int) else stride)
    c = x.shape[1]
    return Occlusion(model).attribute(x.clone(), sliding_window_shapes=(c, wh, ww), strides=(c, sh, sw),
                                      baselines=baseline, target=target, perturbations_per_eval=per_eval)


#: 64 - 8 = 56 is a multiple of 4; 64 - 10 = 54 is not a multiple of 7 (the last window is cut
#: at the border), nor 64 - 9 = 55 of 4 or 64 - 5 = 59 of 3.
CASES = [(8, 4), (10, 7), ((9, 5), (4, 3))]


@pytest.mark.parametrize("name", ["resnet", "densenet", "mobilenet_v3"])
@pytest.mark.parametrize("window, stride", CASES)
def test_agrees_with_captum_occlusion(name, window, stride):
    model, x = _zoo(name), example_input(name, n=2, size=64, seed=2)
    ours = occlusion(model, x, [3, 7], window=window, stride=stride)
    theirs = _captum(model, x, [3, 7], window, stride)
    assert ours.shape == theirs.shape == x.shape
    # float32 logits of order 1: the two differ by the order of float sums (measured: <= 1.2e-7)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=2e-5)
    assert float(theirs.abs().max()) > 0.1  # a map worth comparing


def test_agrees_with_captum_for_a_tensor_baseline_and_blur():
    model, x = _zoo("resnet"), example_input("resnet", n=2, size=64, seed=5)
    blurred = gaussian_blur(x, BLUR_SIGMA_FRACTION * 64)
    theirs = _captum(model, x, 1, 12, 6, baseline=blurred)
    torch.testing.assert_close(occlusion(model, x, 1, window=12, stride=6, baseline="blur"), theirs, rtol=1e-4, atol=2e-5)
    torch.testing.assert_close(occlusion(model, x, 1, window=12, stride=6, baseline=blurred), theirs, rtol=1e-4,
                               atol=2e-5)
    torch.testing.assert_close(occlusion(model, x, 1, window=12, stride=6, baseline=0.7),
                               _captum(model, x, 1, 12, 6, baseline=0.7), rtol=1e-4, atol=2e-5)


# ---------------------------------------------------------------- batching, no gradients, the model left as found
def test_batch_size_1_equals_the_default():
    net = make_tiny_resnet().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    default = occlusion(net, x, target=[1, 4], window=3, stride=2)
    for bs in (1, 7):
        torch.testing.assert_close(occlusion(net, x, target=[1, 4], window=3, stride=2, batch_size=bs), default,
                                   rtol=1e-12, atol=1e-13)


def test_many_copies_per_pass_and_no_gradients():
    seen: list[tuple[int, bool]] = []

    class Probe(nn.Module):
        def forward(self, t):
            seen.append((t.shape[0], torch.is_grad_enabled()))
            return t

    torch.manual_seed(0)
    net = nn.Sequential(Probe(), nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.rand(1, 3, 16, 16)
    occlusion(net, x, target=0, window=4, stride=4, batch_size=5)  # 4 x 4 = 16 windows
    occluded = [b for b, _ in seen[1:]]
    assert occluded == [5, 5, 5, 1]
    assert not any(g for _, g in seen)


def test_the_users_model_is_left_as_found():
    net = make_tiny_resnet().train()
    net.layer1[0].conv1.weight.requires_grad_(False)
    calls = []
    handle = net.conv1.register_forward_hook(lambda *a: calls.append(1))
    state = {k: (v.clone(), v.data_ptr()) for k, v in net.state_dict().items()}
    flags, grads, hooks = training_flags(net), requires_grad_flags(net), hook_count(net)
    x = torch.randn(1, 3, 8, 8)
    occlusion(net, x, target=2, window=3, stride=1)
    now = net.state_dict()
    assert set(now) == set(state)
    for k, (v, ptr) in state.items():
        assert torch.equal(now[k], v) and now[k].data_ptr() == ptr, k
    assert training_flags(net) == flags and requires_grad_flags(net) == grads and hook_count(net) == hooks
    assert calls == []  # the user's hooks do not run: cnnwidgets runs its private view
    assert all(p.grad is None for p in net.parameters())
    handle.remove()


# ---------------------------------------------------------------- argument checks
@pytest.mark.parametrize("kwargs, message", [
    (dict(window=9), "larger than the images"),
    (dict(window=(2, 9)), "larger than the images"),
    (dict(window=0), "window must be >= 1"),
    (dict(stride=0), "stride must be >= 1"),
    (dict(window=3, stride=4), "stride 4 is larger than the window 3"),
    (dict(window=(1, 2, 3)), "window must be an int or"),
    (dict(baseline="noise"), "baseline must be"),
    (dict(baseline=torch.zeros(2, 2)), "does not broadcast"),
    (dict(batch_size=0), "batch_size must be >= 1"),
])
def test_clear_errors(kwargs, message):
    net = linear_net(3, 8, 8)
    with pytest.raises(ValueError, match=message):
        occlusion(net, torch.rand(1, 3, 8, 8, dtype=torch.float64), 0, **kwargs)


def test_a_window_as_large_as_the_image_takes_any_stride_and_a_wrong_target_is_named():
    net = linear_net(1, 4, 4)
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    whole = occlusion(net, x, 1, window=4, stride=9)  # one position: the drop of the whole image
    torch.testing.assert_close(whole, (net[1].weight[1].view(1, 1, 4, 4) * x).sum().expand(1, 1, 4, 4), rtol=1e-12,
                               atol=1e-14)
    with pytest.raises(ValueError, match=r"target must be in 0\.\.2"):
        occlusion(net, x, 5, window=2, stride=2)
    with pytest.raises(TypeError, match="window must be an int"):
        occlusion(net, x, 0, window=2.5)
