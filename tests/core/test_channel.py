"""Channel cards (cnnwidgets.core.channel): receptive fields against hand calculations and
brute force, card contents against an independent pass with plain torch hooks."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
from torch import nn

import cnnwidgets.demo
from cnnwidgets.core.activations import top_images
from cnnwidgets.core.channel import (
    HISTOGRAM_BINS,
    QUANTILE_LEVELS,
    Box,
    channel_card,
    receptive_field,
    receptive_field_grid,
)
from cnnwidgets.core.filters import conv_weight
from cnnwidgets.core.passes import Stopped
from tests.conftest import hook_count, requires_grad_flags, training_flags, view_pre_hook

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny convolutions: one torch thread is faster


# ---------------------------------------------------------------- helpers
def hand_edges(specs, n_in):
    """Per map index, the [lo, hi) input interval a unit sees, by hand: forward sizes of each
    (kernel, stride, padding, dilation, ceil_mode) layer, then each unit's interval mapped back
    layer by layer, clipped to the real units of every layer (padding is not input)."""
    sizes = [n_in]
    for k, s, p, d, ceil in specs:
        span = sizes[-1] + 2 * p - d * (k - 1) - 1
        out = (-(-span // s) if ceil else span // s) + 1
        if ceil and (out - 1) * s >= sizes[-1] + p:
            out -= 1  # PyTorch: the last window must start inside the input or left padding
        sizes.append(out)
    edges = []
    for i in range(sizes[-1]):
        lo, hi = i, i + 1
        for (k, s, p, d, _), n in zip(reversed(specs), reversed(sizes[:-1])):
            lo, hi = lo * s - p, (hi - 1) * s - p + d * (k - 1) + 1
            lo, hi = max(lo, 0), min(hi, n)
        edges.append((lo, hi))
    return np.array(edges)


def brute_support(net, layer, shape, i, j):
    """Box (x0, y0, x1, y1) of the nonzero input gradient of all channels at (i, j), plain autograd."""
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(3), requires_grad=True)
    out = {}
    h = dict(net.named_modules())[layer].register_forward_hook(lambda m, a, o: out.setdefault("y", o))
    try:
        net(x)
    finally:
        h.remove()
    y = out["y"]
    (g,) = torch.autograd.grad(y[0, :, i, j].sum(), x)
    s = (g[0] != 0).any(0).numpy()
    r, c = np.flatnonzero(s.any(1)), np.flatnonzero(s.any(0))
    return (c[0], r[0], c[-1] + 1, r[-1] + 1)


def all_boxes(rf):
    h, w = rf.map_shape[1:]
    return {(i, j): tuple(rf.box(i, j)) for i in range(h) for j in range(w)}


# ---------------------------------------------------------------- receptive fields: known answers
def test_two_3x3_convs_see_5x5():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 3))
    rf = receptive_field_grid(net, "1", torch.zeros(1, 1, 12, 12))
    assert rf.map_shape == (2, 8, 8)
    assert (rf.stride, rf.size, rf.offset, rf.translated) == ((1, 1), (5, 5), (0, 0), True)
    for (i, j), b in all_boxes(rf).items():
        assert b == (j, i, j + 5, i + 5)
    assert receptive_field(net, "1", torch.zeros(1, 12, 12), (2, 6)) == Box(6, 2, 11, 7)
    assert receptive_field(net, "1", torch.zeros(1, 12, 12)).width == 5


@pytest.mark.parametrize("stride2, n_in, stride", [(1, 17, 2), (2, 19, 4)])
def test_strided_conv_then_3x3_sees_7x7(stride2, n_in, stride):
    # 3x3 stride 2 then 3x3: a 7 x 7 field; the map stride is 2 (x the second conv's stride)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Conv2d(2, 2, 3, stride=stride2))
    rf = receptive_field_grid(net, "1", torch.zeros(1, 1, n_in, n_in))
    assert rf.size == (7, 7) and rf.stride == (stride, stride)
    h, w = rf.map_shape[1:]
    assert (h, w) == ((((n_in - 3) // 2 + 1) - 3) // stride2 + 1,) * 2
    for (i, j), b in all_boxes(rf).items():
        assert b == (stride * j, stride * i, stride * j + 7, stride * i + 7)


def test_padding_clips_boxes_at_the_border():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1))
    rf = receptive_field_grid(net, "1", torch.zeros(1, 1, 8, 10))
    assert rf.map_shape == (1, 8, 10) and rf.offset == (-2, -2) and rf.size == (5, 5)
    assert rf.box(0, 0) == Box(0, 0, 3, 3)
    assert rf.box(7, 9) == Box(7, 5, 10, 8)
    assert rf.box(3, 4) == Box(2, 1, 7, 6)
    np.testing.assert_array_equal(rf.rows, hand_edges([(3, 1, 1, 1, False)] * 2, 8))
    np.testing.assert_array_equal(rf.cols, hand_edges([(3, 1, 1, 1, False)] * 2, 10))


def test_dead_relus_and_max_pooling_do_not_shrink_the_field():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 2, 3), nn.ReLU(inplace=True))
    with torch.no_grad():
        net[0].bias.fill_(-1e3)  # every first-layer ReLU is off: a plain gradient is zero everywhere
    x = torch.randn(1, 1, 14, 14, requires_grad=True)
    net(x)[0, :, 1, 1].sum().backward()
    assert not x.grad.any()
    rf = receptive_field_grid(net, "4", x)
    specs = [(3, 1, 0, 1, False), (2, 2, 0, 1, False), (3, 1, 0, 1, False)]
    np.testing.assert_array_equal(rf.rows, hand_edges(specs, 14))
    assert rf.size == (8, 8) and rf.stride == (2, 2)


def test_ceil_mode_dilated_pooling_matches_hand_calculation():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
                        nn.Conv2d(2, 2, 3, dilation=2), nn.MaxPool2d(2, dilation=2))
    specs = [(3, 1, 0, 1, False), (3, 2, 1, 1, True), (3, 1, 0, 2, False), (2, 2, 0, 2, False)]
    for n in (20, 23):
        rf = receptive_field_grid(net, "3", torch.zeros(1, 1, n, n))
        np.testing.assert_array_equal(rf.rows, hand_edges(specs, n))
        np.testing.assert_array_equal(rf.cols, hand_edges(specs, n))


def test_a_stride_that_leaves_pixels_out_is_measured_unit_by_unit():
    # 8 pixels, 3x3 stride 2: pixel 7 is seen by no unit, so the last box is not the first shifted
    net = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, padding=1))
    rf = receptive_field_grid(net, "1", torch.zeros(1, 1, 8, 8))
    assert not rf.translated
    assert rf.rows.tolist() == [[0, 5], [0, 7], [2, 7]]
    np.testing.assert_array_equal(rf.rows, hand_edges([(3, 2, 0, 1, False), (3, 1, 1, 1, False)], 8))


def test_adaptive_pooling_matches_brute_force_per_unit():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.AdaptiveAvgPool2d((4, 3)))
    rf = receptive_field_grid(net, "1", torch.zeros(1, 1, 12, 11))
    assert not rf.translated
    for (i, j), b in all_boxes(rf).items():
        assert b == brute_support(net, "1", (1, 12, 11), i, j)


def test_residual_network_with_inplace_relus_matches_linearized_copy(tiny_resnet):
    rf = receptive_field_grid(tiny_resnet, "layer2", torch.zeros(1, 3, 16, 16))
    lin = copy.deepcopy(tiny_resnet)  # ReLUs off, max pooling as average pooling: a plain gradient sees all
    lin.relu = nn.Identity()
    lin.maxpool = nn.AvgPool2d(2)
    for m in lin.modules():
        if hasattr(m, "relu"):
            m.relu = nn.Identity()
    assert rf.map_shape == (8, 4, 4)
    for (i, j), b in all_boxes(rf).items():
        assert b == brute_support(lin, "layer2", (3, 16, 16), i, j)


class _Gated(nn.Module):
    """Squeeze-excitation style: a functional ReLU, then a gate from the global mean."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)

    def forward(self, x):
        y = torch.relu_(self.conv(torch.relu(x)))
        return y * nn.functional.hardsigmoid(y.mean((2, 3), keepdim=True) - 10)  # the gate is 0


