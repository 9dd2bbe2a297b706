"""Feature maps: per-channel statistics, channel ordering, top-activating images, display codes.

Everything here is plain torch/numpy; no widget imports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple


import numpy as np
import torch
from torch import nn

from ._validate import as_int
from .filters import FilterTiles, kernel_tiles
from .images import ImageSet
from .model import get_layer, model_device, model_dtype
from .passes import stream_pass
from .runner import LayerTap, require_4d, using_model

__all__ = [
    "STAT_COLUMNS",
    "ChannelOrder",
    "ChannelStats",
    "ImageScore",
    "MapScale",
    "channel_stats",
    "map_stats",
    "maps_codes",
    "order_channels",
    "rank_images",
    "top_channels",
    "top_images",
]

ChannelOrder = Literal["index", "mean", "max"]
ImageScore = Literal["max", "mean"]
MapScale = Literal["shared", "per_map"]

#: Columns of :func:`map_stats`.
STAT_COLUMNS: tuple[str, ...] = ("mean", "max", "min")


def _as_maps(acts: Any, name: str = "acts") -> torch.Tensor:
    """``acts`` as a detached float32 CPU tensor C x H x W."""
    t = torch.as_tensor(acts)
    if t.dim() != 3:
        raise ValueError(
            f"{name} must be the feature maps of one image, C x H x W, got shape {tuple(t.shape)}. "
            "Hint: index the batch, e.g. acts[0]."
        )
    if t.shape[1] * t.shape[2] == 0:
        raise ValueError(f"{name} has empty maps, shape {tuple(t.shape)}")
    return t.detach().to(device="cpu", dtype=torch.float32)


def _positive_int(value: Any, name: str) -> int:
    v = as_int(value, name)
    if v < 1:
        raise ValueError(f"{name} must be at least 1, got {v}")
    return v


def map_stats(acts: torch.Tensor) -> np.ndarray:
    """Mean, max and min of each feature map.

    Parameters
    ----------
    acts : torch.Tensor
        C x H x W, the feature maps of one image at one layer.

    Returns
    -------
    numpy.ndarray
        float32, (C, 3): columns mean, max, min (see ``STAT_COLUMNS``).

    Examples
    --------
    >>> map_stats(torch.tensor([[[0.0, 2.0]], [[-1.0, -3.0]]]))
    array([[ 1.,  2.,  0.],
           [-2., -1., -3.]], dtype=float32)
    """
    t = _as_maps(acts).flatten(1)
    stats = torch.stack([t.mean(dim=1), t.amax(dim=1), t.amin(dim=1)], dim=1)
    return stats.numpy().astype(np.float32, copy=False)


def order_channels(stats: np.ndarray, by: ChannelOrder) -> np.ndarray:
    """Permutation of the channels for display.

    Parameters
    ----------
    stats : numpy.ndarray
        (C, 3) from :func:`map_stats`.
    by : {"index", "mean", "max"}
        ``"index"``: 0..C-1; ``"mean"`` / ``"max"``: strongest first by that column, ties in
        index order (a stable sort). NaN values go last.

    Returns
    -------
    numpy.ndarray
        int64, (C,).

    Examples
    --------
    >>> order_channels(np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 1.0]]), "max")
    array([0, 1])
    >>> order_channels(np.array([[1.0, 2.0, 0.0], [3.0, 2.0, 1.0]]), "mean")
    array([1, 0])
    """
    s = np.asarray(stats)
    if s.ndim != 2 or s.shape[1] < 2:
        raise ValueError(f"stats must be (C, 3) from map_stats, got shape {s.shape}")
    if by == "index":
        return np.arange(s.shape[0], dtype=np.int64)
    if by not in ("mean", "max"):
        raise ValueError(f"by must be 'index', 'mean' or 'max', got {by!r}")
    col = s[:, STAT_COLUMNS.index(by)].astype(np.float64)
    return np.argsort(-col, kind="stable").astype(np.int64)


def top_channels(acts: torch.Tensor, k: int, by: ChannelOrder = "max") -> np.ndarray:
    """Indices of the ``k`` strongest feature maps, strongest first.

    Parameters
    ----------
    acts : torch.Tensor
        C x H x W.
    k : int
        How many (at least 1; more than C gives all C).
    by : {"max", "mean", "index"}
        Strength measure, as in :func:`order_channels`.

    Returns
    -------
    numpy.ndarray
        int64, (min(k, C),).

    Examples
    --------
    >>> top_channels(torch.tensor([[[1.0]], [[5.0]], [[3.0]]]), 2)
    array([1, 2])
    """
    k = _positive_int(k, "k")
    return order_channels(map_stats(acts), by)[:k]


class ChannelStats(NamedTuple):
    """Per-image statistics of every channel of a layer over a data set (:func:`channel_stats`).

    Attributes
    ----------
    max, mean : numpy.ndarray
        float32 (N, K): the maximum and the mean of each image's map of each channel.
    valid : numpy.ndarray
        bool (N,): False for an image that could not be read (its rows are meaningless).
    """

    max: np.ndarray
    mean: np.ndarray
    valid: np.ndarray


def _layer_channels(model: nn.Module, images: ImageSet, layer: str) -> int:
    """K of ``layer``'s N x K x h x w output, from one forward pass on the first image."""
    with using_model(model) as run, torch.no_grad(), LayerTap(run, layer, check=require_4d) as tap:
        out = tap.run(images.item(0).to(model_device(model), model_dtype(model)))[1][layer]
    return int(out.shape[1])


