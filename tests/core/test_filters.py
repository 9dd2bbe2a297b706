"""Tests for cnnwidgets.core.filters: quantized kernel tiles and the grid renderer."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from cnnwidgets.core.colormaps import MAX_CODE, MID_CODE, NONFINITE_CODE, diverging_lut, gray_lut, lut
from cnnwidgets.core.filters import (
    FilterTiles,
    conv_weight,
    first_conv_layer,
    grid_shape,
    kernel_tiles,
    render_grid,
)

BG = (255, 255, 255)


def w4(values, shape=None) -> torch.Tensor:
    t = torch.tensor(values, dtype=torch.float32)
    return t.reshape(shape) if shape is not None else t.reshape(1, 1, 1, -1)


def ideal_codes(w: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map lo -> 0, hi -> 254, rounded to nearest (float64)."""
    return np.floor((w.astype(np.float64) - lo) / (hi - lo) * MAX_CODE + 0.5).astype(int)


# ---------------------------------------------------------------- kernel_tiles: values
def test_known_codes_gray():
    t = kernel_tiles(w4([-1.0, 0.0, 2.0]))
    # lo=-1, hi=2: (w + 1) / 3 * 254 = 0, 84.67, 254 -> 0, 85, 254
    assert t.codes.dtype == np.uint8
    assert t.codes.tolist() == [[[0, 85, 254]]]
    assert t.stats.tolist() == [[-1.0, 2.0]]
    assert t.symmetric is False and t.n_nonfinite == 0


def test_known_codes_symmetric():
    t = kernel_tiles(w4([-1.0, 0.0, 2.0]), symmetric=True)
    # zero -> 127, largest magnitude 2 -> 127 codes: -1 -> 127 - 63.5 = 63.5 -> 64 (half up), 2 -> 254
    assert t.codes.tolist() == [[[64, 127, 254]]]
    t = kernel_tiles(w4([-4.0, -2.0, 0.0, 1.0]), symmetric=True)
    # -4 -> 0, -2 -> 63.5 -> 64, 0 -> 127, 1 -> 127 + 31.75 = 158.75 -> 159
    assert t.codes.tolist() == [[[0, 64, 127, 159]]]


def test_known_codes_two_tiles_global_vs_tile():
    w = w4([[0.0, 1.0], [10.0, 20.0]], (2, 1, 1, 2))
    g = kernel_tiles(w)  # range 0..20: 0, 12.7 -> 13, 127, 254
    assert g.codes.reshape(-1).tolist() == [0, 13, 127, 254]
    t = kernel_tiles(w, normalize="tile")
    assert t.codes.reshape(-1).tolist() == [0, 254, 0, 254]
    assert t.stats.tolist() == [[0.0, 1.0], [10.0, 20.0]]


def test_random_global_matches_linear_map():
    w = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    t = kernel_tiles(w)
    assert t.codes.shape == (12, 5, 5)
    wn = w.numpy()
    exp = ideal_codes(wn, wn.min(), wn.max()).reshape(12, 5, 5)
    assert np.abs(t.codes.astype(int) - exp).max() <= 1
    assert np.mean(t.codes == exp) > 0.99
    assert t.codes.min() == 0 and t.codes.max() == MAX_CODE


def test_per_filter_each_spans_full_range():
    w = torch.randn(5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    w[2] *= 100  # one filter much larger: with global scaling it would dominate
    t = kernel_tiles(w, normalize="filter")
    per_filter = t.codes.reshape(5, -1)  # tiles are filter-major: 3 consecutive tiles per filter
    assert per_filter.min(axis=1).tolist() == [0] * 5
    assert per_filter.max(axis=1).tolist() == [MAX_CODE] * 5
    # within filter 0, codes follow its own linear map
    w0 = w[0].numpy()
    assert np.abs(per_filter[0].astype(int) - ideal_codes(w0, w0.min(), w0.max()).reshape(-1)).max() <= 1
    g = kernel_tiles(w, normalize="global").codes.reshape(5, -1)
    assert int(g[0].max()) - int(g[0].min()) < 10  # squeezed by filter 2's range


def test_per_tile_each_spans_full_range():
    w = torch.randn(3, 4, 3, 3, generator=torch.Generator().manual_seed(2))
    w[1, 2] *= 1000
    t = kernel_tiles(w, normalize="tile")
    flat = t.codes.reshape(12, -1)
    assert flat.min(axis=1).tolist() == [0] * 12
    assert flat.max(axis=1).tolist() == [MAX_CODE] * 12
    # per filter, not every tile spans the range
    f = kernel_tiles(w, normalize="filter").codes.reshape(12, -1)
    assert f[4:8].max(axis=1).tolist().count(MAX_CODE) == 1


def test_per_filter_symmetric():
    w = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(3))
    w[3] *= 50
    t = kernel_tiles(w, normalize="filter", symmetric=True)
    per_filter = t.codes.reshape(4, -1).astype(int)
    # the largest magnitude of each filter reaches an end of the scale
    assert (np.abs(per_filter - MID_CODE).max(axis=1) == MID_CODE).all()
    signs = np.sign(w.reshape(4, -1).numpy())
    assert np.all(np.sign(per_filter - MID_CODE)[signs > 0] >= 0)
    assert np.all(np.sign(per_filter - MID_CODE)[signs < 0] <= 0)


