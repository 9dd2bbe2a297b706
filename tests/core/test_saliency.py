"""Tests for cnnwidgets.core.saliency: gradient attributions checked against known answers."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest

from cnnwidgets.core.runner import private_model  # hooks on cnnwidgets' own view: the user's do not run there
import torch
from torch import nn

from cnnwidgets.core.saliency import (
    BASELINES,
    METHODS,
    REGISTRY,
    attribute,
    deconvnet,
    grad_x_input,
    gradcam,
    guided_backprop,
    guided_gradcam,
    integrated_gradients,
    layer_gradient,
    smoothgrad,
    to_heatmap,
    vanilla_gradient,
)

from ..conftest import hook_count, requires_grad_flags, training_flags

TARGETED = [m for m in METHODS if m != "layer_gradient"]
#: The methods that read a layer's feature maps for a class score (Grad-CAM and its family).
CAMS = [m for m, spec in REGISTRY.items() if spec.takes_layer and spec.targeted]
#: One map per image, N x H x W (the class activation maps).
PER_IMAGE = [m for m, spec in REGISTRY.items() if not spec.input_shaped]
FAST_PARAMS = {"smoothgrad": {"samples": 3, "seed": 0}, "integrated_gradients": {"steps": 4}}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one thread avoids the cost of thread hand-offs on a busy two-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- models with known answers
def linear_model(c: int = 2, h: int = 3, w: int = 4, k: int = 3, dtype=torch.float64) -> nn.Sequential:
    torch.manual_seed(5)
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, k)).to(dtype)


def smooth_cnn() -> nn.Sequential:
    """float64, Softplus/Tanh: smooth, so Riemann sums converge and finite differences apply."""
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1),
        nn.Softplus(),
        nn.Conv2d(4, 4, 3, stride=2),  # 8x8 -> 3x3
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(36, 3),
    ).double()
    with torch.no_grad():  # larger weights: more curvature and larger score differences
        net[0].weight.mul_(2)
        net[5].weight.mul_(5)
    return net


class Cubic(nn.Module):
    """One logit ``sum(x**3) / 3`` (class 1 of a binary head): its input gradient is ``x**2``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x**3).sum(dim=(1, 2, 3)).unsqueeze(1) / 3


def hand_relu_net() -> nn.Sequential:
    """Flatten -> Linear(3, 3) -> ReLU -> Linear(3, 2); hidden rows a, b, c chosen below."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 3, bias=False), nn.ReLU(), nn.Linear(3, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 1.0, 1.0]]))
        net[3].weight.copy_(torch.tensor([[-1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]))
    return net


def finite_difference_gradient(model: nn.Module, x: torch.Tensor, target: int, eps: float = 1e-6) -> torch.Tensor:
    """Central differences of logit ``target`` for every input value, one image at a time."""
    out = torch.zeros_like(x)
    with torch.no_grad():
        for i in range(x.shape[0]):
            d = x[i].numel()
            steps = torch.eye(d, dtype=x.dtype).view(d, *x.shape[1:]) * eps
            plus = model(x[i : i + 1] + steps)[:, target]
            minus = model(x[i : i + 1] - steps)[:, target]
            out[i] = ((plus - minus) / (2 * eps)).view(x.shape[1:])
    return out


# ---------------------------------------------------------------- linear model: exact answers
def test_vanilla_gradient_of_linear_model_is_the_weight_row():
    net = linear_model()
    x = torch.randn(3, 2, 3, 4, generator=gen(0), dtype=torch.float64)
    w = net[1].weight.detach().view(3, 2, 3, 4)
    assert torch.equal(vanilla_gradient(net, x, target=2), w[2].expand(3, -1, -1, -1))
    assert torch.equal(vanilla_gradient(net, x, target=[0, 2, 1]), w[[0, 2, 1]])
    assert torch.equal(vanilla_gradient(net, x, target=torch.tensor([1, 1, 0])), w[[1, 1, 0]])
    assert torch.equal(vanilla_gradient(net, x, target=np.array([2, 0, 0])), w[[2, 0, 0]])
    predicted = net(x).argmax(dim=1)
    assert torch.equal(vanilla_gradient(net, x), w[predicted])  # None: predicted class


def test_grad_x_input_of_linear_model():
    net = linear_model()
    x = torch.randn(2, 2, 3, 4, generator=gen(1), dtype=torch.float64)
    w = net[1].weight.detach().view(3, 2, 3, 4)
    assert torch.equal(grad_x_input(net, x, target=[1, 0]), x * w[[1, 0]])


@pytest.mark.parametrize("steps", [1, 7, 50])
def test_integrated_gradients_of_linear_model_with_black_baseline(steps):
    net = linear_model()
    x = torch.randn(2, 2, 3, 4, generator=gen(2), dtype=torch.float64)
    w = net[1].weight.detach().view(3, 2, 3, 4)
    ig = integrated_gradients(net, x, target=1, steps=steps, baseline="black", batch_size=5)
    torch.testing.assert_close(ig, (x - 0) * w[1].expand(2, -1, -1, -1), rtol=1e-13, atol=1e-15)


def test_smoothgrad_of_linear_model_is_the_weight_row_at_any_noise():
    net = linear_model()
    x = torch.randn(2, 2, 3, 4, generator=gen(3), dtype=torch.float64)
    w = net[1].weight.detach().view(3, 2, 3, 4)
    sg = smoothgrad(net, x, target=0, samples=7, noise=0.5, seed=1)
    torch.testing.assert_close(sg, w[0].expand(2, -1, -1, -1), rtol=1e-13, atol=1e-15)


# ---------------------------------------------------------------- smooth nonlinear model
def baseline_used(x: torch.Tensor, baseline, seed: int | None) -> torch.Tensor:
    """Read back the baseline IG used: on ``sum(x)`` (all weights 1) IG is exactly ``x - x'``."""
    probe = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 1, bias=False)).to(x.dtype)
    nn.init.ones_(probe[1].weight)
    return x - integrated_gradients(probe, x, target=1, steps=1, baseline=baseline, seed=seed)