def channel_stats(
    model: nn.Module,
    images: Any,
    layer: str,
    *,
    batch_size: int | None = None,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    progress: Callable[[int, int], Any] | None = None,
    stop: Any = None,
    cache: bool = True,
) -> ChannelStats:
    """The maximum and mean of every channel's map at ``layer``, for every image of a data set.

    One streamed pass (:func:`~cnnwidgets.core.passes.stream_pass`): batches on the model's
    device in its dtype, each forward pass stopping right after ``layer``, the result cached
    per (model weights, layer, data), so top images of any channel of the layer come from one
    pass, and a stopped pass resumes.

    Parameters
    ----------
    model : nn.Module
    images
        Anything :class:`~cnnwidgets.core.images.ImageSet` takes (a tensor, a Dataset, a
        DataLoader, a folder, ...) or an ImageSet.
    layer : str
        A layer with a 4-D output (N x K x h x w); its first call is used.
    batch_size : int, optional
        Images per forward pass (default: the ImageSet's, e.g. the loader's).
    mean, std : optional
        Normalization for uint8 and PIL images (not with an ImageSet, which has its own).
    progress : callable, optional
        ``progress(done, total)`` after every batch.
    stop : threading.Event or callable, optional
        Checked between batches; raises :class:`~cnnwidgets.core.passes.Stopped`.
    cache : bool
        False: compute afresh.

    Returns
    -------
    ChannelStats
    """
    get_layer(model, layer)  # raises with the list of valid names
    images = ImageSet.of(images, mean=mean, std=std)
    if batch_size is not None:
        batch_size = _positive_int(batch_size, "batch_size")
    k = _layer_channels(model, images, layer)

    def compute(x: torch.Tensor, _b) -> dict[str, torch.Tensor]:
        # the model is held (a model without a private view) for one batch at a time
        with using_model(model) as run, torch.no_grad(), LayerTap(run, layer, check=require_4d) as tap:
            maps = tap.run(x)[1][layer].flatten(2)
            return {"max": maps.amax(dim=2).float(), "mean": maps.mean(dim=2, dtype=torch.float64).float()}

    res = stream_pass(images, ("channel_stats", layer), {"max": ((k,), np.float32), "mean": ((k,), np.float32)},
                      compute, model=model, device=model_device(model), dtype=model_dtype(model),
                      batch_size=batch_size, progress=progress, stop=stop, cache=cache)
    return ChannelStats(res.arrays["max"], res.arrays["mean"], np.asarray(res.valid))


