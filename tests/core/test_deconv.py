"""Tests for cnnwidgets.core.deconv: deconvnet projections checked against hand computation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.core.deconv import reconstruct
from cnnwidgets.core.relu_rules import relu_rule
from cnnwidgets.demo import mnist

from ..conftest import hook_count, requires_grad_flags, training_flags


# ---------------------------------------------------------------- hand-written reference (numpy, loops)
def conv_valid(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x (Cin, H, W), w (Cout, Cin, kh, kw) -> (Cout, H-kh+1, W-kw+1), stride 1, no padding."""
    co, _, kh, kw = w.shape
    h, wd = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    out = np.zeros((co, h, wd))
    for o in range(co):
        for i in range(h):
            for j in range(wd):
                out[o, i, j] = (x[:, i : i + kh, j : j + kw] * w[o]).sum() + b[o]
    return out


def conv_transpose(g: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Transposed convolution: g (Cout, h, w) spread through w back to (Cin, h+kh-1, w+kw-1)."""
    co, ci, kh, kw = w.shape
    out = np.zeros((ci, g.shape[1] + kh - 1, g.shape[2] + kw - 1))
    for o in range(co):
        for i in range(g.shape[1]):
            for j in range(g.shape[2]):
                out[:, i : i + kh, j : j + kw] += g[o, i, j] * w[o]
    return out


def maxpool2(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 max pooling (floor); returns the pooled maps and the switches (argmax positions)."""
    c, h, w = r.shape[0], r.shape[1] // 2, r.shape[2] // 2
    pooled = np.zeros((c, h, w))
    switches = np.zeros((c, h, w, 2), int)
    for k in range(c):
        for i in range(h):
            for j in range(w):
                win = r[k, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                a, b = np.unravel_index(np.argmax(win), win.shape)
                pooled[k, i, j] = win[a, b]
                switches[k, i, j] = (2 * i + a, 2 * j + b)
    return pooled, switches


def unpool(g: np.ndarray, switches: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape)
    for k in range(g.shape[0]):
        for i in range(g.shape[1]):
            for j in range(g.shape[2]):
                a, b = switches[k, i, j]
                out[k, a, b] += g[k, i, j]
    return out


def one_channel(a: np.ndarray, c: int) -> np.ndarray:
    s = np.zeros_like(a)
    s[c] = a[c]
    return s


def set_conv(conv: nn.Conv2d, w, b) -> None:
    with torch.no_grad():
        conv.weight.copy_(torch.as_tensor(np.asarray(w), dtype=torch.float32))
        conv.bias.copy_(torch.as_tensor(np.asarray(b), dtype=torch.float32))


def exact(got: torch.Tensor, expected: np.ndarray) -> None:
    torch.testing.assert_close(got, torch.as_tensor(expected, dtype=torch.float32), rtol=0, atol=0)


# integer data, so every float32 sum below is exact
X7 = np.array(
    [
        [-3, -3, -3, 3, -3, -2, -3],
        [1, -3, 0, -2, 2, -3, 3],
        [-1, 3, 0, 0, 1, 3, -2],
        [3, 2, 1, -1, 2, -2, -2],
        [3, 3, -3, 3, 3, 3, 1],
        [-3, 2, -1, 2, 3, 3, -3],
        [3, -1, -3, 1, 2, 1, -3],
    ],
    float,
)[None]


# ---------------------------------------------------------------- one conv, ReLU, max pool
def test_conv_relu_pool_matches_hand_projection():
    w = np.array([[[[1.0, -1.0], [2.0, 1.0]]]])
    b = np.array([-2.0])
    net = nn.Sequential(nn.Conv2d(1, 1, 2), nn.ReLU(), nn.MaxPool2d(2))
    set_conv(net[0], w, b)
    x = X7[:, :5, :5]  # 1 x 5 x 5 -> conv 4 x 4 -> pool 2 x 2
    z = conv_valid(x, w, b)
    pooled, switches = maxpool2(np.maximum(z, 0))
    assert pooled.max() > 0
    # deconvnet: unpool the pooled maps through the switches, rectify, transposed conv
    expected = conv_transpose(np.maximum(unpool(pooled, switches, z.shape), 0), w)
    proj, ch = reconstruct(net, torch.as_tensor(x[None], dtype=torch.float32), "2")
    assert proj.shape == (1, 1, 5, 5) and ch.tolist() == [0]
    exact(proj[0], expected)
    # from the ReLU layer: no pooling, the signal is the rectified conv output
    proj, _ = reconstruct(net, torch.as_tensor(x[None], dtype=torch.float32), "1")
    exact(proj[0], conv_transpose(np.maximum(z, 0), w))


def three_conv_net() -> tuple[nn.Sequential, dict[str, np.ndarray]]:
    """conv1 (1->2, 2x2), ReLU, MaxPool2d(2), conv2 (2->3, 2x2), ReLU, conv3 (3->2, 1x1).

    On ``X7`` (1 x 7 x 7) every pooling window has a unique positive maximum, and conv2's
    output has a negative value where conv3's channel 0 sends back a positive signal: there
    the deconvnet and guided rules differ.
    """
    p = {
        "w1": np.array([[[[1, -1], [2, 1]]], [[[-1, 2], [1, -2]]]], float),
        "b1": np.array([-2.0, 1.0]),
        "w2": np.array(
            [
                [[[1, -2], [0, 1]], [[2, 1], [-1, 0]]],
                [[[-1, 1], [1, 1]], [[0, -2], [1, 1]]],
                [[[2, 0], [-1, -1]], [[1, 1], [1, -1]]],
            ],
            float,
        ),
        "b2": np.array([1.0, -1.0, 0.0]),
        "w3": np.array([[1, 1, 2], [-2, 1, 1]], float)[:, :, None, None],
        "b3": np.array([0.0, 1.0]),
    }
    net = nn.Sequential(
        nn.Conv2d(1, 2, 2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 2), nn.ReLU(), nn.Conv2d(3, 2, 1)
    )
    set_conv(net[0], p["w1"], p["b1"])
    set_conv(net[3], p["w2"], p["b2"])
    set_conv(net[5], p["w3"], p["b3"])
    return net, p


def relu_back(g: np.ndarray, z: np.ndarray, rule: str) -> np.ndarray:
    """Backward of y = relu(z) for the incoming signal g."""
    if rule == "deconvnet":
        return np.maximum(g, 0)
    if rule == "guided":
        return np.maximum(g, 0) * (z > 0)
    return g * (z > 0)  # "plain" gradient


def hand_projection(x: np.ndarray, p: dict[str, np.ndarray], layer: str, channel: int | None, rule: str):
    """Project one map of layer "3" (conv2), "4" (its ReLU) or "5" (conv3) back to x by hand."""
    z1 = conv_valid(x, p["w1"], p["b1"])  # 2 x 6 x 6
    pooled, switches = maxpool2(np.maximum(z1, 0))  # 2 x 3 x 3
    z2 = conv_valid(pooled, p["w2"], p["b2"])  # 3 x 2 x 2
    r2 = np.maximum(z2, 0)
    z3 = conv_valid(r2, p["w3"], p["b3"])  # 2 x 2 x 2
    a = {"3": z2, "4": r2, "5": z3}[layer]
    c = int(np.argmax(a.reshape(len(a), -1).max(axis=1))) if channel is None else channel
    g = one_channel(a, c)  # the chosen map, zero elsewhere
    if layer == "5":
        g = conv_transpose(g, p["w3"])
    if layer in ("4", "5"):
        g = relu_back(g, z2, rule)
    g = unpool(conv_transpose(g, p["w2"]), switches, z1.shape)
    return conv_transpose(relu_back(g, z1, rule), p["w1"]), c


@pytest.mark.parametrize("layer", ["3", "4", "5"])
@pytest.mark.parametrize("channel", [None, 0, 1])
def test_three_conv_net_matches_hand_projection(layer, channel):
    net, p = three_conv_net()
    expected, c = hand_projection(X7, p, layer, channel, "deconvnet")
    proj, ch = reconstruct(net, torch.as_tensor(X7[None], dtype=torch.float32), layer, channel)
    assert ch.dtype == torch.long and ch.tolist() == [c]
    exact(proj[0], expected)
    assert np.abs(expected).sum() > 0


def test_hand_reference_rules_differ_and_match_autograd():
    """The reference can tell the rules apart, and agrees with autograd for plain and guided."""
    net, p = three_conv_net()
    deconv, _ = hand_projection(X7, p, "5", 0, "deconvnet")
    guided, _ = hand_projection(X7, p, "5", 0, "guided")
    plain, _ = hand_projection(X7, p, "5", 0, "plain")
    assert not np.array_equal(deconv, guided)
    assert not np.array_equal(guided, plain)
    x = torch.as_tensor(X7[None], dtype=torch.float32).requires_grad_(True)
    a = net(x)
    signal = torch.as_tensor(one_channel(a[0].detach().numpy(), 0))[None]
    (g,) = torch.autograd.grad(a, x, grad_outputs=signal)
    exact(g[0], plain)
    with relu_rule(net, "guided"):
        a = net(x)
        (g,) = torch.autograd.grad(a, x, grad_outputs=signal)
    exact(g[0], guided)


# ---------------------------------------------------------------- channel choice
def three_channel_net() -> nn.Sequential:
    """1x1 conv with weights 1, 3, 3: positive images peak in channel 1 (tied with 2), negative in 0."""
    net = nn.Sequential(nn.Conv2d(1, 3, 1))
    set_conv(net[0], [[[[1.0]]], [[[3.0]]], [[[3.0]]]], [0.0, 0.0, 0.0])
    return net


def test_strongest_channel_ties_go_to_lowest_index_and_batch_mixes_channels():
    net = three_channel_net()
    pos = torch.tensor([[[1.0, 2.0], [0.5, 1.0]]])
    neg = -pos
    x = torch.stack([pos, neg, pos])
    proj, ch = reconstruct(net, x, "0")
    assert ch.tolist() == [1, 0, 1]
    # the 1x1 transposed conv of a map a = w*x is w*a = w^2 * x
    exact(proj[0], 9 * pos.numpy())
    exact(proj[1], 1 * neg.numpy())
    # each image of the batch gets what it would get alone
    for i in range(3):
        single, c = reconstruct(net, x[i : i + 1], "0")
        assert c.tolist() == [ch[i].item()]
        exact(proj[i], single[0].numpy())
    proj2, ch2 = reconstruct(net, x, "0", channel=2)
    assert ch2.tolist() == [2, 2, 2]
    exact(proj2[1], 9 * neg.numpy())


def test_strongest_channel_on_demo_is_the_largest_max():
    demo = mnist("val")
    x = demo.images[:6]
    with torch.no_grad():
        a = demo.model.features[:7](x)
    _, ch = reconstruct(demo.model, x, "features.6")
    assert ch.tolist() == a.flatten(2).amax(dim=2).argmax(dim=1).tolist()
    assert len(set(ch.tolist())) > 1  # different images, different strongest maps


# ---------------------------------------------------------------- model state
class BNDrop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(0.5)
        self.pool = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(5 * 4 * 4, 2))
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        x = self.pool(self.drop(self.relu(self.bn(self.conv1(x)))))
        return self.head(self.relu(self.conv2(x)))


def snapshot(model: nn.Module):
    return (
        training_flags(model),
        requires_grad_flags(model),
        {k: v.clone() for k, v in model.state_dict().items()},
        hook_count(model),
        ["forward" in vars(m) for m in model.modules()],
    )


def same_snapshot(a, b) -> bool:
    return (
        a[0] == b[0]
        and a[1] == b[1]
        and a[2].keys() == b[2].keys()
        and all(torch.equal(a[2][k], b[2][k]) for k in a[2])
        and a[3:] == b[3:]
    )


def test_train_mode_batchnorm_dropout_equals_eval_and_model_left_as_found():
    net = BNDrop()
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(8))
    reference = copy.deepcopy(net).eval()
    expected, expected_ch = reconstruct(reference, x, "conv2")
    net.train()
    net.conv1.weight.requires_grad_(False)
    before = snapshot(net)
    x_before = x.clone()
    proj, ch = reconstruct(net, x, "conv2")
    torch.testing.assert_close(proj, expected, rtol=0, atol=0)
    assert ch.tolist() == expected_ch.tolist()
    assert proj.abs().sum() > 0
    assert same_snapshot(before, snapshot(net))  # modes, requires_grad, BN buffers, hooks, ReLU forward
    assert net.training and not net.conv1.weight.requires_grad and net.conv2.weight.requires_grad
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(x, x_before) and not x.requires_grad and x.grad is None


