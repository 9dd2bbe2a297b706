"""Gradient attribution: which input pixels drive a class score.

Every method returns an attribution with the shape of the input (N x C x H x W), except
Grad-CAM, which returns one map per image (N x H x W). Plain torch; no widget imports, so
this works from a script as well as behind the SaliencyView widget.

=========================  ===================================================  ==========================
method                     attribution for class score ``S_t(x)`` (a logit)     reference
=========================  ===================================================  ==========================
``vanilla``                ``dS_t/dx``                                          Simonyan et al. (2014)
``grad_x_input``           ``x * dS_t/dx``                                      Shrikumar et al. (2016)
``smoothgrad``             mean of ``dS_t/dx`` at ``x + noise``                 Smilkov et al. (2017)
``integrated_gradients``   ``(x - x') * mean of dS_t/dx`` on the path x' -> x   Sundararajan et al. (2017)
``guided_backprop``        ``dS_t/dx`` with the guided ReLU backward            Springenberg et al. (2015)
``deconvnet``              ``dS_t/dx`` with the deconvnet ReLU backward         Zeiler & Fergus (2014)
``gradcam``                ``relu(sum_k mean(dS_t/dA_k) A_k)``, upsampled       Selvaraju et al. (2017)
``guided_gradcam``         guided backprop * upsampled Grad-CAM                 Selvaraju et al. (2017)
``layer_gradient``         ``d(sum of a layer's activations)/dx``               --
=========================  ===================================================  ==========================

Scores are logits: when the model ends in ``nn.Softmax`` / ``nn.LogSoftmax`` that module is
bypassed during the call (with a ``UserWarning``), since gradients of probabilities mix in
every other class and saturate.

Examples
--------
>>> net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
...                     nn.Flatten(), nn.Linear(4, 2))
>>> x = torch.rand(2, 3, 8, 8)
>>> attribute(net, x, "integrated_gradients", target=1, steps=20).shape
torch.Size([2, 3, 8, 8])
>>> attribute(net, x, "gradcam").shape
torch.Size([2, 8, 8])
"""

from __future__ import annotations

import contextlib
import math
import numbers
import operator
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._validate import check_int as _check_int
from .model import (
    caller_stacklevel,
    check_model,
    final_softmax,
    get_layer,
    model_device,
    named_layers,
    passthrough,
    preserved_state,
    replaced_forward,
)
from .optimize import gaussian_blur
from .relu_rules import relu_rule

__all__ = [
    "BASELINES",
    "HEATMAP_MODES",
    "METHODS",
    "Baseline",
    "HeatmapMode",
    "Method",
    "Target",
    "attribute",
    "deconvnet",
    "grad_x_input",
    "gradcam",
    "guided_backprop",
    "guided_gradcam",
    "integrated_gradients",
    "layer_gradient",
    "smoothgrad",
    "to_heatmap",
    "vanilla_gradient",
]

Method = Literal[
    "vanilla",
    "grad_x_input",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "deconvnet",
    "gradcam",
    "guided_gradcam",
    "layer_gradient",
]
#: Valid values of ``method`` for :func:`attribute`.
METHODS: tuple[str, ...] = (
    "vanilla",
    "grad_x_input",
    "smoothgrad",
    "integrated_gradients",
    "guided_backprop",
    "deconvnet",
    "gradcam",
    "guided_gradcam",
    "layer_gradient",
)

Baseline = Literal["black", "blur", "noise"]
#: Named baselines of :func:`integrated_gradients` (a tensor is accepted too).
BASELINES: tuple[str, ...] = ("black", "blur", "noise")

HeatmapMode = Literal["abs", "signed"]
#: Valid values of ``mode`` for :func:`to_heatmap`.
HEATMAP_MODES: tuple[str, ...] = ("abs", "signed")

#: A class index for every image, one per image, or None for the predicted class.
Target = Union[int, Sequence[int], np.ndarray, torch.Tensor, None]

#: Standard deviation of the Gaussian used for the "blur" baseline, as a fraction of max(H, W).
BLUR_SIGMA_FRACTION: float = 0.1

#: With ``batch_size=None``, path or noisy images go through the model in batches of about this
#: many input values (32 images of 3 x 128 x 128): 10 images of 3 x 224 x 224 at a time, all 51
#: path images of an MNIST digit at once.
BATCH_VALUES: int = 32 * 3 * 128 * 128


