"""Tests for cnnwidgets.core.inputs: as_batch, to_display, check_stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnwidgets.core.inputs import as_batch, check_stats, to_display


def _hwc_image() -> np.ndarray:
    """2 x 2 x 3 uint8 image with known values; pixel (y, x) channel c."""
    return np.array(
        [[[0, 51, 255], [102, 153, 204]], [[255, 0, 51], [10, 20, 30]]],
        dtype=np.uint8,
    )


# ---------------------------------------------------------------- as_batch: uint8
def test_uint8_nhwc_to_nchw_scaled():
    img = _hwc_image()
    batch = np.stack([img, 255 - img])  # 2 x 2 x 2 x 3
    t = as_batch(batch)
    assert t.dtype == torch.float32 and t.shape == (2, 3, 2, 2)
    # t[n, c, y, x] == batch[n, y, x, c] / 255
    assert t[0, 2, 0, 0].item() == pytest.approx(1.0)
    assert t[0, 1, 0, 0].item() == pytest.approx(0.2)
    assert t[0, 0, 1, 1].item() == pytest.approx(10 / 255)
    assert t[1, 2, 0, 0].item() == pytest.approx(0.0)
    expected = torch.from_numpy(batch.astype(np.float64) / 255).permute(0, 3, 1, 2).float()
    torch.testing.assert_close(t, expected)


def test_uint8_normalized_with_scalar_stats():
    img = np.array([[0, 51], [255, 102]], dtype=np.uint8)[None]  # 1 x 2 x 2 (N x H x W)
    t = as_batch(img, mean=0.5, std=0.25)
    assert t.shape == (1, 1, 2, 2)
    # (v / 255 - 0.5) / 0.25: 0 -> -2, 51 -> -1.2, 255 -> 2, 102 -> -0.4
    torch.testing.assert_close(t[0, 0], torch.tensor([[-2.0, -1.2], [2.0, -0.4]]))


def test_uint8_normalized_per_channel():
    img = _hwc_image()  # H x W x C
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.1)
    t = as_batch(img, mean=mean, std=std)
    assert t.shape == (1, 3, 2, 2)
    # pixel (0, 0) = (0, 51, 255): ((0 - .1) / .5, (.2 - .2) / .25, (1 - .3) / .1)
    torch.testing.assert_close(t[0, :, 0, 0], torch.tensor([-0.2, 0.0, 7.0]))
    # pixel (1, 0) = (255, 0, 51): ((1 - .1) / .5, (0 - .2) / .25, (.2 - .3) / .1)
    torch.testing.assert_close(t[0, :, 1, 0], torch.tensor([1.8, -0.8, -1.0]))


def test_uint8_nhw_gray_stack():
    imgs = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    t = as_batch(imgs)
    assert t.shape == (2, 1, 4, 5)
    assert t[1, 0, 3, 4].item() == pytest.approx(39 / 255)


def test_uint8_hw_single_gray_image():
    t = as_batch(np.full((4, 6), 255, np.uint8))
    assert t.shape == (1, 1, 4, 6)
    assert torch.all(t == 1.0)


def test_uint8_tensor_treated_like_array():
    img = _hwc_image()
    torch.testing.assert_close(as_batch(torch.from_numpy(img)), as_batch(img))


def test_list_of_arrays_is_stacked():
    a = np.zeros((3, 3, 1), np.uint8)
    b = np.full((3, 3, 1), 255, np.uint8)
    t = as_batch([a, b])
    assert t.shape == (2, 1, 3, 3)
    assert t[0].max() == 0 and t[1].min() == 1


# ---------------------------------------------------------------- as_batch: float
def test_float_nchw_passthrough():
    x = torch.randn(2, 3, 5, 4)
    t = as_batch(x, mean=(0.5, 0.5, 0.5), std=(2.0, 2.0, 2.0))  # stats are for uint8 only
    assert t.shape == (2, 3, 5, 4) and t.dtype == torch.float32
    assert torch.equal(t, x)


def test_float_chw_gets_batch_dim():
    x = torch.randn(3, 5, 4)
    t = as_batch(x)
    assert t.shape == (1, 3, 5, 4)
    assert torch.equal(t[0], x)


def test_float64_numpy_to_float32():
    x = np.linspace(-1, 1, 2 * 1 * 3 * 3).reshape(2, 1, 3, 3)
    t = as_batch(x)
    assert t.dtype == torch.float32 and t.shape == (2, 1, 3, 3)
    np.testing.assert_allclose(t.numpy(), x, rtol=1e-6)


def test_device_argument():
    t = as_batch(torch.zeros(1, 1, 2, 2), device="meta")
    assert t.device == torch.device("meta")
    t = as_batch(np.zeros((1, 2, 2, 1), np.uint8), device="meta")
    assert t.device == torch.device("meta")


@pytest.mark.parametrize(
    "empty",
    [
        torch.zeros(0, 3, 4, 4),
        np.zeros((0, 3, 4, 4), np.float32),
        np.zeros((0, 4, 4, 3), np.uint8),
        np.zeros((0, 4, 4), np.uint8),
    ],
    ids=["float-tensor", "float-array", "uint8-nhwc", "uint8-nhw"],
)
def test_empty_raises_value_error(empty):
    with pytest.raises(ValueError, match="empty"):
        as_batch(empty)


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(1, 1, 2, 2, dtype=torch.int64),
        torch.zeros(1, 1, 2, 2, dtype=torch.int32),
        torch.zeros(1, 1, 2, 2, dtype=torch.bool),
        np.zeros((1, 2, 2, 1), np.int64),
        np.zeros((1, 2, 2, 1), np.uint16),
    ],
)
def test_integer_inputs_type_error(bad):
    with pytest.raises(TypeError, match="dtype"):
        as_batch(bad)


def test_non_array_type_error():
    with pytest.raises(TypeError, match="torch.Tensor or numpy.ndarray"):
        as_batch("image.png")


@pytest.mark.parametrize("shape", [(5,), (2, 3), (1, 1, 1, 2, 2)])
def test_float_wrong_dims(shape):
    with pytest.raises(ValueError, match="N x C x H x W"):
        as_batch(torch.zeros(shape))


def test_uint8_wrong_dims():
    with pytest.raises(ValueError):
        as_batch(np.zeros((1, 1, 2, 2, 1), np.uint8))


@pytest.mark.parametrize("mean,std", [((0.1, 0.2), (1.0, 1.0, 1.0)), ((0.1, 0.2, 0.3), (1.0, 1.0))])
def test_wrong_stats_length(mean, std):
    with pytest.raises(ValueError, match="one value per channel"):
        as_batch(_hwc_image(), mean=mean, std=std)


def test_stats_need_both_and_nonzero_std():
    with pytest.raises(ValueError, match="both"):
        as_batch(_hwc_image(), mean=0.5)
    with pytest.raises(ValueError, match="non-zero"):
        as_batch(_hwc_image(), mean=0.5, std=(1.0, 0.0, 1.0))


# ---------------------------------------------------------------- check_stats
def test_check_stats():
    m, s = check_stats(0.5, [1, 2, 3], 3)
    assert m.dtype == np.float32 and s.dtype == np.float32
    assert m.tolist() == [0.5, 0.5, 0.5] and s.tolist() == [1, 2, 3]
    assert check_stats(None, None, 3) == (None, None)


# ---------------------------------------------------------------- to_display
def test_round_trip_rgb_exact():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(3, 7, 5, 3), dtype=np.uint8)
    imgs[0, 0, 0] = (0, 128, 255)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = as_batch(imgs, mean=mean, std=std)
    back = to_display(x, mean=mean, std=std)
    assert back.dtype == np.uint8 and back.shape == imgs.shape
    np.testing.assert_array_equal(back, imgs)


def test_round_trip_gray_all_values():
    imgs = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    x = as_batch(imgs, mean=0.1307, std=0.3081)
    np.testing.assert_array_equal(to_display(x, mean=0.1307, std=0.3081), imgs)
    np.testing.assert_array_equal(to_display(as_batch(imgs)[0], mean=0.0, std=1.0), imgs[0])


def test_to_display_min_max_per_image():
    x = torch.tensor([[[[-1.0, 0.0], [1.0, 3.0]]], [[[10.0, 10.0], [10.0, 20.0]]]])  # 2 x 1 x 2 x 2
    out = to_display(x)
    assert out.shape == (2, 2, 2, 1) and out.dtype == np.uint8
    # image 0: (v + 1) / 4 * 255 -> 0, 63.75, 127.5, 255 -> rounded 0, 64, 128, 255 (round half to even: 127.5 -> 128)
    assert out[0, :, :, 0].tolist() == [[0, 64], [128, 255]]
    assert out[1, :, :, 0].tolist() == [[0, 0], [0, 255]]


def test_to_display_constant_image_no_nan():
    out = to_display(torch.full((1, 3, 2, 2), 0.7))
    assert out.shape == (1, 2, 2, 3)
    assert np.all(out == out.flat[0])


def test_to_display_clips_out_of_range():
    x = torch.tensor([[[[-0.5, 0.5, 1.5]]]])
    assert to_display(x, mean=0.0, std=1.0)[0, 0, :, 0].tolist() == [0, 128, 255]


def test_to_display_single_and_channel_handling():
    x = torch.rand(4, 3, 5)
    assert to_display(x).shape == (3, 5, 3)  # 4 channels -> first three
    two = torch.stack([torch.zeros(3, 5), torch.ones(3, 5)])  # 2 x 3 x 5 (C x H x W)
    out = to_display(two, mean=0.0, std=1.0)
    assert out.shape == (3, 5, 1) and np.all(out == 0)  # first channel only
    assert to_display(np.zeros((1, 1, 2, 2), np.float32), mean=0, std=1).shape == (1, 2, 2, 1)


def test_to_display_wrong_stats():
    with pytest.raises(ValueError):
        to_display(torch.zeros(1, 3, 2, 2), mean=(0.5, 0.5), std=(1.0, 1.0))