def test_a_global_gate_makes_every_field_the_whole_image():
    net = nn.Sequential(nn.ReLU(inplace=True), _Gated(), nn.Identity())
    rf = receptive_field_grid(net, "2", torch.zeros(1, 1, 10, 9))
    assert set(all_boxes(rf).values()) == {(0, 0, 9, 10)}


def test_demo_cnn_fields_match_hand_calculation():
    d = cnnwidgets.demo.mnist("val")
    conv, pool = (3, 1, 0, 1, False), (2, 2, 0, 1, False)
    layers = {"features.0": [conv], "features.1": [conv], "features.2": [conv, pool],
              "features.3": [conv, pool, conv], "features.5": [conv, pool, conv, pool],
              "features.6": [conv, pool, conv, pool, conv], "features.7": [conv, pool, conv, pool, conv]}
    for layer, specs in layers.items():
        rf = receptive_field_grid(d.model, layer, d.images[:1])
        np.testing.assert_array_equal(rf.rows, hand_edges(specs, 28), err_msg=layer)
        np.testing.assert_array_equal(rf.cols, hand_edges(specs, 28), err_msg=layer)
    rf = receptive_field_grid(d.model, "features.6", d.images)
    assert (rf.size, rf.stride, rf.map_shape) == ((18, 18), (4, 4), (128, 3, 3))
    assert receptive_field(d.model, "features.6", d.images) == Box(4, 4, 22, 22)


