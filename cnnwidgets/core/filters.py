"""Convolution weights as a grid of image tiles.

The tiles are quantized to uint8 codes once (:func:`kernel_tiles`); a LUT from
:mod:`cnnwidgets.core.colormaps` turns codes into colours. :func:`render_grid` lays the tiles
out exactly as the FilterGrid front end does, so both can be compared pixel for pixel.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from .colormaps import MAX_CODE, MID_CODE, NONFINITE_CODE
from .model import CONV_TYPES, conv_layers, get_layer, named_layers

__all__ = ["FilterTiles", "conv_weight", "kernel_tiles", "grid_shape", "render_grid", "first_conv_layer"]

TileMode = Literal["kernel", "rgb"]
Normalize = Literal["global", "filter", "tile"]


@dataclass(frozen=True)
class FilterTiles:
    """Quantized tiles of one convolution layer.

    Attributes
    ----------
    codes : numpy.ndarray
        uint8, (n_tiles, kh, kw) in kernel mode or (n_tiles, kh, kw, 3) in RGB mode; 0..254 for
        data, 255 for NaN/Inf.
    stats : numpy.ndarray
        float32, (n_tiles, 2): min and max of each tile's finite weights (NaN if none).
    out_channels, in_channels : int
        Filters and input channels per filter (per group for grouped convolutions).
    mode : {"kernel", "rgb"}
        One tile per (filter, input channel) kernel, or one RGB tile per filter.
    symmetric : bool
        Whether zero maps to the middle code 127 (diverging scale).
    n_nonfinite : int
        How many weights are NaN or infinite.
    """

    codes: np.ndarray
    stats: np.ndarray
    out_channels: int
    in_channels: int
    mode: TileMode
    symmetric: bool
    n_nonfinite: int

    @property
    def n_tiles(self) -> int:
        return int(self.codes.shape[0])

    @property
    def tile_shape(self) -> tuple[int, int]:
        return int(self.codes.shape[1]), int(self.codes.shape[2])

    def tile_index(self, tile: int) -> tuple[int, int]:
        """(out, in) channel indices of ``tile``; ``in`` is -1 for RGB tiles."""
        if self.mode == "rgb":
            return tile, -1
        return tile // self.in_channels, tile % self.in_channels


def first_conv_layer(model: nn.Module) -> str:
    """Name of the first convolution layer; ValueError naming the module types found if none."""
    names = conv_layers(model)
    if not names and isinstance(model, CONV_TYPES):
        raise ValueError(
            f"the model is a single {type(model).__name__}, not a network holding one; "
            "wrap it, e.g. nn.Sequential(conv), so its layer has a name ('0')"
        )
    if not names:
        kinds = sorted({type(m).__name__ for m in named_layers(model).values()}) or [type(model).__name__]
        raise ValueError(
            "the model has no 2-D convolution layers (nn.Conv2d / nn.ConvTranspose2d); "
            f"module types found: {', '.join(kinds)}"
        )
    return names[0]


def conv_weight(model: nn.Module, layer: str) -> torch.Tensor:
    """The weights of conv layer ``layer`` as a detached float32 CPU tensor (out, in, kh, kw).

    ``nn.ConvTranspose2d`` weights (stored in x out/groups x kh x kw) are transposed so that
    the first axis is always the output channel.
    """
    module = get_layer(model, layer, kinds=CONV_TYPES)
    w = module.weight.detach()
    if isinstance(module, nn.ConvTranspose2d):
        g = module.groups
        i, o, kh, kw = w.shape
        w = w.reshape(g, i // g, o, kh, kw).permute(0, 2, 1, 3, 4).reshape(g * o, i // g, kh, kw)
    return w.to(device="cpu", dtype=torch.float32)


#: Elements per block when a pass over the weights is split into cache-sized pieces (~256 KiB
#: of float32): a chain of numpy operations then re-reads a block from the cache instead of the
#: whole layer from memory. Measured: 2x faster for VGG16's 512 x 512 x 3 x 3 layer.
_BLOCK = 1 << 16


def _rowwise_minmax(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of each row of a 2-D float32 array (fast for short rows too)."""
    n, m = a.shape
    if m > 32:
        return a.min(axis=1), a.max(axis=1)
    # numpy reduces short rows slowly; a loop over the columns is vectorized across rows, and
    # done block by block it stays in the cache
    lo = np.empty(n, a.dtype)
    hi = np.empty(n, a.dtype)
    step = max(1, _BLOCK // max(m, 1))
    for i in range(0, n, step):
        blk = a[i : i + step]
        l, h = lo[i : i + step], hi[i : i + step]
        l[:] = blk[:, 0]
        h[:] = blk[:, 0]
        for j in range(1, m):
            np.minimum(l, blk[:, j], out=l)
            np.maximum(h, blk[:, j], out=h)
    return lo, hi


def _quantize(
    w: np.ndarray,
    groups: int,
    symmetric: bool,
    finite: np.ndarray | None,
    lohi: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Codes 0..254 for float32 ``w``, scaled per group of rows (``w`` viewed as (groups, -1)).

    ``finite`` is None when every value is finite, else the boolean mask of finite values;
    non-finite values get code 255. ``lohi``: each group's min and max when already known
    (all values finite).
    """
    flat = w.reshape(groups, -1)
    if finite is None and lohi is not None:
        lo, hi = lohi
    elif finite is None:
        lo, hi = _rowwise_minmax(flat) if groups > 1 else (flat.min(axis=1), flat.max(axis=1))
    else:
        fmask = finite.reshape(groups, -1)
        lo = np.where(fmask, flat, np.inf).min(axis=1)
        hi = np.where(fmask, flat, -np.inf).max(axis=1)
        none = lo > hi  # a group with no finite value
        lo[none] = 0.0
        hi[none] = 0.0
        flat = np.where(fmask, flat, 0.0).astype(np.float32)
    lo = lo.astype(np.float32)[:, None]
    hi = hi.astype(np.float32)[:, None]
    if symmetric:
        mag = np.maximum(np.abs(lo), np.abs(hi))
        scale = np.divide(MID_CODE, mag, out=np.zeros_like(mag), where=mag > 0)
        shift = np.zeros_like(lo)
        offset = np.full_like(lo, MID_CODE + 0.5)
    else:
        span = hi - lo
        # constant weights (span 0) land on the middle code instead of dividing by zero
        scale = np.divide(MAX_CODE, span, out=np.zeros_like(span), where=span > 0)
        shift = lo
        offset = np.where(span > 0, np.float32(0.5), np.float32(MID_CODE + 0.5))
    codes = np.empty(flat.shape, np.uint8)
    # ((x - shift) * scale + offset, clipped, truncated: round half up) block by block
    if groups == 1:  # one long row: blocks of columns
        sc, sh, of = scale[0, 0], shift[0, 0], offset[0, 0]
        buf = np.empty(min(_BLOCK, flat.shape[1]), np.float32)
        for i in range(0, flat.shape[1], _BLOCK):
            x = flat[0, i : i + _BLOCK]
            q = buf[: x.shape[0]]
            np.subtract(x, sh, out=q)
            q *= sc
            q += of
            np.clip(q, 0.0, MAX_CODE + 0.5, out=q)
            codes[0, i : i + _BLOCK] = q  # float -> uint8 truncates
    else:
        m = flat.shape[1]
        step = max(1, _BLOCK // max(m, 1))
        buf = np.empty((min(step, groups), m), np.float32)
        for i in range(0, groups, step):
            x = flat[i : i + step]
            q = buf[: x.shape[0]]
            np.subtract(x, shift[i : i + step], out=q)
            q *= scale[i : i + step]
            q += offset[i : i + step]
            np.clip(q, 0.0, MAX_CODE + 0.5, out=q)
            codes[i : i + step] = q
    if finite is not None:
        codes[~finite.reshape(groups, -1)] = NONFINITE_CODE
    return codes.reshape(w.shape)


def kernel_tiles(
    weight: torch.Tensor,
    *,
    mode: TileMode = "kernel",
    normalize: Normalize = "global",
    symmetric: bool = False,
) -> FilterTiles:
    """Quantize conv weights (out, in, kh, kw) into uint8 tiles.

    Parameters
    ----------
    weight : torch.Tensor
        out x in x kh x kw, e.g. ``torch.Size([64, 32, 10, 10])``, which gives 2,048 tiles.
    mode : {"kernel", "rgb"}
        ``"kernel"``: one gray tile per (filter, input channel) pair, ordered filter-major;
        ``"rgb"``: one colour tile per filter (needs in == 3).
    normalize : {"global", "filter", "tile"}
        Range over the whole layer, over each filter (all its input channels), or per tile.
    symmetric : bool
        Scale by the largest magnitude so that zero maps to code 127 (for diverging maps).

    Returns
    -------
    FilterTiles

    Warns
    -----
    RuntimeWarning
        If some weights are NaN or infinite (they get code 255, drawn in a marked colour).

    Examples
    --------
    >>> t = kernel_tiles(torch.randn(64, 32, 10, 10))
    >>> t.n_tiles, t.codes.shape
    (2048, (2048, 10, 10))
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__
        raise ValueError(f"weight must be a 4-D tensor (out, in, kh, kw), got {shape}")
    if mode not in ("kernel", "rgb"):
        raise ValueError(f"mode must be 'kernel' or 'rgb', got {mode!r}")
    if normalize not in ("global", "filter", "tile"):
        raise ValueError(f"normalize must be 'global', 'filter' or 'tile', got {normalize!r}")
    w = np.ascontiguousarray(weight.detach().to(device="cpu", dtype=torch.float32).numpy())
    out_c, in_c, kh, kw = w.shape
    if mode == "rgb" and in_c != 3:
        raise ValueError(
            f"mode='rgb' needs a layer that reads 3 channels, this one reads {in_c}. Hint: use mode='kernel'."
        )
    # min and max of every kernel in one cache-friendly pass; they are finite iff every weight
    # is (NaN propagates through minimum/maximum), and every other range derives from them
    k_lo, k_hi = _rowwise_minmax(w.reshape(out_c * in_c, kh * kw))
    all_finite = bool(np.isfinite(k_lo).all() and np.isfinite(k_hi).all())
    finite = None if all_finite else np.isfinite(w)
    n_bad = 0 if finite is None else int(finite.size - np.count_nonzero(finite))
    if n_bad:
        warnings.warn(
            f"{n_bad} of {w.size} weights are NaN or infinite; they are drawn in magenta",
            RuntimeWarning,
            stacklevel=2,
        )
    if mode == "rgb" and normalize == "tile":
        normalize = "filter"  # an RGB tile is a whole filter
    groups = {"global": 1, "filter": out_c, "tile": out_c * in_c}[normalize]
    n_tiles = out_c * in_c if mode == "kernel" else out_c
    per_tile = w.reshape(n_tiles, -1)
    if finite is None:
        f_lo, f_hi = k_lo.reshape(out_c, in_c), k_hi.reshape(out_c, in_c)
        by_group = {
            1: (np.array([k_lo.min()]), np.array([k_hi.max()])),
            out_c: (f_lo.min(axis=1), f_hi.max(axis=1)),
            out_c * in_c: (k_lo, k_hi),
        }
        codes = _quantize(w, groups, symmetric, None, by_group[groups])
        lo, hi = (k_lo, k_hi) if mode == "kernel" else by_group[out_c]  # per tile: a kernel or a filter
    else:
        codes = _quantize(w, groups, symmetric, finite)
        # per-tile min/max of the finite weights
        fm = finite.reshape(n_tiles, -1)
        lo = np.where(fm, per_tile, np.inf).min(axis=1)
        hi = np.where(fm, per_tile, -np.inf).max(axis=1)
        empty = lo > hi
        lo[empty] = np.nan
        hi[empty] = np.nan
    stats = np.empty((n_tiles, 2), np.float32)
    stats[:, 0] = lo
    stats[:, 1] = hi
    if mode == "kernel":
        c = codes.reshape(n_tiles, kh, kw)
    else:
        c = np.ascontiguousarray(codes.transpose(0, 2, 3, 1))
    return FilterTiles(
        codes=c,
        stats=stats,
        out_channels=out_c,
        in_channels=in_c,
        mode=mode,
        symmetric=symmetric,
        n_nonfinite=n_bad,
    )


def grid_shape(n_tiles: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) of the tile grid: ``columns`` given, or a near-square ``ceil(sqrt(n))``."""
    if n_tiles <= 0:
        return 0, 0
    cols = int(columns) if columns else int(math.ceil(math.sqrt(n_tiles)))
    cols = max(1, min(cols, n_tiles))
    return int(math.ceil(n_tiles / cols)), cols


def render_grid(
    codes: np.ndarray,
    lut: np.ndarray,
    *,
    columns: int | None = None,
    zoom: int = 1,
    padding: int = 1,
    background: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """Lay tiles out on a grid and colour them.

    Tile ``t`` sits at row ``t // columns``, column ``t % columns``; each tile is ``zoom``
    times its kernel size, tiles are ``padding`` pixels apart, with no outer border.

    Parameters
    ----------
    codes : numpy.ndarray
        uint8 (n, kh, kw) (coloured with ``lut``) or (n, kh, kw, 3) (RGB: each channel through
        ``lut``'s matching column, which for the gray LUT is the identity up to scale).
    lut : numpy.ndarray
        uint8 (256, 3).
    columns, zoom, padding, background
        Layout.

    Returns
    -------
    numpy.ndarray
        uint8 (H, W, 3) with ``W = cols * (kw * zoom + padding) - padding`` and likewise H.
    """
    lut = np.asarray(lut)
    if lut.shape != (256, 3) or lut.dtype != np.uint8:
        raise ValueError(f"lut must be a uint8 array of shape (256, 3), got {lut.dtype} {lut.shape}")
    n, kh, kw = codes.shape[:3]
    rows, cols = grid_shape(n, columns)
    if n == 0:
        return np.zeros((0, 0, 3), np.uint8)
    # lay out codes first (one byte per pixel, 256 = background), colour once at the end
    table = np.concatenate([lut, np.asarray(background, np.uint8)[None]], axis=0)
    planes = [codes] if codes.ndim == 3 else [codes[..., c] for c in range(3)]
    th, tw = kh * zoom, kw * zoom
    laid = []
    for p in planes:
        if zoom > 1:
            p = p.repeat(zoom, axis=1).repeat(zoom, axis=2)
        cell = np.full((rows * cols, th + padding, tw + padding), 256, np.uint16)
        cell[:n, :th, :tw] = p
        g = cell.reshape(rows, cols, th + padding, tw + padding).transpose(0, 2, 1, 3)
        laid.append(g.reshape(rows * (th + padding), cols * (tw + padding)))
    laid = [plane[: plane.shape[0] - padding, : plane.shape[1] - padding] for plane in laid]  # no outer border
    if len(laid) == 1:
        # each pixel's 3 bytes in one gather: the table as 3-byte records (4x faster than table[codes])
        records = np.ascontiguousarray(table).view("V3").ravel()
        return np.take(records, laid[0]).view(np.uint8).reshape(*laid[0].shape, 3)
    img = np.empty((*laid[0].shape, 3), np.uint8)
    for c in range(3):
        img[..., c] = np.take(table[:, c], laid[c])
    bad = np.zeros(laid[0].shape, bool)
    for plane in laid:
        bad |= plane == NONFINITE_CODE
    img[bad] = lut[NONFINITE_CODE]
    return img
