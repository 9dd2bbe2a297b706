"""Tests for cnnwidgets.core.activations: map statistics, channel order, top images, map codes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.core.activations import map_stats, maps_codes, order_channels, top_channels, top_images
from cnnwidgets.core.filters import FilterTiles

from ..conftest import hook_count, requires_grad_flags, training_flags


def maps(*rows) -> torch.Tensor:
    """C x 1 x W maps from lists of values."""
    return torch.tensor(rows, dtype=torch.float32)[:, None, :]


# ---------------------------------------------------------------- map_stats
def test_map_stats_known_values():
    acts = torch.tensor(
        [
            [[1.0, 2.0], [3.0, 6.0]],  # mean 3, max 6, min 1
            [[-1.0, -1.0], [-1.0, -5.0]],  # mean -2, max -1, min -5
            [[0.0, 0.0], [0.0, 0.0]],
        ]
    )
    s = map_stats(acts)
    assert s.dtype == np.float32 and s.shape == (3, 3)
    np.testing.assert_array_equal(s, [[3, 6, 1], [-2, -1, -5], [0, 0, 0]])


def test_map_stats_accepts_grad_tensors_and_rejects_batches():
    acts = torch.ones(2, 3, 3, requires_grad=True) * 2
    np.testing.assert_array_equal(map_stats(acts), [[2, 2, 2], [2, 2, 2]])
    with pytest.raises(ValueError, match=r"C x H x W.*\(1, 2, 3, 3\).*acts\[0\]"):
        map_stats(torch.zeros(1, 2, 3, 3))


# ---------------------------------------------------------------- order_channels / top_channels
STATS = np.array(
    [
        # mean, max, min
        [1.0, 5.0, 0.0],
        [3.0, 2.0, 0.0],
        [3.0, 5.0, 0.0],
        [0.5, 9.0, 0.0],
        [2.0, 2.0, 0.0],
    ],
    np.float32,
)


def test_order_channels():
    for by, expected in (("index", [0, 1, 2, 3, 4]), ("max", [3, 0, 2, 1, 4]), ("mean", [1, 2, 4, 0, 3])):
        got = order_channels(STATS, by)
        assert got.dtype == np.int64
        assert got.tolist() == expected, by  # descending, ties (max 5, 5 and 2, 2; mean 3, 3) by index
    assert order_channels(np.array([[np.nan, np.nan, 0], [1, 1, 0]]), "max").tolist() == [1, 0]
    with pytest.raises(ValueError, match="'index', 'mean' or 'max'.*'min'"):
        order_channels(STATS, "min")
    with pytest.raises(ValueError, match=r"\(C, 3\)"):
        order_channels(np.zeros(5), "max")


def test_top_channels():
    acts = maps([0, 5], [1, 2], [5, 0], [9, -9], [2, 2])  # max 5, 2, 5, 9, 2; mean 2.5, 1.5, 2.5, 0, 2
    assert top_channels(acts, 2).tolist() == [3, 0]
    assert top_channels(acts, 3, by="mean").tolist() == [0, 2, 4]
    assert top_channels(acts, 2, by="index").tolist() == [0, 1]
    got = top_channels(acts, 99)
    assert got.dtype == np.int64 and got.tolist() == [3, 0, 2, 1, 4]  # clipped to C; ties in index order
    with pytest.raises(ValueError, match="k must be at least 1, got 0"):
        top_channels(acts, 0)
    with pytest.raises(TypeError, match="k must be an int"):
        top_channels(acts, 2.0)


# ---------------------------------------------------------------- top_images
class Probe(nn.Module):
    """1x1 identity conv (channel c of the output is channel c of the image), ReLU, then a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3)[:, :, None, None])
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(3 * 4 * 4, 2))

    def forward(self, x):
        return self.head(self.relu(self.conv(x)))