def test_model_left_as_found_after_error(tiny_resnet, rgb_batch):
    tiny_resnet.train()
    before = snapshot(tiny_resnet)
    with pytest.raises(ValueError, match="channel"):
        reconstruct(tiny_resnet, rgb_batch, "layer1.0.conv2", channel=99)
    assert same_snapshot(before, snapshot(tiny_resnet))


def test_inplace_reused_relu_model_matches_non_inplace_copy(tiny_resnet, rgb_batch):
    reference = copy.deepcopy(tiny_resnet)
    for m in reference.modules():
        if isinstance(m, nn.ReLU):
            m.inplace = False
    for layer in ("layer1.0.conv2", "layer2.0.relu", "layer2.0.bn2"):
        proj, ch = reconstruct(tiny_resnet, rgb_batch, layer)
        expected, expected_ch = reconstruct(reference, rgb_batch, layer)
        torch.testing.assert_close(proj, expected, rtol=0, atol=0)
        assert ch.tolist() == expected_ch.tolist()
        assert proj.abs().sum() > 0


def test_stops_after_the_layer(seq_cnn, gray_batch):
    calls = []
    handle = seq_cnn[6].register_forward_hook(lambda *a: calls.append(1))
    reconstruct(seq_cnn, gray_batch, "3")
    assert calls == []
    handle.remove()