def test_receptive_field_is_cached_per_input_size_and_leaves_model_as_found(tiny_resnet):
    tiny_resnet.train()
    flags, grads = training_flags(tiny_resnet), requires_grad_flags(tiny_resnet)
    seen = []
    handle = view_pre_hook(tiny_resnet.layer2, lambda m, inp: seen.append(inp[0].shape[0]))
    try:
        a = receptive_field_grid(tiny_resnet, "layer2", torch.zeros(3, 16, 16))
        n = len(seen)
        assert n >= 1
        assert receptive_field_grid(tiny_resnet, "layer2", torch.zeros(2, 3, 16, 16)) is a
        assert len(seen) == n
        receptive_field_grid(tiny_resnet, "layer2", torch.zeros(3, 20, 20))
        assert len(seen) > n
    finally:
        handle.remove()
    assert training_flags(tiny_resnet) == flags and requires_grad_flags(tiny_resnet) == grads
    assert hook_count(tiny_resnet) == 0
    assert all(p.grad is None for p in tiny_resnet.parameters())


def test_receptive_field_errors(seq_cnn):
    x = torch.zeros(1, 1, 8, 8)
    with pytest.raises(ValueError, match="is not in the model. Valid names"):
        receptive_field(seq_cnn, "nope", x)
    with pytest.raises(ValueError, match="must output a 4-D feature map"):
        receptive_field(seq_cnn, "6", x)
    with pytest.raises(ValueError, match=r"within the 6 x 6 map"):
        receptive_field(seq_cnn, "0", x, (6, 0))
    with pytest.raises(ValueError, match="only its shape is used"):
        receptive_field(seq_cnn, "0", torch.zeros(8, 8))


# ---------------------------------------------------------------- channel cards on the demo
LAYER = "features.6"


@pytest.fixture(scope="module")
def brute(demo):
    """The maps of LAYER on every image, from a deep copy with a plain forward hook."""
    net = copy.deepcopy(demo.model).eval()
    maps = []
    net.features[6].register_forward_hook(lambda m, a, o: maps.append(o.detach().clone()))
    with torch.no_grad():
        for s in range(0, len(demo.images), 500):
            net(demo.images[s : s + 500])
    return torch.cat(maps).numpy()


@pytest.fixture(scope="module")
def channel(brute):
    """A channel active on some images and not on others."""
    frac = (brute.max(axis=(2, 3)) > 0).mean(axis=0)
    return int(np.flatnonzero((frac > 0.2) & (frac < 0.8))[0])


