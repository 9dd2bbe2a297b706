"""Input images: convert what users have into the batch a model takes, and back for display.

The per-channel normalization ``(x - mean) / std`` and its inverse are written here once
(:func:`normalize`, :func:`denormalize`); the rest of the core calls them. Two checks of the
statistics come with them: :func:`check_stats` for data sets (both or neither, one value
or one per channel) and :func:`stats_tensor` for the optimization (either may come alone).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch

__all__ = ["as_batch", "to_display", "check_stats", "stats_tensor", "normalize", "denormalize"]

#: Checked per-channel statistics (1 or C values), or None for none.
Stats = Union[torch.Tensor, np.ndarray, None]


def check_stats(mean: Any, std: Any, channels: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Validate ``mean``/``std`` (scalars or one value per channel) and return float32 arrays (C,)."""
    out = []
    for name, v in (("mean", mean), ("std", std)):
        if v is None:
            out.append(None)
            continue
        arr = np.asarray(v, dtype=np.float32).reshape(-1)
        if arr.size == 1:
            arr = np.repeat(arr, channels)
        if arr.size != channels:
            raise ValueError(
                f"{name} must have one value per channel ({channels}), got {arr.size} values: {v!r}"
            )
        if name == "std" and np.any(arr == 0):
            raise ValueError(f"std must be non-zero, got {v!r}")
        out.append(arr)
    if (out[0] is None) != (out[1] is None):
        raise ValueError("pass both mean and std, or neither")
    return out[0], out[1]


def stats_tensor(v: Any, channels: int, name: str, device: torch.device | str | None = None) -> torch.Tensor | None:
    """``mean`` or ``std`` (``name``) as a float32 tensor 1 x C x 1 x 1 (1 x 1 x 1 x 1 for one value).

    The check of the optimization, where either statistic may come alone: ``v`` holds 1 or
    ``channels`` values, and a ``std`` must be > 0. None gives None.

    Examples
    --------
    >>> stats_tensor([0.5, 0.25, 0.0], 3, "mean").shape
    torch.Size([1, 3, 1, 1])
    >>> stats_tensor(0.0, 3, "std")
    Traceback (most recent call last):
    ...
    ValueError: std must be > 0, got [0.0]
    """
    if v is None:
        return None
    t = torch.as_tensor(v, dtype=torch.float32).flatten()
    if t.numel() not in (1, channels):
        raise ValueError(f"{name} must have 1 or C = {channels} values, got {t.numel()}")
    if name == "std" and bool((t <= 0).any()):
        raise ValueError(f"std must be > 0, got {t.tolist()}")
    return t.view(1, -1, 1, 1).to(device)


