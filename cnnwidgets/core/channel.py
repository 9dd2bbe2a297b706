"""One channel of a CNN put together: its filter, the images that drive it, where, and how often.

:func:`channel_card` gathers what is known about one channel (a layer name and a channel
index): the filter weights (:func:`~cnnwidgets.core.filters.conv_weight`, quantized for
display by :func:`~cnnwidgets.core.filters.kernel_tiles`), the top-k images of a data set with
the map position and the input box that drive the channel most, and the statistics of its
activation over the whole data set. The data pass is the one of
:func:`~cnnwidgets.core.activations.channel_stats` (streamed, cached per model, layer and
data), so a card opened after ActivationExplorer's top images, or a second card of the same
layer, pays no second pass.

:func:`receptive_field` gives the box of input pixels a unit of a layer can see, measured on
the model as the support of a gradient (so it holds for any architecture, padding, dilation
and pooling), once per model, layer and input size.

Plain torch/numpy; no widget imports.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ._validate import as_int, check_int
from .activations import _layer_channels, channel_stats, rank_images
from .filters import conv_weight, kernel_tiles
from .images import ImageSet
from .model import CONV_TYPES, get_layer, model_device, model_dtype, unwrap_model
from .relu_rules import _ACTIVATIONS, _GATES
from .runner import LayerTap, require_4d, using_model

__all__ = [
    "HISTOGRAM_BINS",
    "QUANTILE_LEVELS",
    "Box",
    "ChannelCardData",
    "ReceptiveField",
    "channel_card",
    "receptive_field",
    "receptive_field_grid",
]

#: Levels of :attr:`ChannelCardData.quantiles` (of the per-image maximum).
QUANTILE_LEVELS: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
#: Bins of :attr:`ChannelCardData.histogram`.
HISTOGRAM_BINS = 30


class Box(NamedTuple):
    """A box of input pixels, half-open like a slice: columns ``x0:x1``, rows ``y0:y1``
    (``image[y0:y1, x0:x1]``)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


# ---------------------------------------------------------------------------- linear regime
def _pools() -> dict[Any, tuple[str, int]]:
    """Max pooling functions -> ("max" or "adaptive", spatial dimensions)."""
    out: dict[Any, tuple[str, int]] = {}
    for nd in (1, 2, 3):
        for kind, names in (("max", (f"max_pool{nd}d", f"max_pool{nd}d_with_indices")),
                            ("adaptive", (f"adaptive_max_pool{nd}d", f"adaptive_max_pool{nd}d_with_indices"))):
            for name in names:
                for ns in (F, torch):
                    fn = getattr(ns, name, None)
                    if fn is not None:
                        out[fn] = (kind, nd)
    return out


_POOLS = _pools()
_CONVS = (F.conv1d, F.conv2d, F.conv3d)
_ADAPTIVE_AVG = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any) -> Any:
    return args[i] if len(args) > i else kwargs.get(name, default)


def _tuple(v: Any, nd: int) -> tuple[int, ...]:
    if isinstance(v, (int, np.integer)):
        return (int(v),) * nd
    v = tuple(int(a) for a in v)
    return v * nd if len(v) == 1 else v