@pytest.mark.parametrize("baseline", [*BASELINES, "tensor"])
def test_integrated_gradients_completeness(baseline):
    net = smooth_cnn()
    x = torch.randn(3, 2, 8, 8, generator=gen(4), dtype=torch.float64) * 2
    if baseline == "tensor":
        baseline = torch.full((2, 1, 1), 0.3, dtype=torch.float64)  # broadcasts to N x C x H x W
    base = baseline_used(x, baseline, seed=0)
    if isinstance(baseline, torch.Tensor):
        torch.testing.assert_close(base, baseline.expand_as(x), rtol=0, atol=1e-15)
    elif baseline == "black":
        assert torch.equal(base, torch.zeros_like(x))
    target = [0, 1, 2]
    ig = integrated_gradients(net, x, target=target, steps=100, baseline=baseline, seed=0)
    with torch.no_grad():
        delta = net(x)[range(3), target] - net(base)[range(3), target]
    error = (ig.sum(dim=(1, 2, 3)) - delta).abs()
    assert (delta.abs() > 0.04).all()  # a non-trivial difference to explain
    assert (error <= 0.01 * delta.abs()).all(), (error / delta.abs()).tolist()


def test_integrated_gradients_trapezoid_error_shrinks_quadratically():
    net = smooth_cnn()
    x = torch.randn(1, 2, 8, 8, generator=gen(5), dtype=torch.float64) * 3
    with torch.no_grad():
        delta = (net(x) - net(torch.zeros_like(x)))[0, 1]
    errors = [
        (integrated_gradients(net, x, target=1, steps=s, integration="trapezoid").sum() - delta).abs().item()
        for s in (5, 10, 100)
    ]
    assert errors[2] <= 0.01 * abs(delta.item())
    assert 3.0 < errors[0] / errors[1] < 5.0  # trapezoid rule: error ~ 1 / steps**2
    for rule in ("midpoint", "gausslegendre"):  # the reported delta is that error
        ig, d = integrated_gradients(net, x, target=1, steps=10, integration=rule, return_delta=True)
        torch.testing.assert_close(d, (ig.sum() - delta).reshape(1), rtol=1e-9, atol=1e-12)
    gl = (integrated_gradients(net, x, target=1, steps=10).sum() - delta).abs().item()
    assert gl < errors[1] / 10  # Gauss-Legendre, the default: far smaller error at the same steps


def test_integrated_gradients_rules_never_evaluate_at_the_baseline_but_the_trapezoid():
    from cnnwidgets.core.saliency import INTEGRATIONS, path_points

    for rule in INTEGRATIONS:
        alphas, weights = path_points(7, rule)
        assert abs(weights.sum() - 1) < 1e-12 and ((alphas >= 0) & (alphas <= 1)).all()
        assert (alphas.min() == 0) == (rule == "trapezoid")
    with pytest.raises(ValueError, match="integration must be one of"):
        path_points(3, "simpson")


