"""Feature maps: per-channel statistics, channel ordering, top-activating images, display codes.

Everything here is plain torch/numpy; no widget imports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal


import numpy as np
import torch
from torch import nn

from ._validate import as_int
from .filters import FilterTiles, kernel_tiles
from .inputs import as_batch
from .model import get_layer, model_device, model_dtype
from .runner import LayerTap, require_4d, using_model

__all__ = [
    "STAT_COLUMNS",
    "ChannelOrder",
    "ImageScore",
    "MapScale",
    "map_stats",
    "maps_codes",
    "order_channels",
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


def _batches(images: Any, batch_size: int, mean: Any, std: Any, device: torch.device,
             dtype: torch.dtype = torch.float32) -> tuple[int, Any]:
    """(N, iterator of N_i x C x H x W batches on ``device`` in ``dtype``, the model's), converting
    one batch at a time."""
    if isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 4:
        n = int(images.shape[0])
        if n == 0:
            raise ValueError("images is empty (N = 0); pass at least one image")

        def gen():
            for start in range(0, n, batch_size):
                yield as_batch(images[start : start + batch_size], mean=mean, std=std, device=device).to(dtype)

        return n, gen()
    full = as_batch(images, mean=mean, std=std, device=device)
    n = int(full.shape[0])
    return n, (full[s : s + batch_size].to(dtype) for s in range(0, n, batch_size))


def top_images(
    model: nn.Module,
    images: Any,
    layer: str,
    channel: int,
    k: int = 9,
    *,
    batch_size: int = 256,
    by: ImageScore = "max",
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The images of a data set that activate one feature map the most.

    Every image is scored by the maximum (or mean) of its ``channel`` map at ``layer``; the
    data set is run in batches, each forward pass stopping right after ``layer``.

    Parameters
    ----------
    model : nn.Module
    images : torch.Tensor or numpy.ndarray
        Float N x C x H x W (normalized for the model) or anything :func:`as_batch` takes,
        e.g. uint8 N x H x W x C with ``mean``/``std``. 4-D inputs are converted one batch
        at a time.
    layer : str
        Qualified name of a layer with a 4-D output (N x K x h x w); its first call is used.
    channel : int
        0 <= channel < K.
    k : int
        How many images to return (at least 1; more than N gives all N).
    batch_size : int
        Images per forward pass.
    by : {"max", "mean"}
        Score of an image: the maximum or the mean of its map.
    mean, std : optional
        Normalization for uint8 images, passed to :func:`as_batch`.
    progress : callable, optional
        ``progress(done, total)`` after every batch, with the number of images scored so far
        and N.

    Returns
    -------
    indices : numpy.ndarray
        int64, (min(k, N),): image indices, highest score first (ties in index order).
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
    batch_size = _positive_int(batch_size, "batch_size")
    channel = as_int(channel, "channel")
    if by not in ("max", "mean"):
        raise ValueError(f"by must be 'max' or 'mean', got {by!r}")
    device = model_device(model)
    n, batches = _batches(images, batch_size, mean, std, device, model_dtype(model))
    scores = np.empty(n, dtype=np.float32)
    got: list[torch.Tensor] = []

    def check(name: str, out: Any) -> None:
        require_4d(name, out)
        kk = out.shape[1]
        if not 0 <= channel < kk:
            raise ValueError(f"channel must be in 0..{kk - 1} (layer {layer!r} has {kk} channels), got {channel}")

    done = 0
    with using_model(model) as run, torch.no_grad(), LayerTap(run, layer, check=check) as tap:
        for batch in batches:
            out = tap.run(batch)[1][layer]
            maps = out[:, channel].flatten(1)
            got = maps.amax(dim=1) if by == "max" else maps.mean(dim=1, dtype=torch.float64)
            b = batch.shape[0]
            scores[done : done + b] = got.detach().to(device="cpu", dtype=torch.float32).numpy()
            done += b
            if progress is not None:
                progress(done, n)
    order = np.argsort(-scores.astype(np.float64), kind="stable")[:k].astype(np.int64)
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