def probe_images() -> torch.Tensor:
    """7 images 3 x 4 x 4: image i has a single pixel i + 1 in channel i % 3.

    Image 0 also has 0.5 everywhere else in channel 0, so by mean it leads channel 0:
    channel 0 max: image 6 -> 7, 3 -> 4, 0 -> 1; mean: 0 -> 8.5/16, 6 -> 7/16, 3 -> 4/16.
    """
    x = torch.zeros(7, 3, 4, 4)
    for i in range(7):
        x[i, i % 3, i % 4, (2 * i) % 4] = i + 1
    x[0, 0] += 0.5
    x[0, 0, 0, 0] = 1.0
    return x


def test_top_images_known_answer():
    net, x = Probe(), probe_images()
    idx, scores = top_images(net, x, "relu", channel=0, k=3, batch_size=2)
    assert idx.dtype == np.int64 and scores.dtype == np.float32
    assert idx.tolist() == [6, 3, 0] and scores.tolist() == [7.0, 4.0, 1.0]
    idx, scores = top_images(net, x, "conv", channel=0, k=3, by="mean", batch_size=3)
    assert idx.tolist() == [0, 6, 3]
    np.testing.assert_allclose(scores, [8.5 / 16, 7 / 16, 4 / 16], rtol=1e-6)
    idx, _ = top_images(net, x, "conv", channel=1, k=2)
    assert idx.tolist() == [4, 1]
    # k beyond the images that use the channel: zeros tie, index order; k > N clips to N
    idx, scores = top_images(net, x, "relu", channel=2, k=100, batch_size=4)
    assert idx.tolist() == [5, 2, 0, 1, 3, 4, 6] and scores.tolist() == [6, 3, 0, 0, 0, 0, 0]


def test_top_images_match_direct_computation_and_progress(seq_cnn):
    x = torch.randn(11, 1, 8, 8, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        a = seq_cnn[:4](x)[:, 5].flatten(1)
    calls = []
    for by, ref in (("max", a.amax(dim=1)), ("mean", a.mean(dim=1))):
        calls.clear()
        idx, scores = top_images(
            seq_cnn, x, "3", 5, k=11, by=by, batch_size=4, progress=lambda d, t: calls.append((d, t)), cache=False
        )
        assert idx.tolist() == torch.argsort(ref, descending=True, stable=True).tolist()
        np.testing.assert_allclose(scores, ref.numpy()[idx], rtol=1e-6)
        assert calls == [(4, 11), (8, 11), (11, 11)]  # batch_size does not divide N
    one, _ = top_images(seq_cnn, x, "3", 5, k=11, batch_size=1, cache=False)
    whole, _ = top_images(seq_cnn, x, "3", 5, k=11, batch_size=256, cache=False)
    assert one.tolist() == whole.tolist()


def test_top_images_uint8_with_mean_std_equals_float(seq_cnn):
    rng = np.random.default_rng(13)
    raw = rng.integers(0, 256, (9, 8, 8, 1), dtype=np.uint8)
    x = (torch.from_numpy(raw).permute(0, 3, 1, 2).float() / 255 - 0.2) / 0.5
    expected = top_images(seq_cnn, x, "1", 2, k=4)
    got = top_images(seq_cnn, raw, "1", 2, k=4, mean=0.2, std=0.5, batch_size=4)
    assert got[0].tolist() == expected[0].tolist()
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)
    # a single C x H x W float image is one batch of one
    idx, scores = top_images(seq_cnn, x[3], "1", 2)
    with torch.no_grad():
        direct = seq_cnn.eval()[:2](x[3:4])[0, 2].max().item()
    assert idx.tolist() == [0] and scores.tolist() == [pytest.approx(direct)]


def test_top_images_stops_after_layer_and_leaves_model_as_found():
    net, x = Probe(), probe_images()
    reference = copy.deepcopy(net).eval()
    net.train()
    net.conv.weight.requires_grad_(False)
    before = (training_flags(net), requires_grad_flags(net), hook_count(net))
    calls = []
    handle = net.head.register_forward_hook(lambda *a: calls.append(1))
    got = top_images(net, x, "relu", 1, k=7, batch_size=3)
    handle.remove()
    assert calls == []  # the head never ran
    assert (training_flags(net), requires_grad_flags(net), hook_count(net)) == before
    expected = top_images(reference, x, "relu", 1, k=7, batch_size=3)
    assert got[0].tolist() == expected[0].tolist() and got[1].tolist() == expected[1].tolist()


