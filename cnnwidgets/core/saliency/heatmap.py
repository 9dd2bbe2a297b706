"""Display: an attribution reduced to one map per image, scaled per image (:func:`to_heatmap`)."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

HeatmapMode = Literal["abs", "signed"]
#: Valid values of ``mode`` for :func:`to_heatmap`.
HEATMAP_MODES: tuple[str, ...] = ("abs", "signed")


def to_heatmap(attr: torch.Tensor | np.ndarray, mode: HeatmapMode = "abs") -> np.ndarray:
    """Reduce an attribution's channels to one map per image, scaled per image.

    Parameters
    ----------
    attr : tensor or array, N x C x H x W (or C x H x W)
        An attribution, e.g. from :func:`attribute`. For a Grad-CAM map (N x H x W) pass
        ``cam[:, None]``.
    mode : {"abs", "signed"}
        ``"abs"``: max over channels of ``|a|``, divided by the image's largest value, so in
        [0, 1] (the classic saliency map). ``"signed"``: sum over channels divided by the
        image's largest absolute sum, so in [-1, 1]. An all-zero image gives zeros.

    Returns
    -------
    numpy.ndarray
        float32, N x H x W (H x W for a 3-D input).

    Examples
    --------
    >>> to_heatmap(torch.tensor([[[1.0, -4.0]], [[-2.0, 2.0]]])).tolist()
    [[0.5, 1.0]]
    """
    if mode not in HEATMAP_MODES:
        raise ValueError(f"mode must be one of {', '.join(repr(m) for m in HEATMAP_MODES)}; got {mode!r}")
    a = torch.as_tensor(attr.detach() if isinstance(attr, torch.Tensor) else np.asarray(attr))
    single = a.dim() == 3
    if a.dim() not in (3, 4):
        raise ValueError(f"attr must be N x C x H x W (or C x H x W), got shape {tuple(a.shape)}")
    a = a.to(device="cpu", dtype=torch.float64)
    if single:
        a = a.unsqueeze(0)
    maps = a.abs().amax(dim=1) if mode == "abs" else a.sum(dim=1)
    scale = maps.abs().flatten(1).amax(dim=1).view(-1, 1, 1)
    maps = torch.where(scale > 0, maps / scale.clamp_min(torch.finfo(torch.float64).tiny), torch.zeros_like(maps))
    out = maps.to(torch.float32).numpy()
    return out[0] if single else out
