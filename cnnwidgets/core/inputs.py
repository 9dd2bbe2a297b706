"""Input images: convert what users have into the batch a model takes, and back for display."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["as_batch", "to_display", "check_stats"]


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
        * uint8 array N x H x W x C, N x H x W or H x W x C (0..255): scaled to [0, 1], then
          normalized with ``(x - mean) / std`` when both are given.
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
            if arr.shape[0] == 0:
                raise ValueError("images is empty (N = 0); pass at least one image")
            t = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
            m, s = check_stats(mean, std, t.shape[1])
            if m is not None:
                t = (t - torch.from_numpy(m).view(1, -1, 1, 1)) / torch.from_numpy(s).view(1, -1, 1, 1)
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
        t = t * torch.from_numpy(s).view(1, -1, 1, 1) + torch.from_numpy(m).view(1, -1, 1, 1)
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
