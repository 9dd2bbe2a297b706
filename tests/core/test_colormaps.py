"""Tests for cnnwidgets.core.colormaps: the LUTs shared with the front end."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest

from cnnwidgets.core.colormaps import (
    MAX_CODE,
    MID_CODE,
    NONFINITE_CODE,
    NONFINITE_RGB,
    diverging_lut,
    gray_lut,
    lut,
)

MAGENTA = [255, 0, 255]


def test_constants():
    assert (MAX_CODE, MID_CODE, NONFINITE_CODE) == (254, 127, 255)
    assert tuple(NONFINITE_RGB) == (255, 0, 255)


@pytest.mark.parametrize("name", ["gray", "diverging", "viridis", "RdBu_r"])
def test_shape_dtype_and_magenta(name):
    table = lut(name)
    assert table.shape == (256, 3) and table.dtype == np.uint8
    assert table[NONFINITE_CODE].tolist() == MAGENTA
    # magenta is reserved: no data code maps to it
    assert not np.any(np.all(table[:NONFINITE_CODE] == MAGENTA, axis=1))


def test_gray_endpoints_and_monotone():
    g = gray_lut()
    assert g[0].tolist() == [0, 0, 0]
    assert g[MAX_CODE].tolist() == [255, 255, 255]
    data = g[: MAX_CODE + 1].astype(int)
    assert np.all(data[:, 0] == data[:, 1]) and np.all(data[:, 1] == data[:, 2])  # gray
    steps = np.diff(data[:, 0])
    assert np.all(steps >= 0) and np.all(steps <= 2)
    assert len(np.unique(data[:, 0])) == MAX_CODE + 1  # 255 distinct levels, strictly increasing
    # linear: code k is k / 254 of full white, to the nearest level
    ideal = np.arange(MAX_CODE + 1) * 255 / MAX_CODE
    assert np.max(np.abs(data[:, 0] - ideal)) <= 0.5


def test_lut_gray_is_gray_lut():
    np.testing.assert_array_equal(lut("gray"), gray_lut())
    np.testing.assert_array_equal(lut("diverging"), diverging_lut())


def test_diverging_neutral_blue_red():
    d = diverging_lut().astype(int)
    r, g, b = d[MID_CODE]
    assert r == g == b and r >= 240  # neutral, near white
    assert d[0, 2] > d[0, 0]  # blue-ish
    assert d[MAX_CODE, 0] > d[MAX_CODE, 2]  # red-ish
    assert d[0, 2] > d[0, 1] > d[0, 0]
    assert d[MAX_CODE, 0] > d[MAX_CODE, 1]
    # lightness (sum of channels) grows towards the middle and falls after it
    light = d[: MAX_CODE + 1].sum(axis=1)
    assert np.all(np.diff(light[: MID_CODE + 1]) >= 0)
    assert np.all(np.diff(light[MID_CODE:]) <= 0)
    # symmetric codes are equally far from neutral on both sides (roughly): both sides darken
    assert light[MID_CODE - 100] < light[MID_CODE] and light[MID_CODE + 100] < light[MID_CODE]


def test_matplotlib_name_matches_matplotlib():
    table = lut("viridis")
    cmap = matplotlib.colormaps["viridis"]
    for code in (0, MID_CODE, MAX_CODE):
        expected = np.rint(np.array(cmap(code / MAX_CODE)[:3]) * 255).astype(int)
        np.testing.assert_allclose(table[code].astype(int), expected, atol=1)
    assert table[0].tolist() != table[MAX_CODE].tolist()


@pytest.mark.parametrize("bad", ["not-a-colormap", "", "Grey_", "divergent"])
def test_unknown_name_value_error(bad):
    with pytest.raises(ValueError, match="unknown colormap"):
        lut(bad)


def test_tables_are_fresh_arrays():
    a = lut("gray")
    a[:] = 0
    assert lut("gray")[MAX_CODE].tolist() == [255, 255, 255]