def test_top_images_train_mode_batchnorm_equals_eval(tiny_resnet, rgb_batch):
    x = torch.cat([rgb_batch, rgb_batch.flip(2), rgb_batch * 0.5])
    expected = top_images(tiny_resnet, x, "layer1.0.bn2", 3, k=6)
    tiny_resnet.train()
    mean_before = tiny_resnet.layer1[0].bn2.running_mean.clone()
    got = top_images(tiny_resnet, x, "layer1.0.bn2", 3, k=6, batch_size=4)
    assert got[0].tolist() == expected[0].tolist()
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-6)
    assert tiny_resnet.training and torch.equal(tiny_resnet.layer1[0].bn2.running_mean, mean_before)


def test_top_images_errors(seq_cnn, gray_batch):
    with pytest.raises(ValueError, match=r"channel must be in 0\.\.3 .*4 channels.*got 4"):
        top_images(seq_cnn, gray_batch, "0", 4)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        top_images(seq_cnn, gray_batch, "0", -1)
    with pytest.raises(ValueError, match=r"4-D.*\(1, 54\)"):
        top_images(seq_cnn, gray_batch, "5", 0)
    with pytest.raises(ValueError, match="not in the model"):
        top_images(seq_cnn, gray_batch, "conv9", 0)
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_images(seq_cnn, gray_batch, "0", 0, k=0)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        top_images(seq_cnn, gray_batch, "0", 0, batch_size=0)
    with pytest.raises(ValueError, match="by must be 'max' or 'mean'"):
        top_images(seq_cnn, gray_batch, "0", 0, by="min")
    with pytest.raises(TypeError, match="channel must be an int"):
        top_images(seq_cnn, gray_batch, "0", "0")
    with pytest.raises(ValueError, match="empty"):
        top_images(seq_cnn, gray_batch[:0], "0", 0)
    assert hook_count(seq_cnn) == 0 and seq_cnn.training


# ---------------------------------------------------------------- maps_codes
def test_maps_codes_shared_and_per_map():
    acts = maps([0, 1, 2], [0, 2, 4])
    shared = maps_codes(acts)
    assert isinstance(shared, FilterTiles) and not shared.symmetric
    assert shared.codes.dtype == np.uint8 and shared.codes.shape == (2, 1, 3)
    # one range 0..4 for both maps: x / 4 * 254, rounded
    assert shared.codes[:, 0].tolist() == [[0, 64, 127], [0, 127, 254]]
    np.testing.assert_array_equal(shared.stats, [[0, 2], [0, 4]])
    per_map = maps_codes(acts, "per_map")
    assert per_map.codes[:, 0].tolist() == [[0, 127, 254], [0, 127, 254]]
    assert (per_map.out_channels, per_map.in_channels) == (2, 1)


def test_maps_codes_dead_and_constant_maps():
    acts = maps([0, 0, 0], [0, 1, 2], [3, 3, 3])
    assert maps_codes(acts).codes[:, 0].tolist() == [[0, 0, 0], [0, 85, 169], [254, 254, 254]]
    # per map: a dead (all-zero) map is black, another constant map has no range -> middle gray
    assert maps_codes(acts, "per_map").codes[:, 0].tolist() == [[0, 0, 0], [0, 127, 254], [127, 127, 127]]
    # all maps dead: black on the shared scale too
    assert maps_codes(torch.zeros(3, 2, 2)).codes.max() == 0


def test_maps_codes_errors():
    with pytest.raises(ValueError, match="'shared' or 'per_map'.*'tile'"):
        maps_codes(torch.zeros(2, 3, 3), "tile")
    with pytest.raises(ValueError, match="C x H x W"):
        maps_codes(torch.zeros(3, 3))