def test_gradients_match_finite_differences():
    net = smooth_cnn()
    x = torch.randn(2, 2, 8, 8, generator=gen(6), dtype=torch.float64)
    for target in range(3):
        fd = finite_difference_gradient(net, x, target)
        torch.testing.assert_close(vanilla_gradient(net, x, target=target), fd, rtol=1e-6, atol=1e-8)


def test_gradients_match_finite_differences_on_inplace_resnet(tiny_resnet):
    net = tiny_resnet.double()
    x = torch.randn(2, 3, 8, 8, generator=gen(7), dtype=torch.float64)
    fd = finite_difference_gradient(net, x, 3)
    torch.testing.assert_close(vanilla_gradient(net, x, target=3), fd, rtol=1e-5, atol=1e-7)


def test_layer_gradient_known_values():
    net = linear_model()
    x = torch.randn(2, 2, 3, 4, generator=gen(8), dtype=torch.float64)
    w = net[1].weight.detach().view(3, 2, 3, 4)
    assert torch.equal(layer_gradient(net, x, "1", channel=2), w[2].expand(2, -1, -1, -1))
    torch.testing.assert_close(layer_gradient(net, x, "1"), w.sum(0).expand(2, -1, -1, -1), rtol=1e-14, atol=0)
    # conv feature map: finite differences of the channel's summed activation
    cnn = smooth_cnn()
    x = torch.randn(1, 2, 8, 8, generator=gen(9), dtype=torch.float64)
    summed = _Fn(lambda t: cnn[1](cnn[0](t))[:, 1].sum(dim=(1, 2)).unsqueeze(1))
    fd = finite_difference_gradient(summed, x, 0)
    torch.testing.assert_close(layer_gradient(cnn, x, "1", channel=1), fd, rtol=1e-6, atol=1e-8)


class _Fn(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def test_layer_gradient_stops_the_forward_pass_at_the_layer():
    class Exploding(nn.Module):
        def forward(self, x):
            raise AssertionError("the forward pass went past the layer")

    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Tanh(), Exploding())
    g = layer_gradient(net, torch.randn(1, 1, 5, 5, generator=gen(10)), "1", channel=0)
    assert g.shape == (1, 1, 5, 5) and g.abs().sum() > 0


# ---------------------------------------------------------------- guided backprop / deconvnet
def test_guided_backprop_and_deconvnet_hand_values():
    net = hand_relu_net()
    # image 0: hidden units a, c positive, b negative; image 1: only b positive
    x = torch.tensor([[1.0, 2.0, -1.0], [-1.0, -1.0, -1.0]]).view(2, 3, 1, 1)
    # vanilla: W1^T (W2[0] * (h > 0)); guided: clamp(W2[0], 0) * (h > 0); deconvnet: clamp only
    expected = {
        "vanilla": [[-1.0, 2.0, 3.0], [0.0, -2.0, 0.0]],
        "guided_backprop": [[0.0, 3.0, 3.0], [0.0, -2.0, 0.0]],
        "deconvnet": [[0.0, 1.0, 3.0], [0.0, 1.0, 3.0]],
    }
    for method, values in expected.items():
        got = attribute(net, x, method, target=0)
        assert got.shape == (2, 3, 1, 1)
        assert got.view(2, 3).tolist() == values, method