def _batch_size(batch_size: int | None, x: torch.Tensor) -> int:
    if batch_size is None:
        return max(1, BATCH_VALUES // max(1, x[0].numel()))
    return batch_size



# ---------------------------------------------------------------- validation
def _check_batch(x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4 or x.shape[0] == 0:
        desc = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"x must be a non-empty float tensor N x C x H x W, got {desc}. "
            "Hint: cnnwidgets.core.as_batch converts images to a batch; use x[None] for one image."
        )
    return x


def _check_logits(out: Any) -> torch.Tensor:
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return class scores N x K for attribution, its output has shape {shape}")
    return out


def _given_targets(target: Target, n: int) -> torch.Tensor:
    """int64 (N,) from an int or one int per image; the range 0..K-1 is checked later, by
    :func:`_check_target_range`, against the logits the attribution pass computes anyway."""
    if isinstance(target, bool):
        raise TypeError(f"target must be an int or a sequence of ints, got bool {target!r}")
    try:
        t = torch.full((n,), operator.index(target), dtype=torch.long)  # type: ignore[arg-type]
    except TypeError:
        t = torch.as_tensor(np.asarray(target) if isinstance(target, (list, tuple)) else target)
        if t.dtype == torch.bool or t.is_floating_point() or t.is_complex():
            raise TypeError(f"target must hold integers, got dtype {t.dtype}") from None
        t = t.reshape(-1) if t.dim() <= 1 else t
        if t.dim() != 1 or t.numel() not in (1, n):
            raise ValueError(
                f"target must be an int or hold one int per image (N = {n}), got shape {tuple(t.shape)}"
            ) from None
        t = t.to(torch.long).expand(n).clone()
    return t


def _check_target_range(t: torch.Tensor, k: int) -> None:
    bad = (t < 0) | (t >= k)
    if bool(bad.any()):
        bad_values = sorted(set(t[bad].tolist()))
        raise ValueError(f"target must be in 0..{k - 1} (the model has K = {k} classes), got {bad_values}")


# ---------------------------------------------------------------- softmax bypass
_NOTICE = threading.local()


@contextlib.contextmanager
def softmax_notice_off() -> Iterator[None]:
    """Within the block, on this thread only, the final-softmax bypass does not warn (for views
    that tell the user themselves; ``warnings.catch_warnings`` is process-wide, not per thread)."""
    before = getattr(_NOTICE, "off", False)
    _NOTICE.off = True
    try:
        yield
    finally:
        _NOTICE.off = before


@contextlib.contextmanager
def logits_only(model: nn.Module, *, notice: bool = False) -> Iterator[None]:
    """Within the block a final Softmax/LogSoftmax passes its input through."""
    with (contextlib.nullcontext() if notice else softmax_notice_off()), _logits_only(model):
        yield


@contextlib.contextmanager
def _logits_only(model: nn.Module) -> Iterator[None]:
    """Within the block a final Softmax/LogSoftmax passes its input through (warns once,
    unless this thread is inside :func:`softmax_notice_off`)."""
    last = final_softmax(model)
    if last is None:
        yield
        return
    if not getattr(_NOTICE, "off", False):
        warnings.warn(
            f"the model ends in {type(last).__name__}; attribution uses the logits before the softmax "
            "(the module is bypassed during the call)",
            UserWarning,
            stacklevel=caller_stacklevel(),
        )
    with replaced_forward(last, passthrough):
        yield


@contextlib.contextmanager
def _prepared(
    model: nn.Module, x: Any, target: Target, *, logits: bool = True
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Validate, freeze parameters, bypass a final softmax, resolve targets.

    Yields ``(x, targets)``: ``x`` detached on the model's device (never the caller's tensor
    with ``requires_grad``), ``targets`` int64 (N,) or None when ``logits=False``.
    """
    check_model(model)
    x = _check_batch(x)
    device = model_device(model)
    with contextlib.ExitStack() as stack:
        stack.enter_context(preserved_state(model))
        for p in model.parameters():
            p.requires_grad_(False)
        x = x.detach().to(device)
        targets = None
        if logits:
            stack.enter_context(_logits_only(model))
            if target is None:  # each image's top class: one pass to find it
                with torch.no_grad():
                    out = _check_logits(model(x.clone()))  # clone: a model may change its input in place
                targets = out.detach().argmax(dim=1)
            else:  # no extra pass: the attribution's own logits check the range
                targets = _given_targets(target, x.shape[0]).to(device)
        stack.enter_context(torch.enable_grad())
        yield x, targets


# ---------------------------------------------------------------- gradient kernels (inside _prepared)
def _input_gradient(model: nn.Module, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """d logit[i, targets[i]] / d x[i] for every image i, in one forward/backward pass."""
    xg = x.clone().requires_grad_(True)
    out = _check_logits(model(xg.clone()))  # a non-leaf copy: an in-place first layer is fine
    _check_target_range(targets, out.shape[1])
    score = out.gather(1, targets.view(-1, 1)).sum()
    if not score.requires_grad:  # the score does not depend on the input
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(score, xg, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad.detach()


def _batched_gradients(
    model: nn.Module,
    targets: torch.Tensor,
    n_jobs: int,
    batch_size: int,
    make_inputs: Callable[[slice], tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    like: torch.Tensor,
) -> torch.Tensor:
    """Sum ``weight * gradient`` per image over ``n_jobs`` inputs, ``batch_size`` at a time.

    ``make_inputs(slice)`` returns ``(image_index, inputs, weights)`` for the jobs in the slice.
    """
    total = torch.zeros_like(like)
    for start in range(0, n_jobs, batch_size):
        idx, inputs, weights = make_inputs(slice(start, min(start + batch_size, n_jobs)))
        grad = _input_gradient(model, inputs, targets[idx])
        total.index_add_(0, idx, grad * weights.view(-1, 1, 1, 1).to(grad.dtype))
    return total


def _smoothgrad(
    model: nn.Module,
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

    return _batched_gradients(model, targets, n * samples, batch_size, make_inputs, x) / samples


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


def _run_with_leaf(model: nn.Module, module: nn.Module, layer: str, x: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
    """Forward ``x`` with each output of ``module`` replaced by a fresh leaf that requires grad.

    Returns the model output and the list of leaves (or non-tensor outputs), one per call.
    Downstream in-place operations act on a copy, so the leaves keep the layer's values.
    """
    outs: list[Any] = []

    def hook(_m: nn.Module, _inp: Any, out: Any) -> Any:
        if not isinstance(out, torch.Tensor):
            outs.append(out)
            return None
        leaf = out.detach().clone().requires_grad_(True)
        outs.append(leaf)
        return leaf.clone()  # non-leaf, so in-place operations downstream are allowed

    handle = module.register_forward_hook(hook)
    try:
        out = model(x.clone())
    finally:
        handle.remove()
    if not outs:
        raise ValueError(f"layer {layer!r} did not run during the forward pass")
    return out, outs


def _last_conv(model: nn.Module) -> str:
    names = [n for n, m in named_layers(model).items() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ValueError("the model has no nn.Conv2d layer; pass layer= (a layer with a 4-D output)")
    return names[-1]


def _gradcam(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, layer: str | None) -> torch.Tensor:
    name = _last_conv(model) if layer is None else layer
    module = get_layer(model, name)
    out, acts = _run_with_leaf(model, module, name, x)
    a = acts[-1]
    if not isinstance(a, torch.Tensor) or a.dim() != 4:
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise ValueError(
            f"Grad-CAM needs a layer with a spatial output N x K x h x w; layer {name!r} outputs shape {shape}"
        )
    _check_target_range(targets, _check_logits(out).shape[1])
    score = out.gather(1, targets.view(-1, 1)).sum()
    grad = None
    if score.requires_grad:
        (grad,) = torch.autograd.grad(score, a, allow_unused=True)
    if grad is None:  # the score does not depend on this layer
        grad = torch.zeros_like(a)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # N x K x 1 x 1
    cam = F.relu((weights * a.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return cam[:, 0]


class _StopForward(Exception):
    """Raised from a forward hook to end the forward pass once the layer has run."""


# ---------------------------------------------------------------- public methods
def vanilla_gradient(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Gradient of the target logit with respect to the input (Simonyan et al., 2014).

    Parameters
    ----------
    model : nn.Module
        Returns logits N x K (a final ``nn.Softmax``/``nn.LogSoftmax`` is bypassed, with a
        ``UserWarning``).
    x : torch.Tensor
        Float N x C x H x W, normalized the way the model expects; moved to the model's device.
        The caller's tensor is neither modified nor given ``requires_grad``.
    target : int, sequence of N ints, int tensor, or None
        Class per image; None uses each image's predicted class.

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached, on the model's device: ``d logit[i, target[i]] / d x[i]``.

    Raises
    ------
    ValueError
        ``x`` not a float N x C x H x W tensor, a target outside ``0..K-1``, or a model output
        that is not N x K.

    Notes
    -----
    Runs under :func:`~cnnwidgets.core.model.preserved_state`: eval mode during the call;
    modes, ``requires_grad`` flags and hooks are restored afterwards, also after an error.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> vanilla_gradient(net, torch.rand(2, 3, 2, 2), target=0).shape
    torch.Size([2, 3, 2, 2])
    """
    with _prepared(model, x, target) as (xd, t):
        return _input_gradient(model, xd, t)


def grad_x_input(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Input times gradient: ``x * d logit_t / d x`` (N x C x H x W).

    Parameters and behaviour as in :func:`vanilla_gradient`. For a linear model this is the
    exact contribution of each input value to the logit (up to the bias).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> grad_x_input(net, torch.rand(2, 3, 2, 2), target=[0, 2]).shape
    torch.Size([2, 3, 2, 2])
    """
    with _prepared(model, x, target) as (xd, t):
        return xd * _input_gradient(model, xd, t)


def smoothgrad(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    samples: int = 25,
    noise: float = 0.15,
    batch_size: int | None = None,
    seed: int | None = None,
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
    with _prepared(model, x, target) as (xd, t):
        return _smoothgrad(model, xd, t, samples, float(noise), _batch_size(batch_size, xd), seed)


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
    with _prepared(model, x, target) as (xd, t):
        return _integrated_gradients(model, xd, t, steps, baseline, _batch_size(batch_size, xd), seed)


def guided_backprop(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Guided backpropagation (Springenberg et al., 2015), N x C x H x W.

    The vanilla gradient with every ``nn.ReLU`` back-propagating ``grad.clamp(min=0) * (x > 0)``
    (see :func:`~cnnwidgets.core.relu_rules.relu_rule`; functional ``F.relu`` calls keep their
    ordinary gradient). Parameters as in :func:`vanilla_gradient`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> guided_backprop(net, torch.rand(2, 3, 2, 2)).shape
    torch.Size([2, 3, 2, 2])
    """
    with _prepared(model, x, target) as (xd, t), relu_rule(model, "guided"):
        return _input_gradient(model, xd, t)


def deconvnet(model: nn.Module, x: torch.Tensor, target: Target = None) -> torch.Tensor:
    """Deconvnet attribution (Zeiler & Fergus, 2014), N x C x H x W.

    The vanilla gradient with every ``nn.ReLU`` back-propagating ``grad.clamp(min=0)``
    (see :func:`~cnnwidgets.core.relu_rules.relu_rule`). Parameters as in
    :func:`vanilla_gradient`.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> deconvnet(net, torch.rand(2, 3, 2, 2), target=0).shape
    torch.Size([2, 3, 2, 2])
    """
    with _prepared(model, x, target) as (xd, t), relu_rule(model, "deconvnet"):
        return _input_gradient(model, xd, t)


def gradcam(model: nn.Module, x: torch.Tensor, target: Target = None, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): class activation map of a convolution layer, N x H x W.

    With A (N x K x h x w) the layer's output, the weight of channel k is the spatial mean of
    ``dS_t/dA_k``; the map is ``relu(sum_k weight_k * A_k)``, bilinearly upsampled
    (``align_corners=False``) to the input's H x W. Values are not normalized.

    Parameters
    ----------
    model, x, target
        As in :func:`vanilla_gradient`.
    layer : str, optional
        Qualified name of a layer with a 4-D output; default the last ``nn.Conv2d`` in module
        registration order. For a module called several times in one forward pass, its last
        call is used.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached. For :func:`to_heatmap`, pass ``cam[:, None]``.

    Raises
    ------
    ValueError
        Besides the input errors of :func:`vanilla_gradient`: an unknown layer (the message
        lists valid names), a layer whose output is not 4-D (the message gives its shape), a
        layer that does not run, or a model without ``nn.Conv2d`` when ``layer`` is None.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> gradcam(net, torch.rand(2, 3, 10, 10)).shape
    torch.Size([2, 10, 10])
    """
    with _prepared(model, x, target) as (xd, t):
        return _gradcam(model, xd, t, layer)


def guided_gradcam(model: nn.Module, x: torch.Tensor, target: Target = None, layer: str | None = None) -> torch.Tensor:
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map, N x C x H x W.

    Parameters as in :func:`gradcam`; the Grad-CAM map (N x H x W) multiplies every channel.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> guided_gradcam(net, torch.rand(2, 3, 10, 10)).shape
    torch.Size([2, 3, 10, 10])
    """
    with _prepared(model, x, target) as (xd, t):
        cam = _gradcam(model, xd, t, layer)
        with relu_rule(model, "guided"):
            guided = _input_gradient(model, xd, t)
    return guided * cam.unsqueeze(1)


def layer_gradient(model: nn.Module, x: torch.Tensor, layer: str, channel: int | None = None) -> torch.Tensor:
    """Gradient of the sum of a layer's activations (or of one channel) with respect to the input.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor
        As in :func:`vanilla_gradient`.
    layer : str
        Qualified name of the layer; its first call in the forward pass is used and the pass
        stops there (the model's output is not needed, so no softmax handling applies).
    channel : int, optional
        Index along the output's dimension 1 (a feature map of a conv layer, a unit of a
        linear layer); None sums all of them.

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached: ``d sum(A[i] or A[i, channel]) / d x[i]``.

    Raises
    ------
    ValueError
        Unknown layer (the message lists valid names), a layer that does not run or has no
        tensor output, or a channel out of range.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
    >>> layer_gradient(net, torch.rand(2, 3, 10, 10), "1", channel=2).shape
    torch.Size([2, 3, 10, 10])
    """
    module = get_layer(model, layer)
    if channel is not None:
        channel = _check_int(channel, "channel", 0)
    with _prepared(model, x, None, logits=False) as (xd, _):
        xg = xd.clone().requires_grad_(True)
        outs: list[Any] = []

        def hook(_m: nn.Module, _inp: Any, out: Any) -> None:
            outs.append(out)
            raise _StopForward

        handle = module.register_forward_hook(hook)
        try:
            model(xg.clone())  # a non-leaf copy: an in-place first layer is fine
        except _StopForward:
            pass
        finally:
            handle.remove()
        if not outs:
            raise ValueError(f"layer {layer!r} did not run during the forward pass")
        a = outs[0]
        if not isinstance(a, torch.Tensor):
            raise ValueError(f"layer {layer!r} must output a tensor, got {type(a).__name__}")
        if channel is not None:
            if a.dim() < 2 or channel >= a.shape[1]:
                k = a.shape[1] if a.dim() >= 2 else 0
                raise ValueError(
                    f"channel must be in 0..{k - 1} (layer {layer!r} outputs shape {tuple(a.shape)}), got {channel}"
                )
            a = a[:, channel]
        grad = None
        if a.requires_grad:
            (grad,) = torch.autograd.grad(a.sum(), xg, allow_unused=True)
    return torch.zeros_like(xd) if grad is None else grad.detach()


_DISPATCH: dict[str, Callable[..., torch.Tensor]] = {
    "vanilla": vanilla_gradient,
    "grad_x_input": grad_x_input,
    "smoothgrad": smoothgrad,
    "integrated_gradients": integrated_gradients,
    "guided_backprop": guided_backprop,
    "deconvnet": deconvnet,
    "gradcam": gradcam,
    "guided_gradcam": guided_gradcam,
}


def attribute(model: nn.Module, x: torch.Tensor, method: Method, target: Target = None, **params: Any) -> torch.Tensor:
    """Attribution of ``method`` for ``x``: one entry point for all methods in :data:`METHODS`.

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor
        Float N x C x H x W on (or moved to) the model's device.
    method : str
        One of :data:`METHODS`.
    target : int, sequence of N ints, int tensor, or None
        Class per image (None: predicted class). Ignored by ``"layer_gradient"``, which takes
        ``layer=`` (and optionally ``channel=``) instead.
    **params
        Passed to the method's function, e.g. ``samples``/``noise`` for :func:`smoothgrad`,
        ``steps``/``baseline`` for :func:`integrated_gradients`, ``layer`` for :func:`gradcam`.

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached; N x H x W for ``"gradcam"``.

    Raises
    ------
    ValueError
        An unknown method (the message lists :data:`METHODS`), and the errors of the method.

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> attribute(net, torch.rand(2, 3, 2, 2), "smoothgrad", target=1, samples=4, seed=0).shape
    torch.Size([2, 3, 2, 2])
    """
    if method == "layer_gradient":
        return layer_gradient(model, x, **params)
    if not isinstance(method, str) or method not in _DISPATCH:
        raise ValueError(f"method must be one of {', '.join(repr(m) for m in METHODS)}; got {method!r}")
    return _DISPATCH[method](model, x, target, **params)


# ---------------------------------------------------------------- display
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
