"""Integrated Gradients (Sundararajan et al., 2017), all in one place: the baselines, the
trapezoid rule along the path and :func:`integrated_gradients` itself."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import nn

from .._validate import check_int as _check_int
from ..imageops import gaussian_blur
from ._common import Target, _batch_size, _batched_gradients, _prepared

Baseline = Literal["black", "blur", "noise"]
#: Named baselines of :func:`integrated_gradients` (a tensor is accepted too).
BASELINES: tuple[str, ...] = ("black", "blur", "noise")

#: Standard deviation of the Gaussian used for the "blur" baseline, as a fraction of max(H, W).
BLUR_SIGMA_FRACTION: float = 0.1


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    steps: int = 50,
    baseline: Baseline | torch.Tensor = "black",
    batch_size: int | None = None,
    seed: int | None = None,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al., 2017), trapezoid rule.

    ``IG(x) = (x - x') * integral_0^1 dS_t/dx (x' + a (x - x')) da`` with the integral taken
    by the trapezoid rule on ``steps`` intervals (``steps + 1`` gradient evaluations, the end
    points weighted 1/2). The attributions then sum to ``S_t(x) - S_t(x')`` up to an error of
    order ``1 / steps**2`` for a smooth model (completeness); for a linear model they equal
    ``(x - x') * w`` for any ``steps``.

    Parameters
    ----------
    model, x, target
        As in :func:`vanilla_gradient`.
    steps : int
        Number of intervals on the straight path (>= 1).
    baseline : {"black", "blur", "noise"} or tensor
        ``"black"``: all zeros (a black image only if the model takes unnormalized [0, 1]
        pixels; otherwise pass the normalized black image as a tensor). ``"blur"``: ``x``
        blurred by a Gaussian with sigma ``BLUR_SIGMA_FRACTION * max(H, W)``. ``"noise"``:
        uniform noise between each image's min and max value. A tensor broadcastable to
        N x C x H x W is used as is.
    batch_size : int, optional
        At most this many path images go through the model at once (memory stays bounded);
        None: as many as make about :data:`BATCH_VALUES` input values.
    seed : int, optional
        Seed for the ``"noise"`` baseline; None draws from torch's global generator.

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> x = torch.rand(1, 3, 2, 2)
    >>> ig = integrated_gradients(net, x, target=1, steps=10)
    >>> torch.allclose(ig, x * net[1].weight[1].view(3, 2, 2))
    True
    """
    steps = _check_int(steps, "steps", 1)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    if isinstance(baseline, str) and baseline not in BASELINES:
        names = ", ".join(repr(b) for b in BASELINES)
        raise ValueError(f"baseline must be one of {names} or a tensor; got {baseline!r}")
    with _prepared(model, x, target) as (run, xd, t):
        return _integrated_gradients(run, xd, t, steps, baseline, _batch_size(batch_size, xd), seed)


def _integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    steps: int,
    baseline: Baseline | torch.Tensor,
    batch_size: int,
    seed: int | None,
) -> torch.Tensor:
    base = _make_baseline(x, baseline, seed)
    diff = x - base
    points = steps + 1  # trapezoid rule: alpha = k / steps, k = 0..steps

    def make_inputs(jobs: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        j = torch.arange(jobs.start, jobs.stop, device=x.device)
        idx, k = j // points, j % points
        alpha = (k.to(torch.float64) / steps).to(x.dtype).view(-1, 1, 1, 1)
        weights = torch.where((k == 0) | (k == steps), 0.5, 1.0)
        return idx, base[idx] + alpha * diff[idx], weights

    total = _batched_gradients(model, targets, x.shape[0] * points, batch_size, make_inputs, x)
    return diff * total / steps


def _make_baseline(x: torch.Tensor, baseline: Baseline | torch.Tensor, seed: int | None) -> torch.Tensor:
    if isinstance(baseline, (torch.Tensor, np.ndarray)):
        b = torch.as_tensor(baseline).to(device=x.device, dtype=x.dtype)
        try:
            return torch.broadcast_to(b, x.shape).clone()
        except RuntimeError:
            raise ValueError(
                f"baseline tensor of shape {tuple(b.shape)} does not broadcast to x's shape {tuple(x.shape)}"
            ) from None
    if baseline == "black":
        return torch.zeros_like(x)
    if baseline == "blur":
        return gaussian_blur(x, BLUR_SIGMA_FRACTION * max(x.shape[-2:]))
    if baseline == "noise":
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        u = torch.rand(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        return lo + u * (hi - lo)
    raise ValueError(f"baseline must be one of {', '.join(repr(b) for b in BASELINES)} or a tensor; got {baseline!r}")
