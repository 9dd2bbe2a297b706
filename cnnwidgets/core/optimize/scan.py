"""Checks around a run: :func:`precursor_scan` picks a starting image the target responds to
(or raises :class:`DeadTargetError`), :func:`class_probabilities` tells how sure the model is of
a result."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._validate import check_int as _check_int
from ..inputs import normalize, stats_tensor
from ..layers import leaf_layers
from ..model import check_model, get_layer, model_device, model_dtype
from ..outputs import OutputSelector
from ..runner import Scores, forward_errors, logits_only, using_model
from ._common import INITS, InitName, Shape, _check_shape
from ._forward import _prepared
from .objectives import Objective
from .render import _start_image


class DeadTargetError(ValueError):
    """The objective is exactly zero for every starting image tried: a dead feature map."""


# ---------------------------------------------------------------- precursor scan, class check
def _pre_relu_hint(model: nn.Module, objective: Objective) -> str:
    """' (e.g. 'features.6' for 'features.7')' when a target layer is a ReLU after a layer."""
    leaves = leaf_layers(model)
    names = list(leaves)
    hints = []
    for n in sorted(objective.layers):
        if isinstance(leaves.get(n), nn.ReLU):
            i = names.index(n)
            if i > 0:
                hints.append(f"{names[i - 1]!r} instead of {n!r}")
    return f" ({', '.join(hints)})" if hints else ""


def precursor_scan(
    model: nn.Module,
    objective: Objective,
    shape: Shape,
    *,
    candidates: int = 16,
    init: InitName = "gray",
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    seed: int = 0,
    chunk: int = 256,
    stop: Any = None,
    output: OutputSelector = None,
    **init_kw: Any,
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """Try ``candidates`` random starting images and keep the one the target likes best.

    The classic remedy for maps that stay at zero from a given start: before optimizing,
    evaluate the objective on K random images (:func:`gray_noise` or :func:`multiscale`
    with ``seed`` and ``init_kw``) and start from the best.

    Parameters
    ----------
    model, objective, shape, mean, std
        As for :func:`optimize`; the objective must have one target for all images (not a
        batch-mode list).
    candidates : int
        K, the number of starting images.
    init : {"gray", "multiscale"}
    seed : int
    chunk : int
        Images per forward pass.
    stop : object with ``is_set()``, optional
        E.g. a ``threading.Event``, checked before every chunk after the first: once set, the
        scan ends with the candidates evaluated so far (``values`` is then shorter than K).
    **init_kw
        For the starting images, e.g. ``amplitudes=(0.5, 0.5, 0.2, 0.1)``.

    Returns
    -------
    best : torch.Tensor
        1 x C x H x W, CPU, in [0, 1]: the candidate with the largest objective (the first
        one on ties). Pass it as ``init`` to :func:`optimize`.
    best_value : float
    values : torch.Tensor
        (K,), CPU: the objective of every candidate.

    Raises
    ------
    DeadTargetError
        If the objective is exactly 0 for every candidate (a dead map for this kind of
        input, e.g. a ReLU map that never turns on).

    Examples
    --------
    >>> from cnnwidgets.core.optimize import channel
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    >>> best, value, values = precursor_scan(net, channel("0", 0), (1, 8, 8), candidates=4)
    >>> best.shape, values.shape, value == float(values.max())
    (torch.Size([1, 1, 8, 8]), torch.Size([4]), True)
    """
    check_model(model)
    if not isinstance(objective, Objective):
        raise TypeError(f"objective must be an Objective, got {type(objective).__name__}")
    if objective.batch_size is not None:
        raise ValueError("precursor_scan needs an objective with one target for every image, not a batch-mode list")
    shape = _check_shape(shape)
    candidates = _check_int(candidates, "candidates", 1)
    chunk = _check_int(chunk, "chunk", 1)
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(repr(i) for i in INITS)}; got {init!r}")
    for name in objective.layers:
        get_layer(model, name)
    imgs = _start_image(init, shape, candidates, seed, init_kw)
    assert imgs is not None
    device = model_device(model)
    parts = []
    if stop is not None and not callable(getattr(stop, "is_set", None)):
        raise TypeError("stop must have an is_set() method, e.g. a threading.Event")
    with _prepared(model, objective, shape[0], mean, std, output=output) as run, torch.no_grad():
        for i in range(0, candidates, chunk):
            if i and stop is not None and stop.is_set():
                break
            parts.append(run(imgs[i : i + chunk].to(device)).detach().to("cpu", torch.float32))
    values = torch.cat(parts)
    if len(values) == candidates and bool((values == 0).all()):
        raise DeadTargetError(
            f"objective {objective.name!r} is exactly 0 for all {candidates} {init!r} starting images: "
            "a dead map for this kind of input (e.g. a ReLU map that never turns on), so there is no "
            "gradient to follow. Try another starting-image strategy (init='multiscale' with larger "
            "amplitudes, e.g. amplitudes=(0.5, 0.5, 0.3, 0.1)), another channel, or the pre-ReLU "
            f"convolution layer{_pre_relu_hint(model, objective)}."
        )
    best = int(values.argmax())
    return imgs[best : best + 1].clone(), float(values[best]), values


def class_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
    output: OutputSelector = None,
) -> torch.Tensor:
    """Class probabilities for display-space images (the "fooled with confidence" check).

    Parameters
    ----------
    model : nn.Module
        A classifier (a final Softmax/LogSoftmax/Sigmoid is bypassed and applied once here, so
        the result is a probability either way; a single logit gives two classes, segmentation
        scores the share of pixels per class: :class:`~cnnwidgets.core.outputs.Head`).
    images : torch.Tensor
        B x C x H x W in [0, 1], e.g. ``OIPResult.images``.
    mean, std : optional
        Normalization the model expects.
    output : int, str, callable or None
        Which part of a structured model output holds the class scores.

    Returns
    -------
    torch.Tensor
        B x K float32 probabilities (rows sum to 1 but for a multi-label head), CPU.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    >>> p = class_probabilities(net, torch.rand(2, 1, 4, 4))
    >>> p.shape, torch.allclose(p.sum(dim=1), torch.ones(2))
    (torch.Size([2, 3]), True)
    """
    check_model(model)
    if not isinstance(images, torch.Tensor) or not images.is_floating_point() or images.dim() != 4:
        desc = f"shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor B x C x H x W in [0, 1], got {desc}")
    device = model_device(model)
    c = images.shape[1]
    m = stats_tensor(mean, c, "mean", device)
    s = stats_tensor(std, c, "std", device)
    x = normalize(images.detach().to(device, torch.float32).clone(), m, s)
    with using_model(model) as run, logits_only(run), torch.no_grad():
        x = x.to(model_dtype(run))
        with forward_errors(x, run):
            out = run(x)
        return Scores(run, output).probabilities(out).cpu()