def _window_mean(x: torch.Tensor, out_shape: Sequence[int], nd: int, args: tuple, kwargs: dict) -> torch.Tensor:
    """The mean over each window of a max pooling (same kernel, stride, padding, dilation and
    ceil mode, so the same output shape): every input of a window reaches its output."""
    k = _tuple(_arg(args, kwargs, 1, "kernel_size", 1), nd)
    s = _arg(args, kwargs, 2, "stride", None)
    s = k if s is None or (not isinstance(s, (int, np.integer)) and len(s) == 0) else _tuple(s, nd)
    p = _tuple(_arg(args, kwargs, 3, "padding", 0), nd)
    d = _tuple(_arg(args, kwargs, 4, "dilation", 1), nd)
    batched = x.dim() == nd + 2
    xb = x if batched else x.unsqueeze(0)
    size, out = xb.shape[2:], tuple(out_shape[-nd:])
    pads: list[int] = []
    for a in reversed(range(nd)):  # F.pad takes the last dimension first
        need = (out[a] - 1) * s[a] + d[a] * (k[a] - 1) + 1  # a ceil-mode window may run past the end
        pads += [p[a], max(0, need - size[a] - p[a])]
    c = xb.shape[1]
    weight = xb.new_full((c, 1, *k), 1.0 / float(np.prod(k)))
    z = _CONVS[nd - 1](F.pad(xb, pads), weight, stride=s, dilation=d, groups=c)
    z = z[(slice(None), slice(None), *(slice(0, o) for o in out))]
    return z if batched else z[0]