def test_call_selects_the_use_of_a_reused_module():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(9)
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.conv(self.relu(self.conv(x))).sum(dim=(1, 2, 3))

    net = Twice()
    unrolled = nn.Sequential(copy.deepcopy(net.conv), nn.ReLU(), copy.deepcopy(net.conv))
    x = torch.randn(2, 2, 5, 5, generator=torch.Generator().manual_seed(10))
    first, _ = reconstruct(net, x, "conv", call=0)
    second, _ = reconstruct(net, x, "conv", call=1)
    last, _ = reconstruct(net, x, "conv", call=-1)
    torch.testing.assert_close(first, reconstruct(unrolled, x, "0")[0], rtol=0, atol=0)
    torch.testing.assert_close(second, reconstruct(unrolled, x, "2")[0], rtol=0, atol=0)
    torch.testing.assert_close(last, second, rtol=0, atol=0)
    assert not torch.equal(first, second)
    with pytest.raises(ValueError, match="ran 2 time"):
        reconstruct(net, x, "conv", call=2)


def test_negative_call_protects_the_output_from_later_inplace_ops(tiny_resnet, rgb_batch):
    # BasicBlock does `out += identity` on bn2's output; with call=-1 the whole pass runs
    a, _ = reconstruct(tiny_resnet, rgb_batch, "layer1.0.bn2", call=0)
    b, _ = reconstruct(tiny_resnet, rgb_batch, "layer1.0.bn2", call=-1)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_works_inside_no_grad(seq_cnn, gray_batch):
    expected, _ = reconstruct(seq_cnn, gray_batch, "3")
    with torch.no_grad():
        got, _ = reconstruct(seq_cnn, gray_batch, "3")
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert got.abs().sum() > 0


