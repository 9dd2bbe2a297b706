"""Image operations: changes of the pixels between steps (pixel parameterization only).

:func:`blur_every` (a Gaussian blur every n steps) and :func:`clip_weak_pixels` (weak pixels
back to gray), the regularizers of Yosinski et al. (2015). The blur itself is the generic
:func:`cnnwidgets.core.imageops.gaussian_blur`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from .._validate import check_float as _check_float
from .._validate import check_int as _check_int
from ..imageops import gaussian_blur
from ._common import GRAY

# ---------------------------------------------------------------- image operations
ImageOp = Callable[..., torch.Tensor]


def _image_op(fn: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor], every: int, needs_grad: bool) -> ImageOp:
    def op(img: torch.Tensor, step: int = 0, grad: torch.Tensor | None = None) -> torch.Tensor:
        if (step + 1) % every:
            return img
        return fn(img, grad)

    op.every = every  # type: ignore[attr-defined]
    op.needs_grad = needs_grad  # type: ignore[attr-defined]
    return op


def blur_every(n: int, sigma: float) -> ImageOp:
    """Gaussian-blur the image after every ``n``-th step (a smoothness prior, Yosinski et al.).

    Returns
    -------
    callable
        ``op(img, step=0, grad=None) -> img``: for ``(step + 1) % n == 0`` (``step`` is the
        0-based index of the step just done) the blurred image (:func:`gaussian_blur`), else
        ``img`` itself. A constant image is unchanged; a single bright pixel spreads out.

    Examples
    --------
    >>> op = blur_every(2, 1.0)
    >>> img = torch.rand(1, 1, 8, 8)
    >>> op(img, step=0) is img, op(img, step=1).shape
    (True, torch.Size([1, 1, 8, 8]))
    """
    n = _check_int(n, "n", 1)
    sigma = _check_float(sigma, "sigma", nonneg=True)
    return _image_op(lambda img, grad: gaussian_blur(img, sigma), n, False)


def clip_weak_pixels(
    percentile: float, by: Literal["norm", "contribution"] = "norm", every: int = 1
) -> ImageOp:
    """Set the weakest pixels of each image back to gray (Yosinski et al. 2015).

    A pixel's strength is, over its channels, ``by="norm"``: the Euclidean norm of its
    deviation from gray, ``||img[:, y, x] - 0.5||``; ``by="contribution"``: its estimated
    contribution to the objective, ``sum_c |(img - 0.5) * grad|`` (``grad`` = gradient of the
    objective with respect to the image). The pixels of an image whose strength is strictly
    below the ``percentile``-th percentile of that image's strengths (linear interpolation,
    ``torch.quantile``) get their deviation from gray set to zero: they become 0.5.

    Parameters
    ----------
    percentile : float
        0..100; 0 clips nothing.
    by : {"norm", "contribution"}
    every : int
        Apply after every ``every``-th step.

    Returns
    -------
    callable
        ``op(img, step=0, grad=None) -> img``. ``by="contribution"`` needs ``grad`` (same shape
        as ``img``; :func:`optimize` passes it).

    Examples
    --------
    >>> img = 0.5 + torch.arange(4.0).view(1, 1, 2, 2) / 10
    >>> clip_weak_pixels(50)(img)  # strengths 0, .1, .2, .3; median .15
    tensor([[[[0.5000, 0.5000],
              [0.7000, 0.8000]]]])
    """
    percentile = _check_float(percentile, "percentile", nonneg=True)
    if percentile > 100:
        raise ValueError(f"percentile must be in 0..100, got {percentile}")
    if by not in ("norm", "contribution"):
        raise ValueError(f"by must be 'norm' or 'contribution', got {by!r}")
    every = _check_int(every, "every", 1)

    def fn(img: torch.Tensor, grad: torch.Tensor | None) -> torch.Tensor:
        dev = img - GRAY
        if by == "norm":
            strength = dev.pow(2).sum(1).sqrt()
        else:
            if grad is None or grad.shape != img.shape:
                raise ValueError(
                    "clip_weak_pixels(by='contribution') needs grad, the gradient of the objective, shaped like img"
                )
            strength = (dev * grad).abs().sum(1)
        flat = strength.flatten(1)
        thr = torch.quantile(flat.double(), percentile / 100.0, dim=1).to(flat.dtype)
        keep = (strength >= thr.view(-1, 1, 1)).unsqueeze(1)
        return GRAY + dev * keep

    return _image_op(fn, every, by == "contribution")