def _per_channel(v: torch.Tensor | np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """``v`` (1 or C values) shaped 1 x C x 1 x 1 on ``like``'s device, for broadcasting."""
    t = v if isinstance(v, torch.Tensor) else torch.from_numpy(np.asarray(v))
    return t.view(1, -1, 1, 1).to(like.device)


def normalize(x: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """``(x - mean) / std`` per channel of the N x C x H x W batch ``x``.

    ``mean`` and ``std`` hold 1 or C values (checked ones: :func:`check_stats`,
    :func:`stats_tensor`); a None one is left out, and with both None ``x`` itself is
    returned.

    Examples
    --------
    >>> m, s = np.array([0.5, 0.0], np.float32), np.array([0.5, 2.0], np.float32)
    >>> normalize(torch.ones(1, 2, 1, 1), m, s).flatten()
    tensor([1.0000, 0.5000])
    """
    if mean is not None:
        x = x - _per_channel(mean, x)
    if std is not None:
        x = x / _per_channel(std, x)
    return x


def denormalize(x: torch.Tensor, mean: Stats, std: Stats) -> torch.Tensor:
    """``x * std + mean`` per channel: the inverse of :func:`normalize`.

    Examples
    --------
    >>> m, s = np.array([0.5, 0.0], np.float32), np.array([0.5, 2.0], np.float32)
    >>> denormalize(normalize(torch.ones(1, 2, 1, 1), m, s), m, s).flatten()
    tensor([1., 1.])
    """
    if std is not None:
        x = x * _per_channel(std, x)
    if mean is not None:
        x = x + _per_channel(mean, x)
    return x


#: Channel counts that tell where the channel axis of uint8 images is (gray, RGB, RGBA).
_CHANNEL_COUNTS = (1, 3, 4)


def as_batch(
    images: Any,
    *,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Convert images to a float32 N x C x H x W tensor the model takes.

    Parameters
    ----------
    images : torch.Tensor or numpy.ndarray
        * float tensor/array N x C x H x W (or C x H x W for one image): taken as is, already
          normalized the way the model expects;
        * uint8 array or tensor N x H x W x C or N x C x H x W (C = 1, 3 or 4 tells the channel
          axis; a shape with such a size on both axes is read as N x H x W x C), N x H x W or
          H x W x C (0..255): scaled to [0, 1], then normalized with
          ``(x - mean) / std`` when both are given.
    mean, std : float or sequence of float, optional
        Per-channel statistics of the model's normalization (used for uint8 input only).
    device : torch.device, optional
        Where to put the batch (e.g. :func:`cnnwidgets.core.model_device`).

    Returns
    -------
    torch.Tensor
        float32, N x C x H x W.

    Examples
    --------
    >>> as_batch(np.zeros((2, 28, 28, 1), np.uint8)).shape
    torch.Size([2, 1, 28, 28])
    """
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], (torch.Tensor, np.ndarray)):
        images = torch.stack([torch.as_tensor(np.asarray(i) if isinstance(i, np.ndarray) else i) for i in images])
    if isinstance(images, np.ndarray):
        if images.dtype == np.uint8:
            arr = images
            if arr.ndim == 2:  # H x W
                arr = arr[None, :, :, None]
            elif arr.ndim == 3:
                # N x H x W (gray stack) or H x W x C (one colour image)
                arr = arr[..., None] if arr.shape[-1] not in (1, 3) else arr[None]
            if arr.ndim != 4:
                raise ValueError(f"uint8 images must be N x H x W x C, got shape {images.shape}")
            if images.ndim == 4 and arr.shape[1] in _CHANNEL_COUNTS and arr.shape[-1] not in _CHANNEL_COUNTS:
                arr = arr.transpose(0, 2, 3, 1)  # N x C x H x W: torch's own layout (e.g. a uint8 tensor)
            if arr.shape[0] == 0:
                raise ValueError("images is empty (N = 0); pass at least one image")
            t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
            m, s = check_stats(mean, std, t.shape[1])
            t = normalize(t, m, s)
            return t.to(device) if device is not None else t
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(
                f"images must be uint8 (0..255, N x H x W x C) or float (N x C x H x W), got dtype {images.dtype}"
            )
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise TypeError(
            f"images must be a torch.Tensor or numpy.ndarray, got {type(images).__name__}. "
            "Hint: float N x C x H x W tensors or uint8 N x H x W x C arrays."
        )
    t = images
    if t.dtype == torch.uint8:
        return as_batch(t.cpu().numpy(), mean=mean, std=std, device=device)
    if not t.is_floating_point():
        raise TypeError(f"image tensors must be floating point N x C x H x W, got dtype {t.dtype}")
    if t.dim() == 3:
        t = t.unsqueeze(0)
    if t.dim() != 4:
        raise ValueError(f"images must be N x C x H x W (or C x H x W), got shape {tuple(images.shape)}")
    if t.shape[0] == 0:
        raise ValueError("images is empty (N = 0); pass at least one image")
    t = t.float()
    return t.to(device) if device is not None else t


def to_display(
    x: torch.Tensor | np.ndarray,
    *,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> np.ndarray:
    """Undo the normalization and return uint8 images for display.

    Parameters
    ----------
    x : tensor or array, N x C x H x W (or C x H x W)
        Model inputs.
    mean, std : optional
        When given, ``x * std + mean`` is taken to be in [0, 1]. Without them, each image is
        min-max scaled to [0, 1].

    Returns
    -------
    numpy.ndarray
        uint8, N x H x W x C (C is 1 or 3; 4+ channels keep their first three).
    """
    t = torch.as_tensor(x).detach().float().cpu()
    single = t.dim() == 3
    if single:
        t = t.unsqueeze(0)
    c = t.shape[1]
    m, s = check_stats(mean, std, c)
    if m is not None:
        t = denormalize(t, m, s)
    else:
        lo = t.amin(dim=(1, 2, 3), keepdim=True)
        hi = t.amax(dim=(1, 2, 3), keepdim=True)
        t = (t - lo) / (hi - lo).clamp_min(1e-12)
    if c > 3:
        t = t[:, :3]
    elif c == 2:
        t = t[:, :1]
    out = (t.clamp(0, 1) * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return out[0] if single else out
