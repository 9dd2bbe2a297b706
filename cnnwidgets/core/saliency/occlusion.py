"""Occlusion (Zeiler & Fergus, 2014): how much the class score drops when a patch of the
image is covered, as Captum's ``Occlusion`` defines it, with many occluded copies per
forward pass and no gradients."""

from __future__ import annotations

import math
from typing import Any, Union

import numpy as np
import torch
from torch import nn

from .._validate import as_int, check_float, check_int
from ..imageops import gaussian_blur
from ..outputs import OutputSelector
from ..runner import forward_errors
from ._common import Target, _accumulator, _batch_size, _check_batch, _check_target_range, _finish, _prepared

#: A window or stride: one int for both sides, or ``(height, width)``.
Size2 = Union[int, tuple[int, int]]


def _pair(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {value!r}")
        return as_int(value[0], name), as_int(value[1], name)
    v = as_int(value, name)
    return v, v


def default_window(h: int, w: int) -> tuple[int, int]:
    """The window and stride :func:`occlusion` uses when none is given, for H x W images: a
    square a seventh of the shorter side (at least 2 pixels, at most the side), moving by half
    its side: 13 x 13 positions, whatever the size (4 / 2 for 28 x 28, 32 / 16 for 224 x 224).

    >>> default_window(28, 28), default_window(224, 224), default_window(5, 5)
    ((4, 2), (32, 16), (2, 1))
    """
    window = min(max(2, min(h, w) // 7), min(h, w))
    return window, max(1, window // 2)


def _windows(size: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``(start, end)`` of every window along one side, as Captum places them: starts at
    ``0, stride, 2 stride, ...``, ``ceil((size - window) / stride) + 1`` of them, the last one
    cut at the border when the stride does not divide ``size - window``."""
    count = math.ceil((size - window) / stride) + 1
    return [(i * stride, min(i * stride + window, size)) for i in range(count)]


def _cover(spans: list[tuple[int, int]], size: int, device: torch.device) -> torch.Tensor:
    """bool (windows, size): which positions each window covers."""
    m = torch.zeros(len(spans), size, dtype=torch.bool, device=device)
    for i, (a, b) in enumerate(spans):
        m[i, a:b] = True
    return m


def _occlusion_baseline(x: torch.Tensor, baseline: Any) -> torch.Tensor:
    """The values an occluded patch takes: N x C x H x W (or a 0-d tensor for a number)."""
    if isinstance(baseline, (torch.Tensor, np.ndarray)):
        b = torch.as_tensor(baseline).to(device=x.device, dtype=x.dtype)
        try:
            return torch.broadcast_to(b, x.shape)
        except RuntimeError:
            raise ValueError(
                f"baseline tensor of shape {tuple(b.shape)} does not broadcast to x's shape {tuple(x.shape)}"
            ) from None
    if isinstance(baseline, str):
        if baseline == "black":
            return torch.zeros((), device=x.device, dtype=x.dtype)
        if baseline == "blur":
            from .integrated_gradients import BLUR_SIGMA_FRACTION

            return gaussian_blur(x, BLUR_SIGMA_FRACTION * max(x.shape[-2:]))
        raise ValueError(
            f"baseline must be a number, a tensor, 'black' (0.0) or 'blur' (the blurred image's patch); got {baseline!r}"
        )
    return torch.tensor(check_float(baseline, "baseline"), device=x.device, dtype=x.dtype)


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    *,
    window: Size2 | None = None,
    stride: Size2 | None = None,
    baseline: float | str | torch.Tensor = 0.0,
    batch_size: int | None = None,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Occlusion (Zeiler & Fergus, 2014): the drop of the target score when a square patch is
    covered, averaged over the patches covering each pixel.

    A ``window`` slides over the image by ``stride`` (starting at the top left, the last
    window along a side cut at the border when the stride does not divide ``H - window``); for
    each position the patch, all channels, is replaced by ``baseline`` and the image scored.
    The attribution of a pixel is the mean, over the windows covering it, of
    ``S_t(x) - S_t(x occluded)``. This is Captum's
    ``Occlusion(model).attribute(x, sliding_window_shapes=(C, h, w), strides=(C, sh, sw),
    baselines=baseline)`` (same windows, same average). For a linear score
    ``S(x) = sum w * x`` and a 1 x 1 window it is ``sum over channels of w * (x - baseline)``
    at every pixel.

    Parameters
    ----------
    model, x, target
        As in :func:`~cnnwidgets.core.saliency.vanilla_gradient` (scores are logits; a final
        softmax/sigmoid is bypassed with a ``UserWarning``).
    window : int or (int, int), optional
        Side of the occluding patch in pixels (height, width), at most the image's; None:
        :func:`default_window` (a seventh of the shorter side).
    stride : int or (int, int), optional
        Step between window positions, from 1 up to ``window`` (a larger step would leave
        pixels that no window covers; allowed only where the window spans the whole side);
        None: half the window (:func:`default_window` when no window is given either).
    baseline : float, tensor, "black" or "blur"
        What a covered patch shows: a number (0.0 is black for [0, 1] pixels, the mean colour
        for normalized ones), a tensor broadcastable to N x C x H x W (its values under the
        patch), ``"black"`` (0.0) or ``"blur"`` (the image blurred as Integrated Gradients'
        ``"blur"`` baseline).
    batch_size : int, optional
        Occluded copies per forward pass; None: as many as make about
        :data:`~cnnwidgets.core.saliency._common.FORWARD_BATCH_VALUES` input values (10 at
        3 x 224 x 224).
    output, region
        As in :func:`~cnnwidgets.core.saliency.vanilla_gradient`.

    Returns
    -------
    torch.Tensor
        N x C x H x W (the same value on every channel), detached, float32 for a
        float16/bfloat16 model. Cost: ``N * rows * columns`` forward passes of one image, with
        ``rows = ceil((H - window) / stride) + 1`` (13 x 13 with the default window; 55 x 55
        for 224 x 224 with window 8 and stride 4).

    Raises
    ------
    ValueError
        A window larger than the image or smaller than 1, a stride below 1 or above the
        window, and the errors of :func:`~cnnwidgets.core.saliency.vanilla_gradient`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> x = torch.rand(1, 3, 2, 2)
    >>> a = occlusion(net, x, target=1, window=1, stride=1)
    >>> a.shape
    torch.Size([1, 3, 2, 2])
    >>> contribution = (x * net[1].weight[1].view(1, 3, 2, 2)).sum(1, keepdim=True)
    >>> torch.allclose(a, contribution.expand(1, 3, 2, 2), atol=1e-6)
    True
    """
    if window is None or stride is None:
        _check_batch(x)
        auto_window, auto_stride = default_window(*x.shape[-2:])
        if window is None:
            window = auto_window
        if stride is None:
            stride = auto_stride if window == auto_window else tuple(max(1, v // 2) for v in _pair(window, "window"))
    wh, ww = _pair(window, "window")
    sh, sw = _pair(stride, "stride")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    if min(wh, ww) < 1:
        raise ValueError(f"window must be >= 1 pixel, got {window!r}")
    if min(sh, sw) < 1:
        raise ValueError(f"stride must be >= 1, got {stride!r}")
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        n, c, h, w = xd.shape
        if wh > h or ww > w:
            raise ValueError(f"window {wh} x {ww} is larger than the images ({h} x {w}); use at most {h} x {w}")
        for side, win, st, size in (("height", wh, sh, h), ("width", ww, sw, w)):
            if st > win and win < size:
                raise ValueError(
                    f"stride {st} is larger than the window {win} ({side}): some pixels would never be occluded; "
                    f"use a stride of at most {win}"
                )
        base = _occlusion_baseline(xd, baseline)
        rows = _cover(_windows(h, wh, sh), h, xd.device)  # R x H
        cols = _cover(_windows(w, ww, sw), w, xd.device)  # Q x W
        return _finish(_occlusion(run, scores, xd, base, t, rows, cols, _batch_size(batch_size, xd, forward_only=True)))


def _occlusion(
    model: nn.Module,
    scores: Any,
    x: torch.Tensor,
    base: torch.Tensor,
    targets: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """The occlusion map N x C x H x W (inside :func:`_prepared`): score drops D (N x R x Q)
    of all windows, then ``A = rows^T D cols / (row cover * column cover)``, the mean of the
    drops of the windows covering each pixel."""
    n, c, h, w = x.shape
    r, q = rows.shape[0], cols.shape[0]
    acc = _accumulator(x.dtype)
    per_image = r * q
    jobs = n * per_image
    drops = torch.empty(jobs, dtype=acc, device=x.device)
    with torch.no_grad():
        with forward_errors(x, model):
            s0 = scores(model(x.clone()))  # clone: a model may change its input in place
        _check_target_range(targets, s0.shape[1])
        clean = s0.gather(1, targets.view(-1, 1))[:, 0].to(acc)
        for start in range(0, jobs, batch_size):
            j = torch.arange(start, min(start + batch_size, jobs), device=x.device)
            img, k = j // per_image, j % per_image
            mask = (rows[k // q][:, :, None] & cols[k % q][:, None, :])[:, None]  # B x 1 x H x W
            b = base if base.dim() == 0 else base[img]
            occluded = torch.where(mask, b, x[img])
            with forward_errors(occluded, model):
                s = scores(model(occluded))
            drops[start:start + len(j)] = clean[img] - s.gather(1, targets[img].view(-1, 1))[:, 0].to(acc)
    rf, cf = rows.to(acc), cols.to(acc)
    total = torch.einsum("rh,nrq,qw->nhw", rf, drops.view(n, r, q), cf)
    count = rf.sum(0)[:, None] * cf.sum(0)[None, :]  # windows covering each pixel (>= 1)
    return (total / count)[:, None].expand(n, c, h, w).contiguous()