class _LinearRegime(TorchFunctionMode):
    """Within the block (this thread), the network up to a layer is made linear in its
    activations: every elementwise activation and gate of the rule table of
    :mod:`~cnnwidgets.core.relu_rules` (ReLU and its relatives, clamps, Sigmoid, Tanh, ...)
    passes its input through, and every max pooling becomes the mean over its windows (same
    output shape; indices, when asked for, are the max pooling's). No unit is then switched
    off, and a product of activations (a gate) has no factor that is zero by accident."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        pool = _POOLS.get(func)
        if pool is None and func not in _ACTIVATIONS and func not in _GATES:
            return func(*args, **kwargs)
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            return func(*args, **kwargs)
        if not args:
            kwargs = dict(kwargs)
            args = (kwargs.pop("input"),)
        if pool is None:
            act = _ACTIVATIONS.get(func)
            inplace = act.inplace(args, kwargs) if act is not None else getattr(func, "__name__", "").endswith("_")
            return x if inplace else x.clone()  # a clone: later in-place writes must not reach x
        kind, nd = pool
        with torch.no_grad():
            res = func(*args, **kwargs)
        y = res[0] if isinstance(res, tuple) else res
        z = _window_mean(x, y.shape, nd, args, kwargs) if kind == "max" else \
            _ADAPTIVE_AVG[nd - 1](x, tuple(y.shape[-nd:]))
        return (z, *res[1:]) if isinstance(res, tuple) else z


# ---------------------------------------------------------------------------- receptive field
@dataclass(frozen=True, eq=False)
class ReceptiveField:
    """The receptive fields of every unit of a layer, for one input size (:func:`receptive_field_grid`).

    Attributes
    ----------
    input_size : (int, int)
        (H, W) of the input.
    map_shape : (int, int, int)
        (K, h, w) of the layer's output for that input.
    rows : numpy.ndarray
        int64 (h, 2): ``[y0, y1)`` of the input rows seen by map row i (clipped to the image).
    cols : numpy.ndarray
        int64 (w, 2): ``[x0, x1)`` of the input columns seen by map column j.
    stride : (int or None, int or None)
        Input pixels between neighbouring units (rows, columns); None on an axis where no two
        neighbouring units have a box edge inside the image (a field larger than the image).
    offset : (int or None, int or None)
        Unclipped first row / column seen by unit (0, 0) (negative with padding), when known.
    size : (int or None, int or None)
        Unclipped height / width of a field, when both its edges could be fitted (None on an
        axis where the fields reach past both ends of the image).
    translated : bool
        True when the boxes follow one field shifted by the stride (checked on the measured
        units); False when the layer is not translation-equivariant and every row and column
        was measured on its own.
    """

    input_size: tuple[int, int]
    map_shape: tuple[int, int, int]
    rows: np.ndarray
    cols: np.ndarray
    stride: tuple[int | None, int | None]
    offset: tuple[int | None, int | None]
    size: tuple[int | None, int | None]
    translated: bool

    def box(self, i: int, j: int) -> Box:
        """The input box of the unit at map position (row ``i``, column ``j``)."""
        h, w = self.map_shape[1:]
        i, j = as_int(i, "row"), as_int(j, "col")
        if not (0 <= i < h and 0 <= j < w):
            raise ValueError(f"position must be (row, col) within the {h} x {w} map, got ({i}, {j})")
        return Box(int(self.cols[j, 0]), int(self.rows[i, 0]), int(self.cols[j, 1]), int(self.rows[i, 1]))

    def boxes(self, positions: Any) -> np.ndarray:
        """int64 (k, 4) boxes ``x0, y0, x1, y1`` of the units at ``positions`` (k x 2 rows, cols)."""
        p = np.asarray(positions, np.int64).reshape(-1, 2)
        h, w = self.map_shape[1:]
        if p.size and not ((p[:, 0] >= 0).all() and (p[:, 0] < h).all() and (p[:, 1] >= 0).all() and (p[:, 1] < w).all()):
            raise ValueError(f"positions must be (row, col) within the {h} x {w} map")
        return np.stack([self.cols[p[:, 1], 0], self.rows[p[:, 0], 0], self.cols[p[:, 1], 1], self.rows[p[:, 0], 1]],
                        axis=1).astype(np.int64).reshape(-1, 4)


_RF_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, ReceptiveField]] = weakref.WeakKeyDictionary()
_RF_LOCK = threading.Lock()
_PROBE_BATCH = 16


def _input_shape(x: Any) -> tuple[int, int, int]:
    if isinstance(x, ImageSet):
        return x.shape
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) == 4:
        shape = shape[1:]
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"x must be an input image C x H x W or a batch N x C x H x W (only its shape is used), "
                         f"got shape {shape}")
    return tuple(int(v) for v in shape)  # type: ignore[return-value]


def _measure(run: nn.Module, layer: str, x: torch.Tensor, choose: Callable[[int, int], list[tuple[int, int]]],
             n: int) -> tuple[tuple[int, int, int], list[tuple[int, int, int, int]]]:
    """Forward ``n`` copies of ``x`` (1 x C x H x W) to ``layer`` in the linear regime; for the
    positions ``choose(h, w)`` (at most ``n``) the support of the gradient of the unit there
    (all channels, random positive weights) with respect to the input: (y0, y1, x0, x1) each,
    (0, 0, 0, 0) for a unit that sees no input pixel. Returns ((K, h, w), boxes)."""
    xb = x.expand(n, *x.shape[1:]).clone().requires_grad_(True)
    with torch.enable_grad(), _LinearRegime(), LayerTap(run, layer, check=require_4d) as tap:
        out = tap.run(xb)[1][layer]
    k, h, w = (int(v) for v in out.shape[1:])
    positions = choose(h, w)
    gen = torch.Generator().manual_seed(1)
    g = torch.zeros_like(out)
    for p, (i, j) in enumerate(positions):
        g[p, :, i, j] = (torch.rand(k, generator=gen) + 0.5).to(g)
    # the gradient of a scalar (not grad_outputs=g): the same, without autograd's first-use import of sympy
    (grad,) = torch.autograd.grad((out * g).sum(), xb, allow_unused=True)
    boxes = []
    if grad is None:  # the layer does not depend on the input at all
        return (k, h, w), [(0, 0, 0, 0)] * len(positions)
    seen = (grad[: len(positions)] != 0).any(dim=1).cpu().numpy()  # P x H x W
    for s in seen:
        r, c = np.flatnonzero(s.any(axis=1)), np.flatnonzero(s.any(axis=0))
        boxes.append((0, 0, 0, 0) if r.size == 0 else (int(r[0]), int(r[-1]) + 1, int(c[0]), int(c[-1]) + 1))
    return (k, h, w), boxes


def _axis(lo: dict[int, int], hi: dict[int, int], n_map: int, n_in: int):
    """Fit one axis: the box edges of map index i are ``max(0, o_lo + i*s)`` and
    ``min(n_in, o_hi + i*s)``. The low edge is fitted on the last two units (the likeliest to
    start inside the image), the high edge on the first two, and every measured unit must
    agree. Returns (edges (n_map, 2), stride, offset, size), or None when they disagree."""
    idx = np.arange(n_map)
    if any(lo[i] >= hi[i] for i in lo):
        return None  # a unit that sees no pixel: measure every unit
    if n_map == 1:
        size = hi[0] - lo[0] if lo[0] > 0 and hi[0] < n_in else None
        return np.array([[lo[0], hi[0]]], np.int64), None, None if lo[0] == 0 else lo[0], size
    a, b = n_map - 2, n_map - 1
    s_lo = o_lo = s_hi = o_hi = None
    if lo[a] > 0:  # both start inside the image: unclipped
        s_lo = lo[b] - lo[a]
        o_lo = lo[b] - b * s_lo
        los = np.maximum(0, o_lo + s_lo * idx)
    else:  # every unit but the last starts at (or before) the image's first pixel
        los = np.zeros(n_map, np.int64)
        los[b] = lo[b]
    if hi[1] < n_in:
        s_hi = hi[1] - hi[0]
        o_hi = hi[0]
        his = np.minimum(n_in, o_hi + s_hi * idx)
    else:
        his = np.full(n_map, n_in, np.int64)
        his[0] = hi[0]
    strides = {s for s in (s_lo, s_hi) if s is not None}
    if len(strides) > 1 or any(s < 1 for s in strides):
        return None
    if any(los[i] != lo[i] or his[i] != hi[i] for i in lo):
        return None
    stride = strides.pop() if strides else None
    size = o_hi - o_lo if o_lo is not None and o_hi is not None else None
    return np.stack([los, his], axis=1).astype(np.int64), stride, o_lo, size


def _probes(n: int) -> list[int]:
    return sorted({i for i in (0, 1, n // 2, n - 2, n - 1) if 0 <= i < n})


def _compute_grid(model: nn.Module, layer: str, shape: tuple[int, int, int]) -> ReceptiveField:
    c, hh, ww = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, c, hh, ww, generator=gen).to(model_device(model), model_dtype(model))
    with using_model(model) as run:
        chosen: list[tuple[int, int]] = []

        def choose(h: int, w: int) -> list[tuple[int, int]]:
            r, q = _probes(h), _probes(w)
            chosen[:] = [(r[min(t, len(r) - 1)], q[min(t, len(q) - 1)]) for t in range(max(len(r), len(q)))]
            return chosen

        (k, h, w), boxes = _measure(run, layer, x, choose, 5)
        fits = []
        for axis, n_map, n_in in ((0, h, hh), (1, w, ww)):
            lo = {p[axis]: b[2 * axis] for p, b in zip(chosen, boxes)}
            hi = {p[axis]: b[2 * axis + 1] for p, b in zip(chosen, boxes)}
            fits.append(_axis(lo, hi, n_map, n_in))
        edges = []
        for axis, n_map in ((0, h), (1, w)):
            if fits[axis] is not None:
                edges.append(fits[axis][0])
                continue
            # not one field shifted by a stride: measure every row (column) on its own
            e = np.zeros((n_map, 2), np.int64)
            for s in range(0, n_map, _PROBE_BATCH):
                ts = list(range(s, min(s + _PROBE_BATCH, n_map)))
                pos = [(t, 0) if axis == 0 else (0, t) for t in ts]
                _, bx = _measure(run, layer, x, lambda _h, _w, pos=pos: pos, len(pos))
                for t, b in zip(ts, bx):
                    e[t] = b[2 * axis : 2 * axis + 2]
            edges.append(e)
    rows, cols = (np.ascontiguousarray(e) for e in edges)
    rows.setflags(write=False)
    cols.setflags(write=False)

    def part(i: int) -> tuple:
        return tuple(None if f is None else f[i] for f in fits)

    return ReceptiveField((hh, ww), (k, h, w), rows, cols, part(1), part(2), part(3),
                          all(f is not None for f in fits))


def receptive_field_grid(model: nn.Module, layer: str, x: Any) -> ReceptiveField:
    """The input box seen by every unit of ``layer``, for inputs of ``x``'s size.

    Measured on the model, not derived from a table of layer types: the box of the unit at
    map position (i, j) is the support (the rows and columns with a nonzero value) of the
    gradient of that unit's activations (all channels at (i, j)) with respect to the input.
    The gradient is taken in a *linear regime*, on the model's private view: every
    activation and gate of the rule table of :mod:`~cnnwidgets.core.relu_rules` (ReLU and
    its relatives, clamps, Sigmoid, Tanh, ...) passes its input through, and every max
    pooling becomes the mean over its windows (same geometry), so the network up to the
    layer is linear except for products of activations. A plain gradient would understate
    the field: a ReLU that is off blocks all that lies behind it, a max pooling passes the
    gradient to one input per window, and a gate that is 0 cancels a product; an all-ones or
    positive input does not prevent any of this (a negative weight makes the next
    pre-activation negative; pooling still picks one input). Rewriting only the backward
    pass (straight-through) is not enough either: a product with an activation that is 0 in
    the forward pass still has a zero gradient. The input is a fixed random image (only its
    size matters), and the gradient is that of a random positive mix of all channels at
    (i, j), so no weight pattern cancels it.

    Measured are the first two, the middle and the last two units of the map; the boxes
    follow from one field shifted by the stride and clipped to the image, checked on every
    measured unit (the low edge is fitted on the last two units and the high edge on the
    first two, where they are least likely to be clipped). A layer that is not
    translation-equivariant (adaptive pooling, size-dependent padding) has every row and
    column measured on its own. It is assumed that the rows a unit sees depend on its row
    only, and likewise for columns. The result is cached per (model, layer, input size).

    Parameters
    ----------
    model : nn.Module
    layer : str
        A layer with a 4-D output N x K x h x w (its first call).
    x : torch.Tensor, numpy.ndarray or ImageSet
        An input C x H x W or N x C x H x W; only its shape is used.

    Returns
    -------
    ReceptiveField
        ``rows`` (h, 2), ``cols`` (w, 2), :meth:`~ReceptiveField.box` and
        :meth:`~ReceptiveField.boxes`.

    Raises
    ------
    ValueError
        Unknown layer (the message lists the valid names), or a layer whose output is not 4-D.

    Notes
    -----
    Nothing is visible on the model (no hooks, modes or gradients): the gradient is taken
    with respect to the input only. Ops outside the table (a max over a dimension, sorting,
    rounding) keep their ordinary gradient.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 2, 3))
    >>> rf = receptive_field_grid(net, "3", torch.zeros(1, 1, 12, 12))
    >>> rf.map_shape, rf.stride, rf.size, rf.offset
    ((2, 4, 4), (2, 2), (8, 8), (-1, -1))
    >>> rf.box(0, 0), rf.box(3, 3)
    (Box(x0=0, y0=0, x1=7, y1=7), Box(x0=5, y0=5, x1=12, y1=12))
    """
    get_layer(model, layer)  # raises with the list of valid names
    shape = _input_shape(x)
    base = unwrap_model(model)[0]
    module = get_layer(base, layer)
    key = (layer, id(module), type(module).__qualname__, shape)
    with _RF_LOCK:
        hit = _RF_CACHE.get(base, {}).get(key)
    if hit is not None:
        return hit
    rf = _compute_grid(model, layer, shape)
    with _RF_LOCK:
        per = _RF_CACHE.setdefault(base, {})
        if len(per) > 64:
            per.clear()
        per[key] = rf
    return rf


def receptive_field(model: nn.Module, layer: str, x: Any, position: tuple[int, int] | None = None) -> Box:
    """The box of input pixels the unit of ``layer`` at map ``position`` can see.

    See :func:`receptive_field_grid` for how it is measured (the support of the unit's
    gradient with respect to the input, in a linear regime) and cached.

    Parameters
    ----------
    model : nn.Module
    layer : str
        A layer with a 4-D output N x K x h x w.
    x : torch.Tensor, numpy.ndarray or ImageSet
        An input C x H x W or N x C x H x W; only its shape is used.
    position : (int, int), optional
        (row, col) in the h x w map; by default the centre unit ((h - 1) // 2, (w - 1) // 2).

    Returns
    -------
    Box
        ``x0, y0, x1, y1`` in input pixels, half-open (``image[y0:y1, x0:x1]``), clipped to the
        image.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 3))
    >>> receptive_field(net, "1", torch.zeros(1, 1, 9, 9), (0, 0))
    Box(x0=0, y0=0, x1=5, y1=5)
    >>> receptive_field(net, "1", torch.zeros(1, 1, 9, 9), (2, 4))
    Box(x0=4, y0=2, x1=9, y1=7)
    """
    rf = receptive_field_grid(model, layer, x)
    h, w = rf.map_shape[1:]
    if position is None:
        position = ((h - 1) // 2, (w - 1) // 2)
    if not isinstance(position, (tuple, list, np.ndarray)) or len(position) != 2:
        raise ValueError(f"position must be (row, col) within the {h} x {w} map, got {position!r}")
    return rf.box(*position)


# ---------------------------------------------------------------------------- channel card
@dataclass(frozen=True, eq=False)
class ChannelCardData:
    """What is known about one channel of one layer (:func:`channel_card`).

    Attributes
    ----------
    layer : str
    channel : int
    n_images : int
        N, the images of the data set.
    n_valid : int
        Those that could be read (the statistics are over them).
    weights : numpy.ndarray or None
        float32 (C_in, kh, kw): the channel's filter when ``layer`` is a convolution
        (per group for a grouped one), else None.
    weights_rgb : numpy.ndarray or None
        uint8 (kh, kw, 3): the filter as an RGB image when it reads 3 channels, scaled by its
        largest magnitude with 0 at the middle code 127 (:func:`~cnnwidgets.core.filters.kernel_tiles`
        with ``mode="rgb", normalize="filter", symmetric=True``); else None.
    top : numpy.ndarray
        int64 (k,): the images with the highest maximum of the channel's map, highest first
        (ties in index order; images that could not be read left out; fewer than ``k`` if
        fewer are valid).
    top_values : numpy.ndarray
        float32 (k,): their maxima.
    positions : numpy.ndarray
        int64 (k, 2): (row, col) of each maximum in the h x w map (the first in row-major order).
    boxes : numpy.ndarray or None
        int64 (k, 4): ``x0, y0, x1, y1`` input box (half-open) seen by the unit at each position
        (:func:`receptive_field`); None when the receptive field cannot be measured by gradient.
    maps : numpy.ndarray
        float32 (k, h, w): the channel's map of each top image.
    max_values, mean_values : numpy.ndarray
        float32 (N,): maximum and mean of the channel's map on each image (NaN where the
        image could not be read).
    valid : numpy.ndarray
        bool (N,): the images that could be read.
    fraction_active : float
        Share of the valid images whose maximum is above 0.
    quantiles : numpy.ndarray
        float32 (5,): quantiles of the maxima at :data:`QUANTILE_LEVELS` (0, 0.25, 0.5, 0.75, 1).
    histogram : (numpy.ndarray, numpy.ndarray)
        Counts int64 (30,) and bin edges float64 (31,) of the maxima (:func:`numpy.histogram`).
    dead : bool
        True when the maximum is above 0 on no image.
    by_class : numpy.ndarray or None
        float32 (n_classes,): mean of the maxima over the images of each class (NaN for a
        class with no image); None without labels.
    top_class : int or None
        The class with the highest ``by_class`` (None without labels).
    classes : list of str or None
        Class names of the data, if any.
    receptive_field : ReceptiveField or None
        The boxes of every unit of the layer for the data's image size.
    """

    layer: str
    channel: int
    n_images: int
    n_valid: int
    weights: np.ndarray | None
    weights_rgb: np.ndarray | None
    top: np.ndarray
    top_values: np.ndarray
    positions: np.ndarray
    boxes: np.ndarray | None
    maps: np.ndarray
    max_values: np.ndarray
    mean_values: np.ndarray
    valid: np.ndarray
    fraction_active: float
    quantiles: np.ndarray
    histogram: tuple[np.ndarray, np.ndarray]
    dead: bool
    by_class: np.ndarray | None
    top_class: int | None
    classes: list[str] | None
    receptive_field: ReceptiveField | None

    def __repr__(self) -> str:
        return (f"ChannelCardData(layer={self.layer!r}, channel={self.channel}, top={self.top.tolist()}, "
                f"n_valid={self.n_valid}/{self.n_images}, fraction_active={self.fraction_active:.3f}, dead={self.dead})")


def _weights(model: nn.Module, layer: str, channel: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    if not isinstance(get_layer(model, layer), CONV_TYPES):
        return None, None
    w = conv_weight(model, layer)[channel : channel + 1]
    rgb = None
    if w.shape[1] == 3:
        rgb = kernel_tiles(w, mode="rgb", normalize="filter", symmetric=True).codes[0]
    return np.ascontiguousarray(w[0].numpy()), rgb


def _top_maps(model: nn.Module, images: ImageSet, layer: str, channel: int, top: np.ndarray,
              batch_size: int | None) -> np.ndarray:
    """float32 (k, h, w): the channel's maps of the images ``top``, batched."""
    bs = batch_size or images.batch_size
    out = []
    device, dtype = model_device(model), model_dtype(model)
    with using_model(model) as run, torch.no_grad(), LayerTap(run, layer, check=require_4d) as tap:
        for s in range(0, len(top), bs):
            x = images.take(top[s : s + bs].tolist()).to(device, dtype)
            out.append(tap.run(x)[1][layer][:, channel].float().cpu().numpy())
    return np.concatenate(out).astype(np.float32, copy=False)