def test_constant_weights_mid_code_no_warnings():
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        for normalize in ("global", "filter", "tile"):
            t = kernel_tiles(torch.full((3, 2, 3, 3), 0.25), normalize=normalize)
            assert np.all(t.codes == MID_CODE), normalize
            assert np.all(t.stats == 0.25)
            z = kernel_tiles(torch.zeros(3, 2, 3, 3), normalize=normalize, symmetric=True)
            assert np.all(z.codes == MID_CODE), normalize


def test_constant_positive_symmetric_is_top_of_scale():
    # on a diverging scale zero is neutral: an all-positive constant is the largest magnitude
    t = kernel_tiles(torch.full((1, 1, 2, 2), 0.5), symmetric=True)
    assert np.all(t.codes == MAX_CODE)
    t = kernel_tiles(torch.full((1, 1, 2, 2), -0.5), symmetric=True)
    assert np.all(t.codes == 0)


def test_constant_tile_among_varying_tiles():
    w = torch.zeros(2, 1, 2, 2)
    w[1] = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w[0] = 7.0
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        t = kernel_tiles(w, normalize="tile")
    assert np.all(t.codes[0] == MID_CODE)
    # 1..4: 0, 84.67 -> 85, 169.33 -> 169, 254
    assert t.codes[1].tolist() == [[0, 85], [169, 254]]


def test_nonfinite_weights():
    w = w4([-1.0, float("nan"), 0.0, float("inf"), 2.0, float("-inf")])
    with pytest.warns(RuntimeWarning, match="3 of 6 weights"):
        t = kernel_tiles(w)
    # finite range -1..2 as in test_known_codes_gray
    assert t.codes.tolist() == [[[0, NONFINITE_CODE, 85, NONFINITE_CODE, 254, NONFINITE_CODE]]]
    assert t.stats.tolist() == [[-1.0, 2.0]]
    assert t.n_nonfinite == 3


def test_nonfinite_symmetric_and_per_tile():
    nan, inf = float("nan"), float("inf")
    w = torch.tensor([[1.0, -3.0, nan], [nan, nan, -inf], [0.0, 6.0, inf]]).reshape(3, 1, 1, 3)
    with pytest.warns(RuntimeWarning):
        t = kernel_tiles(w, normalize="tile", symmetric=True)
    # tile 0: max |w| = 3: 1 -> 127 + 42.33 = 169.33 -> 169, -3 -> 0
    assert t.codes.reshape(3, 3).tolist() == [
        [169, 0, NONFINITE_CODE],
        [NONFINITE_CODE] * 3,
        [MID_CODE, MAX_CODE, NONFINITE_CODE],
    ]
    assert t.stats[0].tolist() == [-3.0, 1.0]
    assert np.isnan(t.stats[1]).all()  # a tile with no finite weight
    assert t.stats[2].tolist() == [0.0, 6.0]


def test_nonfinite_in_large_layer_only_marks_those():
    w = torch.randn(8, 8, 3, 3, generator=torch.Generator().manual_seed(4))
    clean = kernel_tiles(w).codes.copy()
    tile = 3 * 8 + 5
    assert w.min() < w[3, 5, 1, 2] < w.max()  # replacing it leaves the range unchanged
    w[3, 5, 1, 2] = float("nan")
    with pytest.warns(RuntimeWarning, match="1 of 576"):
        t = kernel_tiles(w)
    assert t.n_nonfinite == 1
    assert t.codes[tile, 1, 2] == NONFINITE_CODE
    mask = np.ones_like(clean, bool)
    mask[tile, 1, 2] = False
    np.testing.assert_array_equal(t.codes[mask], clean[mask])