def rank_images(scores: np.ndarray, k: int, valid: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` highest scores, highest first (ties in index order), leaving out
    images that are not ``valid``: int64 (min(k, valid count),)."""
    s = np.asarray(scores, np.float64)
    if valid is not None:
        s = np.where(valid, s, -np.inf)
        k = min(k, int(np.count_nonzero(valid)))
    return np.argsort(-s, kind="stable")[:k].astype(np.int64)


def top_images(
    model: nn.Module,
    images: Any,
    layer: str,
    channel: int,
    k: int = 9,
    *,
    batch_size: int | None = None,
    by: ImageScore = "max",
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    progress: Callable[[int, int], Any] | None = None,
    stop: Any = None,
    cache: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The images of a data set that activate one feature map the most.

    Every image is scored by the maximum (or mean) of its ``channel`` map at ``layer``, from
    :func:`channel_stats` (one streamed, cached pass for all channels of the layer).

    Parameters
    ----------
    model : nn.Module
    images
        Anything :class:`~cnnwidgets.core.images.ImageSet` takes: float N x C x H x W
        (normalized for the model), uint8 N x H x W x C with ``mean``/``std``, a Dataset, a
        DataLoader, a folder, a list of PIL images or paths; or an ImageSet.
    layer : str
        Qualified name of a layer with a 4-D output (N x K x h x w); its first call is used.
    channel : int
        0 <= channel < K.
    k : int
        How many images to return (at least 1; more than N gives all N).
    batch_size : int, optional
        Images per forward pass.
    by : {"max", "mean"}
        Score of an image: the maximum or the mean of its map.
    mean, std : optional
        Normalization for uint8 and PIL images.
    progress : callable, optional
        ``progress(done, total)`` after every batch, with the number of images scored so far
        and N.
    stop, cache
        As for :func:`channel_stats`.

    Returns
    -------
    indices : numpy.ndarray
        int64, (min(k, N),): image indices, highest score first (ties in index order);
        images that could not be read are left out.
    scores : numpy.ndarray
        float32, same shape: their scores.

    Raises
    ------
    ValueError
        Unknown layer, a layer output that is not 4-D, ``channel`` outside 0..K-1, ``k`` or
        ``batch_size`` below 1, or an unknown ``by``.

    Notes
    -----
    Runs under ``torch.no_grad()`` on a private view of the model
    (:func:`~cnnwidgets.core.runner.private_model`), on the model's device.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    >>> idx, scores = top_images(net, torch.randn(20, 1, 8, 8), "1", channel=2, k=3)
    >>> idx.shape, scores.dtype
    ((3,), dtype('float32'))
    """
    get_layer(model, layer)  # raises with the list of valid names
    k = _positive_int(k, "k")
    channel = as_int(channel, "channel")
    if by not in ("max", "mean"):
        raise ValueError(f"by must be 'max' or 'mean', got {by!r}")
    images = ImageSet.of(images, mean=mean, std=std)
    kk = _layer_channels(model, images, layer)
    if not 0 <= channel < kk:
        raise ValueError(f"channel must be in 0..{kk - 1} (layer {layer!r} has {kk} channels), got {channel}")
    st = channel_stats(model, images, layer, batch_size=batch_size, progress=progress, stop=stop, cache=cache)
    scores = np.asarray((st.max if by == "max" else st.mean)[:, channel], np.float32)
    order = rank_images(scores, k, st.valid)
    return order, scores[order]


def maps_codes(acts: torch.Tensor, scale: MapScale = "shared") -> FilterTiles:
    """Quantize the feature maps of one image to uint8 codes for display.

    Parameters
    ----------
    acts : torch.Tensor
        C x H x W.
    scale : {"shared", "per_map"}
        ``"shared"``: one range (min..max) for all maps, so brightness is comparable between
        maps; ``"per_map"``: each map stretched over its own range.

    Returns
    -------
    FilterTiles
        From :func:`kernel_tiles` with ``symmetric=False``: ``codes`` uint8 (C, H, W) with the
        minimum at 0 and the maximum at 254 (ReLU maps go black to white), ``stats`` (C, 2)
        min and max of each map. A constant map with no range of its own gets the middle
        code 127, except an all-zero map (a dead ReLU channel), which gets 0 (black).

    Examples
    --------
    >>> t = maps_codes(torch.tensor([[[0.0, 1.0]], [[0.0, 2.0]]]))
    >>> t.codes[:, 0].tolist()
    [[0, 127], [0, 254]]
    """
    if scale not in ("shared", "per_map"):
        raise ValueError(f"scale must be 'shared' or 'per_map', got {scale!r}")
    t = _as_maps(acts)
    c, h, w = t.shape
    tiles = kernel_tiles(t.reshape(c, 1, h, w), normalize="global" if scale == "shared" else "tile", symmetric=False)
    dead = (tiles.stats[:, 0] == 0) & (tiles.stats[:, 1] == 0)
    if scale == "shared" and not dead.all():
        return tiles  # maps are placed on the shared range, zero included
    if dead.any():
        tiles.codes[dead] = 0
    return tiles
