"""Tests for the FilterGrid widget, in plain Python (no browser, no kernel)."""

from __future__ import annotations

import typing

import numpy as np
import pytest
import torch
import traitlets
from torch import nn

from cnnwidgets import FilterGrid
from cnnwidgets.core.colormaps import MAX_CODE, NONFINITE_CODE, diverging_lut, gray_lut
from cnnwidgets.core.filters import conv_weight, kernel_tiles, render_grid

MAGENTA = [255, 0, 255]


def sent(grid: FilterGrid, name: str) -> np.ndarray:
    """The array trait ``name`` as the page receives it: rebuilt from the serialized
    ``{view, dtype, shape}`` (js/src/lib/codecs.js: decodeArray reads the same three)."""
    msg = grid.get_state([name])[name]
    assert set(msg) == {"view", "dtype", "shape"}
    return np.frombuffer(bytes(msg["view"]), dtype=msg["dtype"]).reshape(msg["shape"])


def decode(grid: FilterGrid) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Rebuild what the front end receives: codes, stats and LUT, with their dtypes and shapes."""
    g = grid._grid
    shape = (g["n_tiles"], g["tile_h"], g["tile_w"]) + ((3,) if g["rgb"] else ())
    codes, stats, table = sent(grid, "_codes"), sent(grid, "_stats"), sent(grid, "_lut")
    assert codes.dtype == np.uint8 and codes.shape == shape
    assert stats.dtype == np.float32 and stats.shape == (g["n_tiles"], 2)
    assert table.dtype == np.uint8 and table.shape == (256, 3)
    return codes, stats, table, g


# ---------------------------------------------------------------- defaults
def test_default_layer_is_first_conv(seq_cnn, tiny_resnet):
    assert FilterGrid(seq_cnn).layer == "0"
    assert FilterGrid(tiny_resnet).layer == "conv1"


def test_layers_lists_conv_layers_only(seq_cnn, tiny_resnet):
    assert list(FilterGrid(seq_cnn).layers) == ["0", "3"]
    assert list(FilterGrid(tiny_resnet).layers) == [
        "conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2", "layer2.0.downsample.0",
    ]  # fmt: skip


def test_layers_is_read_only(seq_cnn):
    g = FilterGrid(seq_cnn)
    with pytest.raises(traitlets.TraitError):
        g.layers = ["1"]


def test_mode_default_rgb_for_three_inputs(nested_cnn):
    g = FilterGrid(nested_cnn)  # stem: 3 -> 4
    assert g.layer == "stem" and g.mode == "rgb"
    assert g.n_tiles == 4
    assert g._grid["rgb"] is True
    g2 = FilterGrid(nested_cnn, "block.conv1")  # 4 -> 5
    assert g2.mode == "kernel" and g2.n_tiles == 20


def test_mode_explicit_kernel_on_rgb_layer(nested_cnn):
    g = FilterGrid(nested_cnn, mode="kernel")
    assert g.mode == "kernel" and g.n_tiles == 12


def test_n_tiles_and_grid_metadata(seq_cnn):
    g = FilterGrid(seq_cnn, "3", columns=5)
    assert g.n_tiles == 24  # 6 filters x 4 input channels
    grid = g._grid
    assert grid["n_tiles"] == 24 and grid["columns"] == 5 and grid["rows"] == 5
    assert (grid["tile_h"], grid["tile_w"]) == (3, 3)
    assert (grid["out_channels"], grid["in_channels"]) == (6, 4)
    assert grid["rgb"] is False and grid["symmetric"] is False and grid["n_nonfinite"] == 0
    assert grid["label"] == "3 · Conv2d 4→6 · 3×3"


def test_auto_columns(seq_cnn):
    g = FilterGrid(seq_cnn, "3")
    assert g._grid["columns"] == 5 and g._grid["rows"] == 5  # ceil(sqrt(24)) = 5


def test_tile_at(seq_cnn, nested_cnn):
    g = FilterGrid(seq_cnn, "3")
    assert g.tile_at(0, 0) == 0 and g.tile_at(2, 3) == 11
    assert g.tiles.tile_index(g.tile_at(5, 1)) == (5, 1)
    assert FilterGrid(nested_cnn).tile_at(3) == 3  # rgb: one tile per filter


# ---------------------------------------------------------------- what is sent vs. to_image
@pytest.mark.parametrize(
    "fixture,kwargs",
    [
        ("seq_cnn", dict(layer="3", zoom=2)),
        ("seq_cnn", dict(layer="0", cmap="diverging", columns=3, zoom=1)),
        ("nested_cnn", dict(zoom=3)),  # rgb
        ("nested_cnn", dict(layer="block.conv2", normalize="tile", cmap="viridis", zoom=1)),
        ("tiny_resnet", dict(layer="layer2.0.downsample.0", normalize="filter", columns=7, zoom=2)),
    ],
)
def test_to_image_matches_bytes_and_render_grid(request, reference_render, fixture, kwargs):
    model = request.getfixturevalue(fixture)
    g = FilterGrid(model, **kwargs)
    img = g.to_image()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
    # 1) render_grid of its own tiles
    codes, stats, table, grid = decode(g)
    np.testing.assert_array_equal(codes, g.tiles.codes)
    np.testing.assert_array_equal(stats, g.tiles.stats)
    np.testing.assert_array_equal(
        img, render_grid(g.tiles.codes, table, columns=grid["columns"], zoom=g.zoom, padding=g.padding)
    )
    # 2) the image a slow independent renderer builds from the bytes the page receives
    ref = reference_render(codes, table, columns=grid["columns"], zoom=g.zoom, padding=g.padding)
    np.testing.assert_array_equal(img, ref)
    kh, kw = grid["tile_h"], grid["tile_w"]
    assert img.shape[:2] == (
        grid["rows"] * (kh * g.zoom + g.padding) - g.padding,
        grid["columns"] * (kw * g.zoom + g.padding) - g.padding,
    )


def test_sent_codes_are_the_layer_weights(seq_cnn):
    g = FilterGrid(seq_cnn, "3", normalize="filter")
    expected = kernel_tiles(seq_cnn[3].weight.detach(), normalize="filter")
    np.testing.assert_array_equal(sent(g, "_codes"), expected.codes)
    np.testing.assert_array_equal(sent(g, "_lut"), gray_lut())
    codes, stats, _, _ = decode(g)
    w = seq_cnn[3].weight.detach()
    assert stats[6].tolist() == pytest.approx([w[1, 2].min().item(), w[1, 2].max().item()])
    # per filter: the six filters each span the full code range
    per_filter = codes.reshape(6, -1)
    assert per_filter.min(1).tolist() == [0] * 6 and per_filter.max(1).tolist() == [MAX_CODE] * 6


def test_to_image_zoom_argument(seq_cnn):
    g = FilterGrid(seq_cnn, "0", zoom=4)  # 4 tiles of 3x3, 2 x 2 grid
    assert g.to_image().shape == (2 * (12 + 1) - 1, 2 * (12 + 1) - 1, 3)
    assert g.to_image(zoom=1).shape == (7, 7, 3)
    g.zoom = 2
    assert g.to_image().shape == (13, 13, 3)


def test_rgb_mode_uses_gray_lut_and_raw_channels(nested_cnn):
    g = FilterGrid(nested_cnn, cmap="diverging")
    assert g.mode == "rgb"
    np.testing.assert_array_equal(sent(g, "_lut"), gray_lut())
    assert g._grid["symmetric"] is False
    w = nested_cnn.stem.weight.detach()
    img = g.to_image(zoom=1)
    wn = w.numpy()
    # pixel (0, 0) of filter 0 has channel c = weight[0, c, 0, 0] scaled over the layer range
    expected = (wn[0, :, 0, 0] - wn.min()) / (wn.max() - wn.min()) * 255
    np.testing.assert_allclose(img[0, 0].astype(float), expected, atol=2)


# ---------------------------------------------------------------- updates
def test_changing_layer_updates_codes_and_grid(seq_cnn):
    g = FilterGrid(seq_cnn)
    codes0, grid0 = sent(g, "_codes"), dict(g._grid)
    g.layer = "3"
    assert sent(g, "_codes").shape != codes0.shape and g._grid != grid0
    np.testing.assert_array_equal(sent(g, "_codes"), kernel_tiles(conv_weight(seq_cnn, "3")).codes)
    assert g._grid["n_tiles"] == 24 and g.n_tiles == 24
    g.layer = "0"
    np.testing.assert_array_equal(sent(g, "_codes"), codes0)
    assert g._grid == grid0


def test_changing_normalize_updates_codes(seq_cnn):
    g = FilterGrid(seq_cnn, "3")
    before = sent(g, "_codes")
    g.normalize = "tile"
    assert not np.array_equal(sent(g, "_codes"), before)
    codes = sent(g, "_codes").reshape(24, -1)
    assert codes.min(1).tolist() == [0] * 24 and codes.max(1).tolist() == [MAX_CODE] * 24


def test_changing_cmap_updates_lut_codes_and_grid(seq_cnn):
    g = FilterGrid(seq_cnn, "3")
    before = sent(g, "_codes")
    g.cmap = "diverging"
    np.testing.assert_array_equal(sent(g, "_lut"), diverging_lut())
    assert g._grid["symmetric"] is True
    assert not np.array_equal(sent(g, "_codes"), before)
    # symmetric scale: zero weight -> neutral code 127
    w = conv_weight(seq_cnn, "3")
    np.testing.assert_array_equal(sent(g, "_codes"), kernel_tiles(w, symmetric=True).codes)
    codes = sent(g, "_codes").reshape(w.shape)
    wn = w.numpy()
    mag = np.abs(wn).max()
    np.testing.assert_allclose(codes.astype(float), 127 + wn / mag * 127, atol=1)
    g.cmap = "gray"
    np.testing.assert_array_equal(sent(g, "_codes"), before)
    np.testing.assert_array_equal(sent(g, "_lut"), gray_lut())


def test_changing_mode_updates_codes_and_grid(nested_cnn):
    g = FilterGrid(nested_cnn)
    assert g.mode == "rgb"
    g.mode = "kernel"
    assert g.n_tiles == 12 and g._grid["rgb"] is False and g._grid["n_tiles"] == 12
    assert sent(g, "_codes").shape == (12, 3, 3)
    g.mode = "rgb"
    assert g.n_tiles == 4 and sent(g, "_codes").shape == (4, 3, 3, 3)


def test_changing_columns_updates_grid(seq_cnn):
    g = FilterGrid(seq_cnn, "3")
    g.columns = 24
    assert g._grid["columns"] == 24 and g._grid["rows"] == 1
    assert g.to_image(zoom=1).shape == (3, 24 * 4 - 1, 3)


def test_layer_change_to_non_rgb_layer_switches_mode(nested_cnn):
    g = FilterGrid(nested_cnn, mode="rgb")
    g.layer = "block.conv1"
    assert g.mode == "kernel" and g.n_tiles == 20


def test_auto_mode_follows_layer_both_ways(nested_cnn):
    """Without an explicit mode, the default ('rgb' for 3-input layers) applies to every layer chosen."""
    g = FilterGrid(nested_cnn)
    assert g.mode == "rgb"
    g.layer = "block.conv1"
    assert g.mode == "kernel"
    g.layer = "stem"
    assert g.mode == "rgb"


def test_explicit_mode_is_kept(nested_cnn):
    g = FilterGrid(nested_cnn)
    g.mode = "kernel"  # user's choice
    g.layer = "block.conv1"
    g.layer = "stem"
    assert g.mode == "kernel"


def test_channel_reset_when_layer_has_fewer_filters(seq_cnn):
    g = FilterGrid(seq_cnn, "3")
    g.channel = 5
    g.layer = "0"  # 4 filters
    assert g.channel == -1
    g.channel = 3
    g.layer = "3"
    assert g.channel == 3


def test_refresh_after_in_place_weight_change(seq_cnn):
    g = FilterGrid(seq_cnn, "0")
    before = sent(g, "_codes")
    with torch.no_grad():
        seq_cnn[0].weight[0].neg_()
    np.testing.assert_array_equal(sent(g, "_codes"), before)  # nothing re-read yet
    g.refresh()
    assert not np.array_equal(sent(g, "_codes"), before)
    np.testing.assert_array_equal(sent(g, "_codes"), kernel_tiles(seq_cnn[0].weight.detach()).codes)


def test_refresh_picks_up_new_layers(seq_cnn):
    g = FilterGrid(seq_cnn)
    seq_cnn.append(nn.Conv2d(6, 2, 1))
    g.refresh()
    assert list(g.layers) == ["0", "3", "7"]
    g.layer = "7"
    assert g.n_tiles == 12


def test_conv_transpose_layer():
    torch.manual_seed(0)
    net = nn.Sequential(nn.ConvTranspose2d(2, 5, 3))
    g = FilterGrid(net)
    assert g.n_tiles == 10 and g.mode == "kernel"
    assert (g._grid["out_channels"], g._grid["in_channels"]) == (5, 2)
    assert "ConvTranspose2d" in g._grid["label"]


@pytest.mark.parametrize(
    ("conv", "label", "n_tiles"),
    [
        (nn.Conv2d(16, 32, 3, groups=4), "0 · Conv2d 16→32, groups 4 · 3×3", 32 * 4),  # each filter reads 4
        (nn.Conv2d(8, 8, 3, groups=8), "0 · Conv2d 8→8, depthwise · 3×3", 8),
        (nn.Conv2d(8, 16, 5, groups=8), "0 · Conv2d 8→16, depthwise · 5×5", 16),  # channel multiplier 2
        (nn.ConvTranspose2d(8, 12, 3, groups=4), "0 · ConvTranspose2d 8→12, groups 4 · 3×3", 12 * 2),
        (nn.Conv2d(16, 32, 1), "0 · Conv2d 16→32 · 1×1", 32 * 16),
    ],
    ids=["grouped", "depthwise", "depthwise-x2", "transpose-grouped", "plain"],
)
def test_grouped_convolutions_are_labelled_with_their_groups(conv, label, n_tiles):
    """The label names the layer's channels and its grouping, not one filter's input (issue #12):
    Conv2d(16, 32, groups=4) is no "Conv2d 4→32"."""
    g = FilterGrid(nn.Sequential(conv))
    try:
        assert g._grid["label"] == label
        assert g.n_tiles == n_tiles and g._grid["in_channels"] == n_tiles // g._grid["out_channels"]
    finally:
        g.close()


# ---------------------------------------------------------------- invalid values from Python
def test_unknown_layer_value_error_lists_names(seq_cnn):
    g = FilterGrid(seq_cnn)
    with pytest.raises(ValueError) as err:
        g.layer = "features.0"
    assert "'0'" in str(err.value) and "'3'" in str(err.value)
    assert g.layer == "0"
    with pytest.raises(ValueError, match="ReLU"):
        g.layer = "1"
    assert g.layer == "0"


@pytest.mark.parametrize("bad", [4, 10, -2])
def test_channel_out_of_range(seq_cnn, bad):
    g = FilterGrid(seq_cnn)  # 4 filters
    g.channel = 2
    with pytest.raises(ValueError, match="channel"):
        g.channel = bad
    assert g.channel == 2


@pytest.mark.parametrize("bad", [0, -1, 33])
def test_zoom_out_of_range(seq_cnn, bad):
    g = FilterGrid(seq_cnn)
    with pytest.raises(ValueError, match="zoom"):
        g.zoom = bad
    assert g.zoom == 4


def test_unknown_cmap(seq_cnn):
    g = FilterGrid(seq_cnn)
    before = sent(g, "_lut")
    with pytest.raises(ValueError, match="colormap"):
        g.cmap = "no-such-map"
    assert g.cmap == "gray"
    np.testing.assert_array_equal(sent(g, "_lut"), before)


def test_negative_columns(seq_cnn):
    g = FilterGrid(seq_cnn)
    with pytest.raises(ValueError, match="columns"):
        g.columns = -1
    assert g.columns == 0


def test_rgb_mode_on_non_rgb_layer(seq_cnn):
    g = FilterGrid(seq_cnn)
    with pytest.raises(ValueError, match="3 channels"):
        g.mode = "rgb"
    assert g.mode == "kernel"


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(layer="nope"), "'0', '3'"),
        (dict(layer="2"), "MaxPool2d"),
        (dict(zoom=0), "zoom"),
        (dict(cmap="nope"), "colormap"),
        (dict(mode="rgb"), "3 channels"),
        (dict(columns=-3), "columns"),
    ],
)
def test_constructor_invalid_values(seq_cnn, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FilterGrid(seq_cnn, **kwargs)


def test_invalid_enum_values_raise_value_error(seq_cnn):
    """Every other rejected value is a ValueError (InvalidValue); the enum traits should be too."""
    g = FilterGrid(seq_cnn)
    with pytest.raises(ValueError):
        g.normalize = "per-pixel"
    with pytest.raises(ValueError):
        g.mode = "bogus"
    assert (g.normalize, g.mode) == ("global", "kernel")


# ---------------------------------------------------------------- invalid values from the page
@pytest.mark.parametrize(
    "state,trait,old",
    [
        ({"layer": "nope"}, "layer", "3"),
        ({"layer": "1"}, "layer", "3"),
        ({"channel": 6}, "channel", -1),
        ({"zoom": 0}, "zoom", 4),
        ({"cmap": "nope"}, "cmap", "gray"),
        ({"mode": "rgb"}, "mode", "kernel"),
        ({"normalize": "nope"}, "normalize", "global"),
        ({"columns": -1}, "columns", 0),
    ],
)
def test_front_end_invalid_values_do_not_raise(seq_cnn, caplog, state, trait, old):
    g = FilterGrid(seq_cnn, "3")
    codes, grid = sent(g, "_codes"), dict(g._grid)
    assert g.last_error is None and g.control_errors == {}
    g.set_state(state)  # must not raise
    assert getattr(g, trait) == old
    assert g.last_error and isinstance(g.last_error, str)
    # a control's refused value is shown next to it on the page; a trait that is no control
    # (columns) is refused for that reason alone
    assert set(g.control_errors) == ({trait} if trait in g._page_writable else set())
    np.testing.assert_array_equal(sent(g, "_codes"), codes)
    assert g._grid == grid
    assert "ignored" in caplog.text


def test_front_end_error_message_names_valid_layers(seq_cnn):
    g = FilterGrid(seq_cnn)
    g.set_state({"layer": "nope"})
    assert "'nope'" in g.last_error and "'3'" in g.last_error


def test_front_end_mixed_update_rolls_back_all(nested_cnn):
    g = FilterGrid(nested_cnn, "block.conv1")
    g.set_state({"normalize": "tile", "zoom": 99})
    assert g.zoom == 4 and g.normalize == "global"
    assert g.last_error is not None


def test_front_end_valid_values_apply(nested_cnn):
    g = FilterGrid(nested_cnn)
    g.set_state({"layer": "block.conv2"})
    g.set_state({"channel": 4, "zoom": 7})
    assert g.layer == "block.conv2" and g.channel == 4 and g.zoom == 7
    assert g.last_error is None
    np.testing.assert_array_equal(sent(g, "_codes"), kernel_tiles(conv_weight(nested_cnn, "block.conv2")).codes)


def test_front_end_layer_and_channel_in_one_update(nested_cnn):
    """channel 4 is valid for the new layer (5 filters), though not for the old one (4 filters)."""
    g = FilterGrid(nested_cnn)
    g.set_state({"layer": "block.conv2", "channel": 4})
    assert g.last_error is None
    assert g.layer == "block.conv2" and g.channel == 4


# ---------------------------------------------------------------- bad models
@pytest.mark.parametrize("bad", [None, "model", torch.zeros(3)])
def test_no_model_type_error(bad):
    with pytest.raises(TypeError, match="torch.nn.Module"):
        FilterGrid(bad)


def test_state_dict_type_error(seq_cnn):
    with pytest.raises(TypeError, match="state_dict"):
        FilterGrid(seq_cnn.state_dict())


def test_model_without_conv_names_types():
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ValueError, match="Flatten, Linear, ReLU"):
        FilterGrid(net)


# ---------------------------------------------------------------- non-finite weights
def test_nan_weights_warn_and_draw_magenta(seq_cnn):
    with torch.no_grad():
        seq_cnn[3].weight[2, 1, 0, 2] = float("nan")
        seq_cnn[3].weight[5, 3, 2, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match="NaN or infinite"):
        g = FilterGrid(seq_cnn, "3", columns=4, zoom=1)
    assert g._grid["n_nonfinite"] == 2
    img = g.to_image()
    magenta = np.all(img == MAGENTA, axis=-1)
    assert magenta.sum() == 2
    # tile 2 * 4 + 1 = 9 sits at row 2, column 1; tile 5 * 4 + 3 = 23 at row 5, column 3 (cells 4 px)
    assert magenta[2 * 4 + 0, 1 * 4 + 2] and magenta[5 * 4 + 2, 3 * 4 + 0]
    codes, stats, _, _ = decode(g)
    assert codes[9, 0, 2] == NONFINITE_CODE and codes[23, 2, 0] == NONFINITE_CODE
    assert np.isfinite(stats).all()


def test_nan_weights_rgb_and_refresh(nested_cnn):
    g = FilterGrid(nested_cnn)
    assert not np.any(np.all(g.to_image() == MAGENTA, axis=-1))
    with torch.no_grad():
        nested_cnn.stem.weight[1, 2, 1, 1] = float("nan")  # blue channel of filter 1
    with pytest.warns(RuntimeWarning):
        g.refresh()
    img = g.to_image(zoom=1)
    magenta = np.all(img == MAGENTA, axis=-1)
    assert magenta.sum() == 1
    assert magenta[1, 4 + 1]  # 2 x 2 grid of 3x3 tiles, padding 1: filter 1 at column 1


# ---------------------------------------------------------------- model left alone
def test_errors_leave_model_untouched(tiny_resnet, count_hooks, flags):
    tiny_resnet.train()
    tiny_resnet.layer1.eval()
    tiny_resnet.conv1.weight.requires_grad_(False)
    modes = flags(tiny_resnet)
    grads = {n: p.requires_grad for n, p in tiny_resnet.named_parameters()}
    weights = {k: v.clone() for k, v in tiny_resnet.state_dict().items()}

    def check():
        assert count_hooks(tiny_resnet) == 0
        assert flags(tiny_resnet) == modes
        assert {n: p.requires_grad for n, p in tiny_resnet.named_parameters()} == grads

    for kwargs in (dict(layer="fc"), dict(layer="x"), dict(zoom=0), dict(cmap="x"), dict(layer="layer1.0.conv1", mode="rgb")):
        with pytest.raises(ValueError):
            FilterGrid(tiny_resnet, **kwargs)
        check()
    g = FilterGrid(tiny_resnet)
    check()
    for trait, value in (("layer", "bn1"), ("channel", 99), ("zoom", 0), ("cmap", "x"), ("columns", -1)):
        with pytest.raises(ValueError):
            setattr(g, trait, value)
        check()
        g.set_state({trait: value})
        check()
    g.layer = "layer2.0.conv2"
    g.mode = "kernel"
    g.refresh()
    g.to_image()
    check()
    for k, v in tiny_resnet.state_dict().items():
        assert torch.equal(v, weights[k]), k


# ---------------------------------------------------------------- repr
def test_repr_is_short(tiny_resnet):
    g = FilterGrid(tiny_resnet, "layer2.0.conv2")
    r = repr(g)
    assert len(r) < 120
    assert "layer2.0.conv2" in r and "64" in r  # 8 x 8 tiles
    assert "\\x" not in r and "b'" not in r
    assert len(str(g)) < 120


# ---------------------------------------------------------------- the contract: choices and arrays
def test_mode_and_normalize_are_choices_of_the_core_literals(seq_cnn):
    from cnnwidgets.core.filters import Normalize, TileMode
    from cnnwidgets.widgets._base import Choice

    g = FilterGrid(seq_cnn)
    for name, alias in (("mode", TileMode), ("normalize", Normalize)):
        trait = g.traits()[name]
        assert isinstance(trait, Choice) and isinstance(trait, traitlets.Enum)
        assert trait.values == typing.get_args(alias)
    with pytest.raises(ValueError, match=r"normalize must be 'global', 'filter' or 'tile', got 'per-pixel'"):
        g.normalize = "per-pixel"
    with pytest.raises(ValueError, match=r"mode must be 'kernel' or 'rgb', got 'bogus'"):
        g.mode = "bogus"


def test_page_refusal_of_a_choice_names_the_choices(seq_cnn):
    g = FilterGrid(seq_cnn)
    g.set_state({"normalize": "per-pixel"})
    assert g.normalize == "global"
    assert "'global', 'filter' or 'tile'" in g.control_errors["normalize"]
    g.set_state({"normalize": "tile"})
    assert g.normalize == "tile" and g.control_errors == {}


def test_arrays_are_sent_with_dtype_and_shape(tiny_resnet):
    g = FilterGrid(tiny_resnet, "layer2.0.conv2")  # 8 x 8 kernels of 3 x 3
    state = g.get_state(["_codes", "_stats", "_lut"])
    assert [(state[k]["dtype"], state[k]["shape"]) for k in ("_codes", "_stats", "_lut")] == [
        ("uint8", [64, 3, 3]), ("float32", [64, 2]), ("uint8", [256, 3])
    ]
    assert len(state["_codes"]["view"]) == 64 * 9 and len(state["_stats"]["view"]) == 64 * 2 * 4


# ---------------------------------------------------------------- layer picker
def test_layer_labels_say_type_channels_and_kernel(tiny_resnet, nested_cnn):
    g = FilterGrid(tiny_resnet)
    assert set(g.layer_labels) == set(g.layers)
    assert g.layer_labels["conv1"] == "Conv2d 3→4 · 3×3"
    assert g.layer_labels["layer2.0.downsample.0"] == "Conv2d 4→8 · 1×1"
    assert g._grid["label"] == f"conv1 · {g.layer_labels['conv1']}"
    with pytest.raises(traitlets.TraitError):
        g.layer_labels = {}
    net = nn.Sequential(nn.Conv2d(2, 4, 3))
    g2 = FilterGrid(net)
    net.append(nn.ConvTranspose2d(4, 6, (5, 3), groups=2))
    g2.refresh()
    assert g2.layer_labels == {"0": "Conv2d 2→4 · 3×3", "1": "ConvTranspose2d 4→6, groups 2 · 5×3"}


# ---------------------------------------------------------------- the colour scale
def _ends(g: FilterGrid, tiles: np.ndarray) -> tuple[int, int]:
    """Lowest and highest code among ``tiles``."""
    c = g.tiles.codes[tiles]
    return int(c.min()), int(c.max())


def test_color_range_global_is_the_layers_min_and_max(seq_cnn):
    g = FilterGrid(seq_cnn, "3")
    w = conv_weight(seq_cnn, "3").numpy()
    assert g.color_range == (float(w.min()), float(w.max()))
    assert g.color_note == ""
    # the weights at the ends are drawn in the LUT's first and last data colour
    assert _ends(g, slice(None)) == (0, MAX_CODE)
    with pytest.raises(traitlets.TraitError):
        g.color_range = (0.0, 1.0)


def test_color_range_diverging_is_symmetric(seq_cnn):
    g = FilterGrid(seq_cnn, "3", cmap="diverging")
    mag = float(np.abs(conv_weight(seq_cnn, "3").numpy()).max())
    assert g.color_range == (-mag, mag)
    # zero sits at the middle code; +-mag at the ends
    w = conv_weight(seq_cnn, "3").numpy().reshape(g.n_tiles, 3, 3)
    codes = g.tiles.codes
    assert codes[np.abs(w) == mag].item() in (0, MAX_CODE)


def test_color_range_per_filter_follows_the_selected_filter(seq_cnn):
    g = FilterGrid(seq_cnn, "3", normalize="filter")  # 6 filters x 4 input channels
    w = conv_weight(seq_cnn, "3").numpy()
    assert g.color_range == (float(w.min()), float(w.max()))
    assert "own range" in g.color_note and "select a filter" in g.color_note
    g.channel = 4
    assert g.color_range == (float(w[4].min()), float(w[4].max()))
    assert "filter 4" in g.color_note
    assert _ends(g, slice(16, 20)) == (0, MAX_CODE)  # that filter's tiles span the scale
    g.cmap = "diverging"
    mag = float(np.abs(w[4]).max())
    assert g.color_range == (-mag, mag)
    g.channel = -1
    assert g.color_range == (-float(np.abs(w).max()), float(np.abs(w).max()))
    g.channel = 2
    g.layer = "0"  # 4 filters: the selection stays, and so does its range
    w0 = conv_weight(seq_cnn, "0").numpy()
    assert g.color_range == (-float(np.abs(w0[2]).max()), float(np.abs(w0[2]).max()))


def test_color_range_per_tile_and_rgb(seq_cnn, nested_cnn):
    g = FilterGrid(seq_cnn, "3", normalize="tile")
    w = conv_weight(seq_cnn, "3").numpy()
    g.channel = 1
    assert g.color_range == (float(w.min()), float(w.max()))
    assert "each kernel scaled to its own range" in g.color_note
    rgb = FilterGrid(nested_cnn, normalize="tile")  # an RGB tile is a filter
    ws = conv_weight(nested_cnn, "stem").numpy()
    rgb.channel = 3
    assert rgb.mode == "rgb" and rgb.color_range == (float(ws[3].min()), float(ws[3].max()))
    assert "filter 3" in rgb.color_note


def test_color_range_ignores_nonfinite_weights(seq_cnn):
    with torch.no_grad():
        seq_cnn[0].weight[1, 0, 0, 0] = float("nan")
    with pytest.warns(RuntimeWarning):
        g = FilterGrid(seq_cnn, "0")
    w = conv_weight(seq_cnn, "0").numpy()
    assert g.color_range == (float(np.nanmin(w)), float(np.nanmax(w)))
    assert np.isfinite(g.color_range).all()


def test_to_image_background_is_the_gap_colour(seq_cnn):
    g = FilterGrid(seq_cnn, "0", zoom=1)  # 2 x 2 tiles of 3 x 3, 1 px gaps
    img = g.to_image(background=(30, 40, 50))
    assert img[3, :].tolist() == [[30, 40, 50]] * 7 and img[:, 3].tolist() == [[30, 40, 50]] * 7
    np.testing.assert_array_equal(img[:3, :3], g.to_image()[:3, :3])
    assert g.to_image()[3, 0].tolist() == [255, 255, 255]
