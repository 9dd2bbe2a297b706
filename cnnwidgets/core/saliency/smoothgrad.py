"""SmoothGrad (Smilkov et al., 2017): the gradient averaged over noisy copies of the input."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch
from torch import nn

from .._validate import check_int as _check_int
from ..outputs import OutputSelector
from ..runner import Scores
from ._common import Target, _batch_size, _batched_gradients, _finish, _prepared


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    samples: int = 25,
    noise: float = 0.15,
    batch_size: int | None = None,
    seed: int | None = None,
    *,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """SmoothGrad: the vanilla gradient averaged over noisy copies of the input (Smilkov et al., 2017).

    Parameters
    ----------
    model, x, target
        As in :func:`vanilla_gradient`. A None target is the class predicted for the clean
        image, kept for all its noisy copies.
    samples : int
        Noisy copies per image (>= 1).
    noise : float
        Standard deviation of the Gaussian noise as a fraction of each image's value range
        ``x[i].max() - x[i].min()`` (>= 0; 0 gives the vanilla gradient).
    batch_size : int, optional
        At most this many noisy images go through the model at once; None: as many as make
        about :data:`BATCH_VALUES` input values.
    seed : int, optional
        Seeds a private generator (the result then does not depend on ``batch_size``); None
        draws from torch's global generator.
    output, region
        As in :func:`vanilla_gradient`.

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> smoothgrad(net, torch.rand(2, 3, 2, 2), samples=4, seed=0).shape
    torch.Size([2, 3, 2, 2])
    """
    samples = _check_int(samples, "samples", 1)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    if isinstance(noise, bool) or not (isinstance(noise, numbers.Real) and math.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        return _finish(_smoothgrad(run, scores, xd, t, samples, float(noise), _batch_size(batch_size, xd), seed))


def _smoothgrad(
    model: nn.Module,
    scores: Scores,
    x: torch.Tensor,
    targets: torch.Tensor,
    samples: int,
    noise: float,
    batch_size: int,
    seed: int | None,
) -> torch.Tensor:
    n = x.shape[0]
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    sigma = noise * (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))  # per image

    drawn: dict[int, torch.Tensor] = {}

    def image_noise(i: int) -> torch.Tensor:
        # all samples of image i in one draw, images in order: the same noise whatever the
        # batch_size; only the image(s) of the current batch are kept
        if i not in drawn:
            for done in [k for k in drawn if k < i]:
                del drawn[done]
            drawn[i] = torch.randn((samples, *x.shape[1:]), generator=generator)
        return drawn[i]

    def make_inputs(jobs: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # job j is sample j % samples of image j // samples
        idx = torch.arange(jobs.start, jobs.stop, device=x.device) // samples
        parts = []
        j = jobs.start
        while j < jobs.stop:
            i, k = divmod(j, samples)
            take = min(samples - k, jobs.stop - j)
            parts.append(image_noise(i)[k : k + take])
            j += take
        eps = parts[0] if len(parts) == 1 else torch.cat(parts)
        inputs = x[idx] + eps.to(device=x.device, dtype=x.dtype) * sigma[idx].view(-1, 1, 1, 1)
        return idx, inputs, torch.ones(len(idx), device=x.device)

    return _batched_gradients(model, scores, targets, n * samples, batch_size, make_inputs, x) / samples