# ---------------------------------------------------------------- kernel_tiles: modes and layout
def test_kernel_mode_filter_major_and_tile_index():
    out_c, in_c = 3, 4
    # each kernel constant-free and identifiable: weight[o, i] = 10 * o + i + ramp
    ramp = torch.tensor([[0.0, 0.1], [0.2, 0.3]])
    w = torch.stack([torch.stack([10 * o + i + ramp for i in range(in_c)]) for o in range(out_c)])
    t = kernel_tiles(w, normalize="tile")
    st = kernel_tiles(w)
    assert isinstance(t, FilterTiles)
    assert t.n_tiles == 12 and t.tile_shape == (2, 2)
    assert (t.out_channels, t.in_channels, t.mode) == (3, 4, "kernel")
    for tile in range(12):
        o, i = t.tile_index(tile)
        assert (o, i) == (tile // in_c, tile % in_c)
        assert t.stats[tile, 0] == pytest.approx(10 * o + i)
        assert t.stats[tile, 1] == pytest.approx(10 * o + i + 0.3)
        # global codes increase with 10 * o + i
        assert st.codes[tile, 0, 0] == pytest.approx((10 * o + i) / 23.3 * 254, abs=1)
    assert t.tile_index(7) == (1, 3)


def test_rgb_mode_codes_layout():
    w = torch.randn(5, 3, 2, 4, generator=torch.Generator().manual_seed(5))
    t = kernel_tiles(w, mode="rgb")
    k = kernel_tiles(w, mode="kernel")
    assert t.codes.shape == (5, 2, 4, 3) and t.codes.dtype == np.uint8
    assert t.n_tiles == 5 and t.tile_shape == (2, 4)
    assert t.tile_index(3) == (3, -1)
    # same global scale: rgb codes[o, y, x, c] == kernel code of weight[o, c, y, x]
    for o in range(5):
        for c in range(3):
            np.testing.assert_array_equal(t.codes[o, :, :, c], k.codes[o * 3 + c])
    wn = w.numpy().reshape(5, -1)
    np.testing.assert_allclose(t.stats, np.stack([wn.min(1), wn.max(1)], 1))


def test_rgb_mode_tile_normalization_is_per_filter():
    w = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(6))
    a = kernel_tiles(w, mode="rgb", normalize="tile")
    b = kernel_tiles(w, mode="rgb", normalize="filter")
    np.testing.assert_array_equal(a.codes, b.codes)
    flat = a.codes.reshape(4, -1)
    assert flat.min(1).tolist() == [0] * 4 and flat.max(1).tolist() == [MAX_CODE] * 4


@pytest.mark.parametrize("in_c", [1, 2, 4])
def test_rgb_mode_needs_three_inputs(in_c):
    with pytest.raises(ValueError, match="3 channels"):
        kernel_tiles(torch.randn(2, in_c, 3, 3), mode="rgb")


def test_2048_tiles():
    w = torch.randn(64, 32, 10, 10, generator=torch.Generator().manual_seed(7))
    t = kernel_tiles(w)
    assert t.n_tiles == 2048
    assert t.codes.shape == (2048, 10, 10)
    assert t.stats.shape == (2048, 2) and t.stats.dtype == np.float32
    assert t.tile_index(2047) == (63, 31)
    np.testing.assert_allclose(t.stats[2047], [w[63, 31].min(), w[63, 31].max()])


@pytest.mark.parametrize(
    "kwargs,match",
    [({"mode": "gray"}, "mode"), ({"normalize": "layer"}, "normalize")],
)
def test_kernel_tiles_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kernel_tiles(torch.randn(2, 1, 3, 3), **kwargs)


@pytest.mark.parametrize("bad", [torch.randn(2, 3, 3), np.zeros((1, 1, 3, 3)), torch.randn(1, 1, 1, 3, 3)])
def test_kernel_tiles_needs_4d_tensor(bad):
    with pytest.raises(ValueError, match="4-D"):
        kernel_tiles(bad)


def test_kernel_tiles_does_not_modify_weight():
    w = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(8))
    w[0, 0, 0, 0] = float("nan")
    before = w.clone()
    with pytest.warns(RuntimeWarning):
        kernel_tiles(w, normalize="tile", symmetric=True)
    assert torch.equal(w.nan_to_num(5.0), before.nan_to_num(5.0))