class _PlainNet(nn.Module):
    """conv -> relu -> conv (+ residual) -> relu -> conv -> relu -> GAP -> linear, separate ReLUs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(11)
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv3 = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        y = self.relu1(self.conv1(x))
        z = self.conv2(y)
        z = z + y
        z = self.relu2(z)
        z = self.relu3(self.conv3(z))
        return self.fc(z.mean(dim=(2, 3)))


class _InplaceReusedNet(_PlainNet):
    """Same weights and function; one ``ReLU(inplace=True)`` used three times, in-place residual."""

    def __init__(self) -> None:
        super().__init__()
        del self.relu1, self.relu2, self.relu3
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        y = self.relu(self.conv1(x))
        z = self.conv2(y)
        z += y
        z = self.relu(z)
        z = self.relu(self.conv3(z))
        return self.fc(z.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", ["vanilla", "guided_backprop", "deconvnet", "gradcam", "guided_gradcam"])
def test_inplace_reused_relu_model_matches_plain_equivalent(method):
    plain, fancy = _PlainNet(), _InplaceReusedNet()
    fancy.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(3, 2, 6, 6, generator=gen(12))
    with torch.no_grad():
        torch.testing.assert_close(fancy(x), plain(x), rtol=0, atol=0)
    expected = attribute(plain, x, method, target=[0, 1, 2])
    got = attribute(fancy, x, method, target=[0, 1, 2])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    if method in ("guided_backprop", "deconvnet"):  # the rule matters on this net
        assert not torch.allclose(expected, attribute(plain, x, "vanilla", target=[0, 1, 2]))


@pytest.mark.parametrize("method", ["vanilla", "guided_backprop", "deconvnet", "gradcam"])
def test_tiny_resnet_matches_its_non_inplace_copy(tiny_resnet, rgb_batch, method):
    reference = copy.deepcopy(tiny_resnet)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    expected = attribute(reference, rgb_batch, method, target=[4, 1])
    got = attribute(tiny_resnet, rgb_batch, method, target=[4, 1])
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ---------------------------------------------------------------- Grad-CAM
def cam_net(inplace_relu: bool | None = None, stride: int = 1) -> nn.Sequential:
    """conv 1x1 (1 -> 2): maps A = [x, -x]; (optional ReLU); global mean; Linear(2, 2)."""
    layers: list[nn.Module] = [nn.Conv2d(1, 2, 1, stride=stride, bias=False)]
    if inplace_relu is not None:
        layers.append(nn.ReLU(inplace=inplace_relu))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2, bias=False)]
    net = nn.Sequential(*layers).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
        net[-1].weight.copy_(torch.tensor([[2.0, -1.0], [0.5, 3.0]]))
    return net


def test_gradcam_known_answer_linear_head():
    x = torch.randn(2, 1, 4, 5, generator=gen(13), dtype=torch.float64)
    w = torch.tensor([[2.0, -1.0], [0.5, 3.0]], dtype=torch.float64)
    net = cam_net()
    for t in (0, 1):
        # dS/dA_k = w[t, k] / (h w); cam = relu(sum_k w[t, k] / (h w) * A_k), A = [x, -x]
        expected = torch.relu((w[t, 0] - w[t, 1]) * x[:, 0]) / 20
        cam = gradcam(net, x, target=t)
        assert cam.shape == (2, 4, 5)
        torch.testing.assert_close(cam, expected, rtol=1e-14, atol=1e-16)


def test_gradcam_uses_the_conv_output_before_an_inplace_relu():
    x = torch.randn(2, 1, 4, 4, generator=gen(14), dtype=torch.float64)
    w = torch.tensor([[2.0, -1.0], [0.5, 3.0]], dtype=torch.float64)
    t = 1
    pos = (x[:, 0] > 0).double().mean(dim=(1, 2)).view(2, 1, 1)  # share of A_0 = x above 0
    neg = (x[:, 0] < 0).double().mean(dim=(1, 2)).view(2, 1, 1)  # share of A_1 = -x above 0
    # dS/dA_k = w[t, k] / (h w) * (A_k > 0); weight_k = w[t, k] * share_k / (h w)
    expected = torch.relu(w[t, 0] * pos * x[:, 0] - w[t, 1] * neg * x[:, 0]) / 16
    for inplace in (False, True):
        got = gradcam(cam_net(inplace), x, target=t, layer="0")  # the conv, before the in-place ReLU
        torch.testing.assert_close(got, expected, rtol=1e-14, atol=1e-16)


def test_gradcam_bilinear_upsampling_known_answer():
    # stride 2: a 2 x 2 map upsampled to 4 x 4 (align_corners=False): per axis, output rows are
    # v0, 0.75 v0 + 0.25 v1, 0.25 v0 + 0.75 v1, v1
    x = torch.tensor([[1.0, 9.0, 2.0, 9.0], [9.0, 9.0, 9.0, 9.0], [3.0, 9.0, 4.0, 9.0], [9.0] * 4], dtype=torch.float64)
    x = x.view(1, 1, 4, 4)
    low = torch.relu((2.0 - (-1.0)) * torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)) / 4
    u = torch.tensor([[1.0, 0.0], [0.75, 0.25], [0.25, 0.75], [0.0, 1.0]], dtype=torch.float64)
    cam = gradcam(cam_net(stride=2), x, target=0)
    torch.testing.assert_close(cam[0], u @ low @ u.T, rtol=1e-14, atol=1e-15)


def test_gradcam_default_layer_is_the_last_spatial_layer_that_ran(nested_cnn, rgb_batch, tiny_resnet):
    # nested_cnn: stem, block (conv1, act, conv2), head: the block's output is the last 8 x 8 map
    default = gradcam(nested_cnn, rgb_batch, target=1)
    torch.testing.assert_close(default, gradcam(nested_cnn, rgb_batch, target=1, layer="block"), rtol=0, atol=0)
    assert not torch.allclose(default, gradcam(nested_cnn, rgb_batch, target=1, layer="stem"))
    assert default.shape == (2, 8, 8)
    # tiny_resnet: the last block, not the last nn.Conv2d registered (layer2.0.downsample.0,
    # a shortcut the old rule picked)
    default = gradcam(tiny_resnet, rgb_batch, target=0)
    expected = gradcam(tiny_resnet, rgb_batch, target=0, layer="layer2.0")
    torch.testing.assert_close(default, expected, rtol=0, atol=0)
    assert default.shape == (2, 8, 8) and (default >= 0).all()


def test_guided_gradcam_is_guided_backprop_times_gradcam(seq_cnn, gray_batch):
    got = guided_gradcam(seq_cnn, gray_batch, target=[0, 2])
    cam = gradcam(seq_cnn, gray_batch, target=[0, 2])
    expected = guided_backprop(seq_cnn, gray_batch, target=[0, 2]) * cam[:, None]
    assert got.shape == gray_batch.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ---------------------------------------------------------------- SmoothGrad / IG sampling and batching
def test_smoothgrad_noise_zero_is_vanilla():
    net = smooth_cnn()
    x = torch.randn(2, 2, 8, 8, generator=gen(15), dtype=torch.float64)
    sg = smoothgrad(net, x, target=[1, 2], samples=5, noise=0.0, batch_size=4)
    torch.testing.assert_close(sg, vanilla_gradient(net, x, target=[1, 2]), rtol=1e-12, atol=1e-14)


def test_smoothgrad_seeded_reproducible_and_independent_of_batch_size():
    net = smooth_cnn()
    x = torch.randn(3, 2, 8, 8, generator=gen(16), dtype=torch.float64)
    state = torch.random.get_rng_state()
    a = smoothgrad(net, x, target=0, samples=6, seed=7, batch_size=32)
    assert torch.equal(torch.random.get_rng_state(), state)  # a private generator
    assert torch.equal(a, smoothgrad(net, x, target=0, samples=6, seed=7, batch_size=32))
    torch.testing.assert_close(smoothgrad(net, x, target=0, samples=6, seed=7, batch_size=4), a, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(smoothgrad(net, x, target=0, samples=6, seed=7, batch_size=1), a, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(smoothgrad(net, x, target=0, samples=6, seed=8), a)
    assert not torch.allclose(a, vanilla_gradient(net, x, target=0))


def test_smoothgrad_noise_is_a_fraction_of_each_images_range():
    # the gradient of sum(x**3)/3 is x**2, so its mean over noise is x**2 + sigma**2
    x = torch.rand(2, 1, 8, 8, generator=gen(17), dtype=torch.float64) - 0.5
    x[1] *= 4  # a wider range: four times the noise
    sigma = 0.2 * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
    sg = smoothgrad(Cubic().double(), x, target=1, samples=1000, noise=0.2, seed=0, batch_size=1000)
    estimate = (sg - x**2).mean(dim=(1, 2, 3))  # relative standard error about 1.3 %
    torch.testing.assert_close(estimate, sigma**2, rtol=0.05, atol=0)


def test_integrated_gradients_batching_does_not_change_the_result():
    net = smooth_cnn()
    x = torch.randn(2, 2, 8, 8, generator=gen(18), dtype=torch.float64)
    for baseline in BASELINES:
        one = integrated_gradients(net, x, target=[0, 1], steps=12, baseline=baseline, batch_size=1000, seed=3)
        for bs in (1, 5):
            got = integrated_gradients(net, x, target=[0, 1], steps=12, baseline=baseline, batch_size=bs, seed=3)
            torch.testing.assert_close(got, one, rtol=1e-12, atol=1e-14)


def test_integrated_gradients_evaluates_in_batches_of_at_most_batch_size():
    net = smooth_cnn()
    sizes: list[int] = []
    private_model(net)[0].register_forward_pre_hook(lambda _m, inp: sizes.append(inp[0].shape[0]))
    x = torch.randn(3, 2, 8, 8, generator=gen(19), dtype=torch.float64)
    integrated_gradients(net, x, target=0, steps=10, batch_size=7)
    # a given target needs no extra pass: 3 x 10 path images by 7 (the range is checked on
    # the logits of the first of them)
    assert sizes == [7, 7, 7, 7, 2]
    sizes.clear()
    integrated_gradients(net, x, target=None, steps=10, batch_size=7)
    # the predicted classes first (N = 3), then the same batches
    assert sizes == [3, 7, 7, 7, 7, 2]
    sizes.clear()
    integrated_gradients(net, x, target=0, steps=10, batch_size=7, return_delta=True)
    assert sizes == [7, 7, 7, 7, 2, 6]  # the delta: x and the baseline in one pass


def test_a_target_out_of_range_is_still_refused_before_any_result():
    net = smooth_cnn()  # 3 classes
    x = torch.randn(2, 2, 8, 8, generator=gen(20), dtype=torch.float64)
    for method in (vanilla_gradient, gradcam):
        with pytest.raises(ValueError, match=r"target must be in 0\.\.2 \(the model has K = 3 classes\), got \[3\]"):
            method(net, x, target=[0, 3])
    with pytest.raises(ValueError, match=r"target must be in 0\.\.2 .*got \[-1\]"):
        smoothgrad(net, x, target=-1, samples=2)


def test_blur_and_noise_baselines():
    # on a linear model IG = (x - x') * w, so the baseline can be read back
    net = linear_model(c=1, h=8, w=8, k=2)
    w = net[1].weight.detach().view(2, 1, 8, 8)
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    x[0, 0, 2:6, 2:6] = 1.0
    blur_base = x - integrated_gradients(net, x, target=0, steps=1, baseline="blur") / w[0]
    assert torch.allclose(blur_base.sum(), x.sum(), rtol=1e-2)  # blurring keeps (nearly) the mass
    assert 0 < blur_base.min() and blur_base.max() < 1  # spread out
    noise_base = x - integrated_gradients(net, x, target=0, steps=1, baseline="noise", seed=0) / w[0]
    assert 0 <= noise_base.min() and noise_base.max() <= 1 and noise_base.std() > 0.2


# ---------------------------------------------------------------- softmax at the end
@pytest.mark.parametrize("final", [nn.Softmax(dim=1), nn.LogSoftmax(dim=1)])
@pytest.mark.parametrize("method", TARGETED)
def test_final_softmax_is_bypassed_with_one_warning(final, method):
    torch.manual_seed(20)
    base = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4))
    with_softmax = nn.Sequential(*base, final)  # the same modules, plus the softmax
    x = torch.randn(2, 2, 5, 5, generator=gen(21))
    expected = attribute(base, x, method, target=None, **FAST_PARAMS.get(method, {}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = attribute(with_softmax, x, method, target=None, **FAST_PARAMS.get(method, {}))
    messages = [w for w in caught if "logits before the softmax" in str(w.message)]
    if method == "eigencam":  # reads no score at all: nothing to bypass, nothing to say
        assert caught == []
    else:
        assert len(messages) == 1 and len(caught) == 1
        assert messages[0].category is UserWarning
        assert messages[0].filename == __file__  # points at the caller
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert "forward" not in vars(final)
    with torch.no_grad():
        torch.testing.assert_close(with_softmax(x), final(base(x)))


def test_softmax_warning_is_a_userwarning_for_pytest_warns():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="attribution uses the logits before the softmax"):
        vanilla_gradient(net, torch.rand(1, 1, 2, 2), target=0)


# ---------------------------------------------------------------- the model is left as found
@pytest.mark.parametrize("method", METHODS)
def test_model_state_restored_after_every_method_and_after_errors(tiny_resnet, rgb_batch, method):
    net = tiny_resnet.train()
    net.layer1.eval()
    net.fc.weight.requires_grad_(False)
    user_hook = net.layer1.register_forward_hook(lambda *a: None)
    modes, grads, hooks = training_flags(net), requires_grad_flags(net), hook_count(net)
    x = rgb_batch.clone()
    params = dict(FAST_PARAMS.get(method, {}))
    if method == "layer_gradient":
        params.update(layer="layer1.0.conv2", channel=1)
        target = None
    else:
        target = [0, 3]

    def check():
        assert training_flags(net) == modes
        assert requires_grad_flags(net) == grads
        assert hook_count(net) == hooks
        assert not any("forward" in vars(m) for m in net.modules())
        assert all(p.grad is None for p in net.parameters())
        assert not rgb_batch.requires_grad and torch.equal(rgb_batch, x)

    out = attribute(net, rgb_batch, method, target=target, **params)
    assert not out.requires_grad
    assert out.shape == ((2, 8, 8) if method in PER_IMAGE else (2, 3, 8, 8))
    check()
    if method == "eigencam":  # class-agnostic: the pass stops at its layer, no score is read
        attribute(net, rgb_batch, method, target=[0, 5], **params)
    elif method != "layer_gradient":
        with pytest.raises(ValueError, match="target must be in 0..4"):
            attribute(net, rgb_batch, method, target=[0, 5], **params)
    else:
        with pytest.raises(ValueError, match="channel must be in 0..3"):
            attribute(net, rgb_batch, method, layer="layer1.0.conv2", channel=4)
    check()
    user_hook.remove()


def test_eval_mode_used_during_attribution(tiny_resnet, rgb_batch):
    train_copy = copy.deepcopy(tiny_resnet).train()
    expected = vanilla_gradient(tiny_resnet.eval(), rgb_batch, target=1)
    torch.testing.assert_close(vanilla_gradient(train_copy, rgb_batch, target=1), expected, rtol=0, atol=0)
    assert train_copy.training


def test_input_never_modified_by_an_inplace_first_layer():
    net = nn.Sequential(nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(4, 2))
    x = torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]])
    for method in TARGETED:
        if method in CAMS:
            continue  # no conv layer
        attribute(net, x, method, target=0, **FAST_PARAMS.get(method, {}))
        assert x.tolist() == [[[[-1.0, 2.0], [3.0, -4.0]]]]
    w = net[2].weight.detach()[0].view(1, 1, 2, 2)
    assert torch.equal(vanilla_gradient(net, x, target=0), w * (x > 0))


# ---------------------------------------------------------------- errors
def test_bad_targets(seq_cnn, gray_batch):
    with pytest.raises(ValueError, match=r"target must be in 0\.\.2 \(the model has K = 3 classes\), got \[3\]"):
        vanilla_gradient(seq_cnn, gray_batch, target=3)
    with pytest.raises(ValueError, match=r"target must be in 0\.\.2.*got \[-1\]"):
        vanilla_gradient(seq_cnn, gray_batch, target=[0, -1])
    with pytest.raises(ValueError, match="one int per image"):
        vanilla_gradient(seq_cnn, gray_batch, target=[0, 1, 2])
    with pytest.raises(TypeError, match="integers"):
        vanilla_gradient(seq_cnn, gray_batch, target=torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="bool"):
        vanilla_gradient(seq_cnn, gray_batch, target=True)


def test_bad_method_layer_and_input(seq_cnn, gray_batch):
    with pytest.raises(ValueError, match="method must be one of 'vanilla', 'grad_x_input'.*'layer_gradient'"):
        attribute(seq_cnn, gray_batch, "saliency")
    with pytest.raises(ValueError, match=r"layer '6' outputs shape \(2, 3\)"):
        gradcam(seq_cnn, gray_batch, layer="6")  # the Linear layer
    with pytest.raises(ValueError, match="'nope' is not in the model. Valid names"):
        gradcam(seq_cnn, gray_batch, layer="nope")
    with pytest.raises(ValueError, match="is not in the model"):
        layer_gradient(seq_cnn, gray_batch, "nope")
    with pytest.raises(ValueError, match="Grad-CAM needs a layer whose output is a feature map"):
        gradcam(linear_model(dtype=torch.float32), torch.rand(1, 2, 3, 4))
    with pytest.raises(ValueError, match="N x C x H x W"):
        vanilla_gradient(seq_cnn, gray_batch[0], target=0)
    with pytest.raises(ValueError, match="float tensor"):
        vanilla_gradient(seq_cnn, (gray_batch * 10).long(), target=0)
    with pytest.raises(ValueError, match="N x K class logits"):
        vanilla_gradient(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(2)), gray_batch, target=0)  # N x 2 x 36
    with pytest.raises(ValueError, match="baseline must be one of"):
        integrated_gradients(seq_cnn, gray_batch, baseline="white")
    with pytest.raises(ValueError, match="does not broadcast"):
        integrated_gradients(seq_cnn, gray_batch, baseline=torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="steps must be >= 1"):
        integrated_gradients(seq_cnn, gray_batch, steps=0)
    with pytest.raises(ValueError, match="noise must be"):
        smoothgrad(seq_cnn, gray_batch, noise=-0.1)
    # common options a method does not take are ignored; a misspelt one says who takes what
    assert torch.equal(attribute(seq_cnn, gray_batch, "vanilla", 0, steps=3, samples=2, layer="0"),
                       vanilla_gradient(seq_cnn, gray_batch, 0))
    with pytest.raises(ValueError, match="'stesp' is not an option.*integrated_gradients: steps"):
        attribute(seq_cnn, gray_batch, "vanilla", stesp=3)


# ---------------------------------------------------------------- to_heatmap
def test_to_heatmap_abs_and_signed_known_values():
    a = torch.tensor(
        [
            [[[1.0, -4.0]], [[-2.0, 2.0]]],  # image 0: C=2, H=1, W=2
            [[[0.0, 0.0]], [[0.0, 0.0]]],  # image 1: all zero
        ]
    )
    h = to_heatmap(a)
    assert h.dtype == np.float32 and h.shape == (2, 1, 2)
    np.testing.assert_array_equal(h, [[[0.5, 1.0]], [[0.0, 0.0]]])  # max |a| over channels / 4
    s = to_heatmap(a, mode="signed")
    np.testing.assert_array_equal(s, [[[-0.5, -1.0]], [[0.0, 0.0]]])  # sums -1, -2 over max 2
    np.testing.assert_array_equal(to_heatmap(a[0].numpy(), "signed"), s[0])  # 3-D numpy input
    with pytest.raises(ValueError, match="mode must be one of 'abs', 'signed'"):
        to_heatmap(a, mode="pos")
    with pytest.raises(ValueError, match="N x C x H x W"):
        to_heatmap(a[0, 0, 0])


def test_default_batches_follow_the_image_size(monkeypatch):
    import cnnwidgets.core.saliency._common as sal

    net = smooth_cnn()
    sizes: list[int] = []
    private_model(net)[0].register_forward_pre_hook(lambda _m, inp: sizes.append(inp[0].shape[0]))
    x = torch.randn(2, 2, 8, 8, generator=gen(21), dtype=torch.float64)
    integrated_gradients(net, x, target=0, steps=10)
    assert sizes == [20]  # 2 x 10 small path images: one batch
    sizes.clear()
    monkeypatch.setattr(sal, "BATCH_VALUES", 5 * 2 * 8 * 8)  # room for 5 images of 2 x 8 x 8
    got = integrated_gradients(net, x, target=0, steps=11)
    assert sizes == [5, 5, 5, 5, 2]
    torch.testing.assert_close(got, integrated_gradients(net, x, target=0, steps=11, batch_size=1000),
                               rtol=1e-12, atol=1e-14)
    sizes.clear()
    smoothgrad(net, x, target=0, samples=3, seed=0)
    assert sizes == [5, 1]


def test_one_registry_lists_every_method_with_its_options():
    import typing

    from cnnwidgets.core import saliency as sal

    assert tuple(sal.REGISTRY) == METHODS == typing.get_args(sal.Method)
    for spec in sal.REGISTRY.values():
        assert getattr(sal, spec.function.__name__) is spec.function and spec.label
    assert [m for m, s in sal.REGISTRY.items() if s.takes_layer] == [
        "gradcam", "guided_gradcam", "gradcam_plus_plus", "xgradcam", "hirescam", "layercam", "scorecam", "eigencam",
        "ablationcam", "layer_gradient"]
    assert [m for m, s in sal.REGISTRY.items() if not s.input_shaped] == [
        "gradcam", "gradcam_plus_plus", "xgradcam", "hirescam", "layercam", "scorecam", "eigencam", "ablationcam"]
    assert [m for m, s in sal.REGISTRY.items() if s.takes_window] == ["occlusion"]
    assert [m for m, s in sal.REGISTRY.items() if s.takes_rule] == ["lrp"]
    assert [m for m, s in sal.REGISTRY.items() if s.takes_steps] == ["integrated_gradients"]
    assert [m for m, s in sal.REGISTRY.items() if s.takes_samples] == ["smoothgrad"]
    assert [m for m, s in sal.REGISTRY.items() if not s.targeted] == ["layer_gradient"]