# ---------------------------------------------------------------- validation
def test_errors(seq_cnn, gray_batch):
    with pytest.raises(ValueError, match="not in the model.*Valid names"):
        reconstruct(seq_cnn, gray_batch, "nope")
    with pytest.raises(ValueError, match=r"4-D.*\(2, 3\)"):
        reconstruct(seq_cnn, gray_batch, "6")
    with pytest.raises(ValueError, match=r"4-D.*\(2, 54\)"):
        reconstruct(seq_cnn, gray_batch, "5")
    with pytest.raises(ValueError, match=r"0\.\.5.*6 channels.*got 6"):
        reconstruct(seq_cnn, gray_batch, "3", channel=6)
    with pytest.raises(ValueError, match=r"0\.\.5"):
        reconstruct(seq_cnn, gray_batch, "3", channel=-1)
    with pytest.raises(TypeError, match="channel must be an int"):
        reconstruct(seq_cnn, gray_batch, "3", channel=1.5)
    with pytest.raises(ValueError, match="float tensor N x C x H x W"):
        reconstruct(seq_cnn, gray_batch[0], "3")
    with pytest.raises(ValueError, match="float tensor"):
        reconstruct(seq_cnn, gray_batch.to(torch.int64), "3")
    assert hook_count(seq_cnn) == 0 and not any(p.grad is not None for p in seq_cnn.parameters())


# ---------------------------------------------------------------- demo model
def test_demo_projection_features_6():
    demo = mnist("val")
    x = demo.images[:4]
    proj, ch = reconstruct(demo.model, x, "features.6")
    assert proj.shape == x.shape and proj.dtype == torch.float32
    assert ch.shape == (4,) and ch.dtype == torch.long and ((ch >= 0) & (ch < 128)).all()
    assert torch.isfinite(proj).all()
    assert (proj.flatten(1).abs().amax(dim=1) > 0).all()
    assert not demo.model.training and hook_count(demo.model) == 0
