"""Generic image operations on B x C x H x W float tensors: Gaussian blur, rotation and zoom.

Shared by the optimization (:mod:`cnnwidgets.core.optimize`: the ``blur_every`` image op and
the ``scale`` / ``rotate`` transforms) and the attribution (:mod:`cnnwidgets.core.saliency`:
the blurred baseline of Integrated Gradients). Plain torch; no widget imports.

Examples
--------
>>> img = torch.full((1, 3, 8, 8), 0.25)
>>> torch.allclose(gaussian_blur(img, 2.0), img), rotate_zoom(img, 30.0, 1.2).shape
(True, torch.Size([1, 3, 8, 8]))
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._validate import check_float as _check_float

__all__ = ["gaussian_blur", "rotate_zoom"]


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of each channel (B x C x H x W), kernel radius ``ceil(3 sigma)``.

    The kernel is normalized to sum 1 and the borders are replicated, so a constant image is
    unchanged. ``sigma == 0`` returns ``img``.

    Examples
    --------
    >>> delta = torch.zeros(1, 1, 9, 9); delta[0, 0, 4, 4] = 1.0
    >>> out = gaussian_blur(delta, 1.0)
    >>> round(float(out.sum()), 4), bool(out.max() < 0.2)
    (1.0, True)
    """
    sigma = _check_float(sigma, "sigma", nonneg=True)
    if sigma == 0:
        return img
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(device=img.device, dtype=img.dtype)
    c = img.shape[1]
    out = F.pad(img, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def rotate_zoom(img: torch.Tensor, degrees: float, factor: float) -> torch.Tensor:
    """Rotate by ``degrees`` (counter-clockwise on screen) and zoom by ``factor`` about the
    centre, keeping H x W (bilinear, reflection at the borders).

    ``degrees == 0`` and ``factor == 1`` return ``img`` itself. A factor > 1 enlarges the
    content (the borders are cut off), < 1 shrinks it (the border is filled by reflection).

    Examples
    --------
    >>> img = torch.rand(1, 1, 6, 6)
    >>> rotate_zoom(img, 0.0, 1.0) is img
    True
    >>> torch.allclose(rotate_zoom(img, 90.0, 1.0), torch.rot90(img, 1, (-2, -1)), atol=1e-5)
    True
    """
    if degrees == 0 and factor == 1:
        return img
    n, _, h, w = img.shape
    a = math.radians(degrees)
    cos, sin = math.cos(a) / factor, math.sin(a) / factor
    # output pixel -> input position: rotate back by ``degrees`` (y points down on screen)
    theta = torch.tensor([[cos, -sin * h / w, 0.0], [sin * w / h, cos, 0.0]], dtype=img.dtype, device=img.device)
    grid = F.affine_grid(theta.expand(n, 2, 3), list(img.shape), align_corners=False)
    return F.grid_sample(img, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