# ---------------------------------------------------------------- conv_weight / first_conv_layer
def test_conv_weight_conv2d(seq_cnn):
    w = conv_weight(seq_cnn, "3")
    assert w.shape == (6, 4, 3, 3) and w.dtype == torch.float32
    assert not w.requires_grad
    assert torch.equal(w, seq_cnn[3].weight.detach())


def test_conv_weight_double_and_grouped():
    net = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2).double())
    w = conv_weight(net, "0")
    assert w.dtype == torch.float32 and w.shape == (6, 2, 3, 3)


def test_conv_weight_conv_transpose_out_major():
    torch.manual_seed(9)
    net = nn.Sequential(nn.ConvTranspose2d(2, 5, (3, 4)))
    raw = net[0].weight  # in x out x kh x kw = 2 x 5 x 3 x 4
    assert raw.shape == (2, 5, 3, 4)
    w = conv_weight(net, "0")
    assert w.shape == (5, 2, 3, 4)
    assert w[4, 1, 2, 3] == raw[1, 4, 2, 3]
    assert w[0, 1, 0, 2] == raw[1, 0, 0, 2]
    assert torch.equal(w, raw.detach().transpose(0, 1))
    assert kernel_tiles(w).n_tiles == 10


def test_conv_weight_conv_transpose_grouped():
    torch.manual_seed(10)
    net = nn.Sequential(nn.ConvTranspose2d(4, 6, 2, groups=2))
    raw = net[0].weight  # 4 x 3 x 2 x 2: input i of group g -> outputs g*3 .. g*3+2
    w = conv_weight(net, "0")
    assert w.shape == (6, 2, 2, 2)
    # output channel 4 = group 1, local output 1; its inputs are 2 and 3 (local 0 and 1)
    assert torch.equal(w[4, 0], raw[2, 1].detach())
    assert torch.equal(w[4, 1], raw[3, 1].detach())
    assert torch.equal(w[0, 1], raw[1, 0].detach())


def test_conv_weight_wrong_layer(seq_cnn):
    with pytest.raises(ValueError, match="ReLU"):
        conv_weight(seq_cnn, "1")
    with pytest.raises(ValueError, match="'0', '3'"):
        conv_weight(seq_cnn, "conv")


def test_first_conv_layer(seq_cnn, tiny_resnet):
    assert first_conv_layer(seq_cnn) == "0"
    assert first_conv_layer(tiny_resnet) == "conv1"


def test_first_conv_layer_none_names_types():
    with pytest.raises(ValueError, match="Flatten, Linear, ReLU"):
        first_conv_layer(nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.ReLU()))
    with pytest.raises(ValueError, match="Linear"):
        first_conv_layer(nn.Linear(2, 2))


# ---------------------------------------------------------------- grid_shape
@pytest.mark.parametrize(
    "n,columns,expected",
    [
        (0, None, (0, 0)),
        (1, None, (1, 1)),
        (4, None, (2, 2)),
        (5, None, (2, 3)),
        (10, None, (3, 4)),
        (2048, None, (45, 46)),
        (10, 3, (4, 3)),
        (10, 10, (1, 10)),
        (10, 50, (1, 10)),  # no empty columns
        (7, 0, (3, 3)),  # 0 = automatic
    ],
)
def test_grid_shape(n, columns, expected):
    assert grid_shape(n, columns) == expected


# ---------------------------------------------------------------- render_grid
def test_render_grid_geometry_known():
    codes = np.array([[[0, 254]], [[254, 0]], [[100, 200]]], np.uint8)  # 3 tiles of 1 x 2
    img = render_grid(codes, gray_lut(), columns=2, zoom=2, padding=1, background=(9, 8, 7))
    # 2 columns x (2 * 2 + 1) - 1 = 9 wide, 2 rows x (1 * 2 + 1) - 1 = 5 high
    assert img.shape == (5, 9, 3) and img.dtype == np.uint8
    white, black = [255, 255, 255], [0, 0, 0]
    assert img[0, 0].tolist() == black and img[1, 1].tolist() == black  # tile 0 pixel 0, zoomed
    assert img[0, 2].tolist() == white and img[1, 3].tolist() == white  # tile 0 pixel 1
    assert img[0, 4].tolist() == [9, 8, 7]  # padding column
    assert img[2, 0].tolist() == [9, 8, 7]  # padding row
    assert img[0, 5].tolist() == white  # tile 1 at row 0, column 1
    assert img[3, 0].tolist() == gray_lut()[100].tolist()  # tile 2 at row 1, column 0
    assert img[4, 3].tolist() == gray_lut()[200].tolist()
    assert (img[3:, 5:] == [9, 8, 7]).all()  # unused trailing cell