def _by_class(values: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    sums = np.bincount(labels, weights=values.astype(np.float64), minlength=n_classes)
    counts = np.bincount(labels, minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums / counts).astype(np.float32)


def channel_card(
    model: nn.Module,
    images: Any,
    layer: str,
    channel: int,
    *,
    k: int = 8,
    labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
    batch_size: int | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    progress: Callable[[int, int], Any] | None = None,
    stop: Any = None,
    cache: bool = True,
) -> ChannelCardData:
    """Everything the data tells about one channel: filter, top images and where, statistics.

    The statistics and the ranking come from :func:`~cnnwidgets.core.activations.channel_stats`
    (one streamed, cached pass over the data for every channel of the layer, shared with
    :func:`~cnnwidgets.core.activations.top_images`); the maps of the top images from one
    batched forward pass of those ``k`` images; their boxes from :func:`receptive_field_grid`.

    Parameters
    ----------
    model : nn.Module
    images
        Anything :class:`~cnnwidgets.core.images.ImageSet` takes, or an ImageSet.
    layer : str
        A layer with a 4-D output N x K x h x w (its first call).
    channel : int
        0 <= channel < K.
    k : int
        How many top images (at least 1).
    labels : sequence of int, optional
        One label per image (default: the data's own), for ``by_class``.
    batch_size : int, optional
        Images per forward pass.
    mean, std : optional
        Normalization for uint8 and PIL images (not with an ImageSet).
    progress : callable, optional
        ``progress(done, total)`` during the pass over the data.
    stop : threading.Event or callable, optional
        Checked between batches; raises :class:`~cnnwidgets.core.passes.Stopped`.
    cache : bool
        False: compute the pass afresh.

    Returns
    -------
    ChannelCardData

    Raises
    ------
    ValueError
        Unknown layer (the valid names listed), a layer whose output is not 4-D, ``channel``
        outside 0..K-1, ``k`` below 1, or no image that could be read.

    Notes
    -----
    Runs on the model's private view, on its device (:func:`~cnnwidgets.core.runner.using_model`):
    nothing is visible on the model.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    >>> card = channel_card(net, torch.randn(10, 3, 8, 8), "1", channel=2, k=3, labels=[0, 1] * 5)
    >>> card.top.shape, card.maps.shape, card.boxes.shape, card.weights, card.by_class.shape
    ((3,), (3, 6, 6), (3, 4), None, (2,))
    >>> channel_card(net, torch.randn(10, 3, 8, 8), "0", channel=2, k=3).weights_rgb.shape
    (3, 3, 3)
    """
    get_layer(model, layer)  # raises with the list of valid names
    k = check_int(k, "k", 1)
    channel = as_int(channel, "channel")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    images = ImageSet.of(images, labels=labels, mean=mean, std=std)
    try:
        rf: ReceptiveField | None = receptive_field_grid(model, layer, images)
    except RuntimeError:  # an op without a gradient before the layer: no boxes, the rest stands
        rf = None
    n_channels = rf.map_shape[0] if rf is not None else _layer_channels(model, images, layer)
    if not 0 <= channel < n_channels:
        raise ValueError(f"channel must be in 0..{n_channels - 1} (layer {layer!r} has {n_channels} channels), "
                         f"got {channel}")
    weights, weights_rgb = _weights(model, layer, channel)

    st = channel_stats(model, images, layer, batch_size=batch_size, progress=progress, stop=stop, cache=cache)
    valid = np.asarray(st.valid, bool).copy()
    n, n_valid = len(valid), int(valid.sum())
    if n_valid == 0:
        raise ValueError(f"none of the {n} images could be read. {images.broken_note() or ''}".strip())
    max_all = np.asarray(st.max[:, channel], np.float32)
    max_values = np.where(valid, max_all, np.nan).astype(np.float32)
    mean_values = np.where(valid, np.asarray(st.mean[:, channel], np.float32), np.nan).astype(np.float32)

    top = rank_images(max_all, k, valid)
    maps = _top_maps(model, images, layer, channel, top, batch_size)
    w = maps.shape[2]
    flat = np.argmax(maps.reshape(len(top), -1), axis=1)
    positions = np.stack([flat // w, flat % w], axis=1).astype(np.int64).reshape(-1, 2)

    mx = max_values[valid].astype(np.float64)
    counts, edges = np.histogram(mx, bins=HISTOGRAM_BINS)
    by_class = top_class = None
    lab = images.labels
    if lab is not None:
        lab = np.asarray(lab, np.int64)
        keep = valid & (lab >= 0)
        if keep.any():
            n_classes = max(int(lab[keep].max()) + 1, len(images.classes or ()))
            by_class = _by_class(max_values[keep], lab[keep], n_classes)
            top_class = int(np.nanargmax(by_class))
    for a in (max_values, mean_values, valid):
        a.setflags(write=False)
    return ChannelCardData(
        layer=layer,
        channel=channel,
        n_images=n,
        n_valid=n_valid,
        weights=weights,
        weights_rgb=weights_rgb,
        top=top,
        top_values=max_all[top].astype(np.float32),
        positions=positions,
        boxes=None if rf is None else rf.boxes(positions),
        maps=maps,
        max_values=max_values,
        mean_values=mean_values,
        valid=valid,
        fraction_active=float(np.mean(mx > 0)),
        quantiles=np.quantile(mx, QUANTILE_LEVELS).astype(np.float32),
        histogram=(counts.astype(np.int64), edges),
        dead=not bool((mx > 0).any()),
        by_class=by_class,
        top_class=top_class,
        classes=None if images.classes is None else list(images.classes),
        receptive_field=rf,
    )
