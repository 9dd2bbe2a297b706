"""Integrated Gradients (Sundararajan et al., 2017), all in one place: the baselines, the
quadrature rules along the path, the convergence delta and :func:`integrated_gradients`."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from .._validate import check_int as _check_int
from ..imageops import gaussian_blur
from ..outputs import OutputSelector
from ..runner import Scores, forward_errors
from ._common import Target, _accumulator, _batch_size, _batched_gradients, _finish, _prepared, _report, _reporting

Baseline = Literal["black", "blur", "noise"]
#: Named baselines of :func:`integrated_gradients` (a tensor is accepted too).
BASELINES: tuple[str, ...] = ("black", "blur", "noise")

Integration = Literal["gausslegendre", "midpoint", "trapezoid"]
#: Quadrature rules for the path integral, as ``integration=`` of :func:`integrated_gradients`.
INTEGRATIONS: tuple[str, ...] = ("gausslegendre", "midpoint", "trapezoid")

#: Standard deviation of the Gaussian used for the "blur" baseline, as a fraction of max(H, W).
BLUR_SIGMA_FRACTION: float = 0.1


def path_points(steps: int, integration: Integration = "gausslegendre") -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)`` of a quadrature rule on [0, 1] (weights sum to 1).

    ``"gausslegendre"``: ``steps`` Gauss-Legendre nodes (exact for polynomials of degree
    ``2 * steps - 1``; Captum's default). ``"midpoint"``: ``(k + 1/2) / steps``, equal weights.
    ``"trapezoid"``: ``k / steps`` for ``k = 0..steps``, the end points weighted 1/2 (it
    evaluates the gradient exactly at the baseline, where e.g. a LayerNorm sees zero variance
    for a black image: prefer the other two).

    Examples
    --------
    >>> a, w = path_points(2, "midpoint")
    >>> a.tolist(), w.tolist()
    ([0.25, 0.75], [0.5, 0.5])
    """
    if integration == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    if integration == "midpoint":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if integration == "trapezoid":
        w = np.full(steps + 1, 1.0 / steps)
        w[[0, -1]] /= 2
        return np.arange(steps + 1) / steps, w
    names = ", ".join(repr(r) for r in INTEGRATIONS)
    raise ValueError(f"integration must be one of {names}; got {integration!r}")


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    steps: int = 50,
    baseline: Baseline | torch.Tensor = "black",
    batch_size: int | None = None,
    seed: int | None = None,
    *,
    integration: Integration = "gausslegendre",
    return_delta: bool = False,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrated Gradients (Sundararajan et al., 2017).

    ``IG(x) = (x - x') * integral_0^1 dS_t/dx (x' + a (x - x')) da``, the integral taken by a
    quadrature rule (:func:`path_points`) with ``steps`` gradient evaluations per image
    (``steps + 1`` for the trapezoid rule). The attributions sum to ``S_t(x) - S_t(x')``
    (completeness) up to the quadrature error; the difference is the **convergence delta**
    (``return_delta=True``; :func:`explain` reports it). For a linear model they equal
    ``(x - x') * w`` for any ``steps``.

    Parameters
    ----------
    model, x, target
        As in :func:`vanilla_gradient`.
    steps : int
        Gradient evaluations on the straight path (>= 1).
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
    integration : {"gausslegendre", "midpoint", "trapezoid"}
        The quadrature rule (:func:`path_points`). The default never evaluates the gradient
        at the baseline itself.
    return_delta : bool
        Also return the convergence delta per image, ``sum(IG) - (S_t(x) - S_t(x'))`` (N,),
        float32; it costs one forward pass of ``x`` and the baseline.
    output, region
        As in :func:`vanilla_gradient`.

    Returns
    -------
    torch.Tensor or (torch.Tensor, torch.Tensor)
        N x C x H x W, detached, float32 for a float16/bfloat16 model; with ``return_delta``
        also the delta (N,).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> x = torch.rand(1, 3, 2, 2)
    >>> ig, delta = integrated_gradients(net, x, target=1, steps=10, return_delta=True)
    >>> torch.allclose(ig, x * net[1].weight[1].view(3, 2, 2)), bool(delta.abs().max() < 1e-5)
    (True, True)
    """
    steps = _check_int(steps, "steps", 1)
    if batch_size is not None:
        batch_size = _check_int(batch_size, "batch_size", 1)
    if isinstance(baseline, str) and baseline not in BASELINES:
        names = ", ".join(repr(b) for b in BASELINES)
        raise ValueError(f"baseline must be one of {names} or a tensor; got {baseline!r}")
    alphas, weights = path_points(steps, integration)
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        base = _make_baseline(xd, baseline, seed)
        ig = _integrated_gradients(run, scores, xd, base, t, alphas, weights, _batch_size(batch_size, xd))
        delta = None
        if return_delta or _reporting():
            delta = convergence_delta(run, scores, xd, base, t, ig)
            _report("delta", delta)
    ig = _finish(ig)
    return (ig, delta) if return_delta else ig


def convergence_delta(model: nn.Module, scores: Scores, x: torch.Tensor, base: torch.Tensor,
                      targets: torch.Tensor, attribution: torch.Tensor) -> torch.Tensor:
    """``sum(attribution[i]) - (S_t(x[i]) - S_t(base[i]))`` per image (N,), float32 at least, from
    one forward pass of ``x`` and ``base`` together (inside :func:`_prepared`)."""
    n = x.shape[0]
    acc = _accumulator(attribution.dtype)
    with torch.no_grad(), forward_errors(x, model):
        s = scores(model(torch.cat([x, base]))).to(acc)
    picked = s.gather(1, torch.cat([targets, targets]).view(-1, 1))[:, 0]
    return (attribution.to(acc).sum(dim=(1, 2, 3)) - (picked[:n] - picked[n:])).cpu()


def _integrated_gradients(
    model: nn.Module,
    scores: Scores,
    x: torch.Tensor,
    base: torch.Tensor,
    targets: torch.Tensor,
    alphas: np.ndarray,
    weights: np.ndarray,
    batch_size: int,
) -> torch.Tensor:
    diff = x - base
    points = len(alphas)
    alpha_t = torch.as_tensor(alphas, dtype=torch.float64)
    weight_t = torch.as_tensor(weights, dtype=torch.float64)

    def make_inputs(jobs: slice) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        j = torch.arange(jobs.start, jobs.stop)
        idx, k = j // points, j % points
        alpha = alpha_t[k].to(device=x.device, dtype=x.dtype).view(-1, 1, 1, 1)
        idx = idx.to(x.device)
        return idx, base[idx] + alpha * diff[idx], weight_t[k].to(x.device)

    total = _batched_gradients(model, scores, targets, x.shape[0] * points, batch_size, make_inputs, x)
    return diff.to(total.dtype) * total


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