def test_render_grid_tile_positions():
    n, kh, kw = 7, 2, 3
    codes = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None] * 30, kh * kw, axis=1).reshape(n, kh, kw)
    table = gray_lut()
    for cols in (1, 3, 7):
        img = render_grid(codes, table, columns=cols, zoom=1, padding=2)
        rows = math.ceil(n / cols)
        assert img.shape == (rows * (kh + 2) - 2, cols * (kw + 2) - 2, 3)
        for t in range(n):
            y, x = (t // cols) * (kh + 2), (t % cols) * (kw + 2)
            assert (img[y : y + kh, x : x + kw] == table[t * 30]).all(), (cols, t)


def test_render_grid_zoom_repeats_pixels():
    codes = np.array([[[1, 2], [3, 4]]], np.uint8)
    img = render_grid(codes, gray_lut(), zoom=3, padding=5)  # one tile: padding never shows
    assert img.shape == (6, 6, 3)
    expected = np.kron(codes[0], np.ones((3, 3), int))
    np.testing.assert_array_equal(img[..., 0], gray_lut()[expected][..., 0])


def test_render_grid_rgb_and_magenta():
    codes = np.zeros((2, 1, 2, 3), np.uint8)
    codes[0, 0, 0] = (254, 0, 127)
    codes[0, 0, 1] = (254, NONFINITE_CODE, 0)
    codes[1, 0, 0] = (0, 254, 0)
    codes[1, 0, 1] = (0, 0, 254)
    img = render_grid(codes, gray_lut(), columns=2, padding=1)
    assert img.shape == (1, 5, 3)
    assert img[0].tolist() == [[255, 0, 128], [255, 0, 255], [255, 255, 255], [0, 255, 0], [0, 0, 255]]


def test_render_grid_colours_through_lut():
    codes = np.array([[[0, MID_CODE, MAX_CODE, NONFINITE_CODE]]], np.uint8)
    d = diverging_lut()
    img = render_grid(codes, d, padding=0)
    np.testing.assert_array_equal(img[0], d[[0, MID_CODE, MAX_CODE, NONFINITE_CODE]])
    assert img[0, 3].tolist() == [255, 0, 255]


def test_render_grid_empty():
    assert render_grid(np.zeros((0, 3, 3), np.uint8), gray_lut()).shape == (0, 0, 3)


@pytest.mark.parametrize("seed", range(8))
def test_render_grid_matches_reference(seed, reference_render):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 11))
    kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    rgb = bool(seed % 2)
    shape = (n, kh, kw, 3) if rgb else (n, kh, kw)
    codes = rng.integers(0, 256, size=shape).astype(np.uint8)  # includes some 255 (NaN) codes
    codes.reshape(-1)[0] = NONFINITE_CODE
    table = lut(["gray", "diverging", "viridis"][seed % 3])
    zoom = 1 + seed % 3
    padding = seed % 3
    columns = [None, 0, 1, 2, 4, 13][seed % 6]
    background = (int(rng.integers(0, 256)), 17, 200)
    img = render_grid(codes, table, columns=columns, zoom=zoom, padding=padding, background=background)
    ref = reference_render(codes, table, columns=columns, zoom=zoom, padding=padding, background=background)
    assert img.shape == ref.shape and img.dtype == np.uint8
    np.testing.assert_array_equal(img, ref)


def test_render_grid_from_kernel_tiles_end_to_end():
    w = torch.tensor([[-1.0, 0.0, 2.0]]).reshape(1, 1, 1, 3).repeat(2, 1, 1, 1)
    w[1] *= -1
    t = kernel_tiles(w)  # range -2..2: -1 -> 63.5 -> 64, 0 -> 127, 2 -> 254, 1 -> 190.5 -> 191, -2 -> 0
    assert t.codes.reshape(-1).tolist() == [64, 127, 254, 191, 127, 0]
    img = render_grid(t.codes, gray_lut(), columns=1, zoom=1, padding=1)
    assert img.shape == (3, 3, 3)
    g = gray_lut()
    assert img[0, :, 0].tolist() == [g[64, 0], g[127, 0], 255]
    assert img[1].tolist() == [[255] * 3] * 3
    assert img[2, 2].tolist() == [0, 0, 0]