def test_card_matches_brute_force(demo, brute, channel):
    k = 9
    card = channel_card(demo.model, demo.images, LAYER, channel, k=k, labels=demo.labels, batch_size=300)
    m = brute[:, channel]  # N x 3 x 3
    mx = m.reshape(len(m), -1).max(axis=1)
    top = np.argsort(-mx, kind="stable")[:k]
    np.testing.assert_array_equal(card.top, top)
    np.testing.assert_allclose(card.top_values, mx[top], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(card.maps, m[top], rtol=1e-5, atol=1e-5)
    flat = m[top].reshape(k, -1).argmax(axis=1)
    np.testing.assert_array_equal(card.positions, np.stack([flat // 3, flat % 3], axis=1))
    i, j = card.positions[:, 0], card.positions[:, 1]
    np.testing.assert_array_equal(card.boxes, np.stack([4 * j, 4 * i, 4 * j + 18, 4 * i + 18], axis=1))
    assert card.maps.dtype == np.float32 and card.boxes.dtype == np.int64

    assert (card.layer, card.channel, card.n_images, card.n_valid) == (LAYER, channel, 2000, 2000)
    np.testing.assert_allclose(card.max_values, mx, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(card.mean_values, m.reshape(len(m), -1).mean(axis=1), rtol=1e-4, atol=1e-5)
    assert card.fraction_active == pytest.approx(np.mean(mx > 0))
    assert 0.2 < card.fraction_active < 0.8 and not card.dead
    np.testing.assert_allclose(card.quantiles, np.quantile(mx, QUANTILE_LEVELS), rtol=1e-5, atol=1e-5)
    counts, edges = card.histogram
    assert counts.shape == (HISTOGRAM_BINS,) and counts.sum() == 2000
    ref_counts, ref_edges = np.histogram(mx, bins=HISTOGRAM_BINS)
    np.testing.assert_allclose(edges, ref_edges, rtol=1e-5, atol=1e-5)
    assert np.abs(counts - ref_counts).sum() <= 2  # values on a bin edge may fall either side
    labels = demo.labels.numpy()
    by_class = np.array([mx[labels == c].mean() for c in range(10)])
    np.testing.assert_allclose(card.by_class, by_class, rtol=1e-5, atol=1e-5)
    assert card.top_class == int(by_class.argmax())
    assert card.classes is None
    # a conv layer: its filter, not RGB (it reads 64 channels)
    np.testing.assert_array_equal(card.weights, demo.model.features[6].weight.detach()[channel].numpy())
    assert card.weights.shape == (64, 3, 3) and card.weights_rgb is None


def test_card_without_labels_and_of_a_non_conv_layer(demo):
    card = channel_card(demo.model, demo.images[:300], "features.7", 3, k=4)
    assert card.by_class is None and card.top_class is None
    assert card.weights is None and card.weights_rgb is None
    assert card.top.shape == (4,) and card.maps.shape == (4, 3, 3)
    assert (card.maps >= 0).all()  # after the ReLU


def test_pass_is_cached_and_shared_with_top_images(demo, channel):
    seen = []
    handle = view_pre_hook(demo.model.features[6], lambda m, inp: seen.append(inp[0].shape[0]))
    try:
        first = channel_card(demo.model, demo.images, LAYER, channel, k=5)
        assert sum(seen) >= 2000
        seen.clear()
        second = channel_card(demo.model, demo.images, LAYER, channel + 1, k=5)
        assert 0 < sum(seen) <= 1 + 5  # the layer's channel count and the 5 top maps, no pass over the data
        seen.clear()
        again = channel_card(demo.model, demo.images, LAYER, channel, k=5)
        assert 0 < sum(seen) <= 1 + 5
        np.testing.assert_array_equal(again.top, first.top)
        assert second.channel == channel + 1
    finally:
        handle.remove()
    # a card opened after ActivationExplorer's top images of the layer pays no pass either
    seen.clear()
    handle = view_pre_hook(demo.model.features[3], lambda m, inp: seen.append(inp[0].shape[0]))
    try:
        top_images(demo.model, demo.images, "features.4", 0, k=3)
        assert sum(seen) >= 2000
        seen.clear()
        card = channel_card(demo.model, demo.images, "features.4", 7, k=3)
        assert 0 < sum(seen) <= 1 + 3 + 5  # channel count, top maps, receptive-field probes
        np.testing.assert_array_equal(card.top, top_images(demo.model, demo.images, "features.4", 7, k=3)[0])
    finally:
        handle.remove()


def test_card_leaves_model_as_found(demo):
    net = copy.deepcopy(demo.model).train()
    net.features[0].weight.requires_grad_(False)
    flags, grads = training_flags(net), requires_grad_flags(net)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    channel_card(net, demo.images[:200], LAYER, 1, k=3)
    with pytest.raises(ValueError):
        channel_card(net, demo.images[:200], LAYER, 999)
    assert training_flags(net) == flags and requires_grad_flags(net) == grads
    assert hook_count(net) == 0
    assert all(p.grad is None for p in net.parameters())
    for k, v in net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_stop_raises_stopped_and_progress_is_reported(demo):
    ev = threading.Event()
    ev.set()
    with pytest.raises(Stopped):
        channel_card(demo.model, demo.images[:400], LAYER, 0, stop=ev, batch_size=100)
    with pytest.raises(Stopped):
        channel_card(demo.model, demo.images[:400], LAYER, 0, stop=lambda: True, batch_size=100)
    calls = []
    channel_card(demo.model, demo.images[:400], LAYER, 0, batch_size=100, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (400, 400) and len(calls) >= 4


def test_bad_inputs_raise_value_errors(demo):
    x = demo.images[:50]
    with pytest.raises(ValueError, match=r"'features\.66' is not in the model. Valid names: .*'features\.6'"):
        channel_card(demo.model, x, "features.66", 0)
    with pytest.raises(ValueError, match=r"channel must be in 0\.\.127 \(layer 'features\.6' has 128 channels\), got 128"):
        channel_card(demo.model, x, LAYER, 128)
    with pytest.raises(ValueError, match="has 128 channels"):
        channel_card(demo.model, x, LAYER, -1)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        channel_card(demo.model, x, LAYER, 0, k=0)
    with pytest.raises(ValueError, match=r"layer 'classifier\.1' must output a 4-D feature map .* shape \(\d+, 70\)"):
        channel_card(demo.model, x, "classifier.1", 0)


# ---------------------------------------------------------------- channel cards: small nets
def test_rgb_filter_image_is_symmetric_around_zero(nested_cnn):
    x = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    card = channel_card(nested_cnn, x, "stem", 2, k=3)
    w = conv_weight(nested_cnn, "stem")[2].numpy()
    np.testing.assert_array_equal(card.weights, w)
    assert card.weights_rgb.shape == (3, 3, 3) and card.weights_rgb.dtype == np.uint8
    scale = np.float32(127) / np.abs(w).max()
    expected = np.floor(np.clip(w * scale + np.float32(127.5), 0, 254.5)).astype(np.uint8).transpose(1, 2, 0)
    np.testing.assert_array_equal(card.weights_rgb, expected)
    assert card.boxes.tolist() == [
        [max(c - 1, 0), max(r - 1, 0), min(c + 2, 8), min(r + 2, 8)] for r, c in card.positions.tolist()
    ]


def test_dead_channel():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    with torch.no_grad():
        net[0].bias.copy_(torch.tensor([0.0, -100.0]))
    card = channel_card(net, torch.randn(20, 1, 6, 6), "1", 1, k=2)
    assert card.dead and card.fraction_active == 0.0
    np.testing.assert_array_equal(card.quantiles, np.zeros(5))
    assert card.top.tolist() == [0, 1]  # all tied at 0: index order


class _Digits(torch.utils.data.Dataset):
    """Items (image, label); item 3 cannot be read."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i == 3:
            raise OSError("corrupt file")
        return self.x[i], int(self.y[i])


def test_broken_images_are_left_out(seq_cnn):
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    x[3] = 50.0  # would be the top image if it could be read
    y = torch.arange(16) % 3
    card = channel_card(seq_cnn, _Digits(x, y), "3", 1, k=16)
    assert 3 not in card.top.tolist() and len(card.top) == 15
    assert card.n_images == 16 and card.n_valid == 15
    assert not card.valid[3] and np.isnan(card.max_values[3])
    mx = np.delete(card.max_values, 3)
    assert card.fraction_active == pytest.approx(np.mean(mx > 0))
    labels = np.delete(y.numpy(), 3)
    np.testing.assert_allclose(card.by_class, [mx[labels == c].mean() for c in range(3)], rtol=1e-6)
