"""Class activation maps: Grad-CAM (Selvaraju et al., 2017), guided Grad-CAM and the CAM family.

Every method here reads one layer's output ``A`` (N x K x h x w, K channels) and makes one map
per image, N x H x W, bilinearly upsampled (``align_corners=False``) to the input's size:

===========================  ===================================================  ==========================
function                     map (``g = dS_t/dA_k``; k channels, ij positions)    reference
===========================  ===================================================  ==========================
:func:`gradcam`              ``relu(sum_k mean_ij(g) A_k)``                       Selvaraju et al. (2017)
:func:`gradcam_plus_plus`    ``relu(sum_k sum_ij(alpha_k relu(g)) A_k)``          Chattopadhyay et al. (2018)
:func:`xgradcam`             ``relu(sum_k sum_ij(g A_k / sum_ij A_k) A_k)``       Fu et al. (2020)
:func:`hirescam`             ``relu(sum_k g * A_k)``, position by position        Draelos & Carin (2020)
:func:`layercam`             ``relu(sum_k relu(g) * A_k)``, position by position  Jiang et al. (2021)
:func:`scorecam`             ``relu(sum_k softmax_k(S_t(x * M_k)) A_k)``          Wang et al. (2020)
:func:`eigencam`             ``relu`` of A's first principal component            Muhammad & Yeasin (2020)
:func:`ablationcam`          ``relu(sum_k (S_t - S_t[A_k = 0]) / S_t * A_k)``     Desai & Ramaswamy (2020)
===========================  ===================================================  ==========================

One pass (:func:`_layer_pass`) gives ``A``, ``dS_t/dA`` and the scores; each method is a few
lines on top of it. Score-CAM and Ablation-CAM run the model again on batches of masked inputs
or ablated layer outputs (``batch_size``). Everything runs on this thread's private view of the
model: hooks and forward passes are never visible on the user's model. Plain torch; no widget
imports.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_int
from ..model import get_layer
from ..outputs import OutputSelector
from ..relu_rules import relu_rule
from ..runner import LayerTap, Scores, forward_errors
from ._common import (
    Target,
    _accumulator,
    _batch_size,
    _check_target_range,
    _finish,
    _input_gradient,
    _prepared,
    _report,
)


def gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al., 2017): class activation map of a convolution layer, N x H x W.

    With A (N x K x h x w) the layer's output, the weight of channel k is the spatial mean of
    ``dS_t/dA_k``; the map is ``relu(sum_k weight_k * A_k)``, bilinearly upsampled
    (``align_corners=False``) to the input's H x W. Values are not normalized.

    Parameters
    ----------
    model, x, target
        As in :func:`vanilla_gradient`.
    layer : str, optional
        Qualified name of a layer with a 4-D output; default
        :func:`~cnnwidgets.core.layers.cam_layer`: the last layer, in execution order, with a
        spatial output larger than 1 x 1 (modules that do not run, such as aux heads, are
        skipped). For a module called several times in one forward pass, its last call is used.
    output, region
        As in :func:`vanilla_gradient`.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached. For :func:`to_heatmap`, pass ``cam[:, None]``.

    Raises
    ------
    ValueError
        Besides the input errors of :func:`vanilla_gradient`: an unknown layer (the message
        lists valid names), a layer whose output is not 4-D (the message gives its shape), a
        layer that does not run, or a model without a spatial layer when ``layer`` is None.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> gradcam(net, torch.rand(2, 3, 10, 10)).shape
    torch.Size([2, 10, 10])
    """
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        return _finish(_gradcam(run, scores, xd, t, layer))


def guided_gradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map, N x C x H x W.

    Parameters as in :func:`gradcam`; the Grad-CAM map (N x H x W) multiplies every channel.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> guided_gradcam(net, torch.rand(2, 3, 10, 10)).shape
    torch.Size([2, 3, 10, 10])
    """
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        cam = _gradcam(run, scores, xd, t, layer)
        with relu_rule(run, "guided") as report:
            guided = _input_gradient(run, scores, xd, t)
        _report("rule", report)
    return _finish(guided * cam.unsqueeze(1))


def gradcam_plus_plus(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al., 2018): Grad-CAM with position-weighted gradients, N x H x W.

    With ``g = dS_t/dA_k`` at position ij of channel k (Eq. 19 of the paper, the closed form
    for the exponential of the score)::

        alpha_k,ij = g_ij^2 / (2 g_ij^2 + (sum_ab A_k,ab) g_ij^3)      (0 where g_ij = 0)
        weight_k   = sum_ij alpha_k,ij * relu(g_ij)
        map        = relu(sum_k weight_k * A_k)

    upsampled as in :func:`gradcam`. As in pytorch-grad-cam and the authors' code, the factor
    ``exp(S_t)`` of the paper's derivatives is left out (it scales each image's map by a
    positive constant). Unlike pytorch-grad-cam, no 1e-6 is added to the denominator (it
    shifts ``alpha`` wherever ``g^2`` is not much larger than 1e-6, i.e. for small gradients);
    only a zero denominator gives ``alpha = 0``.

    Parameters and errors as in :func:`gradcam`.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> cam = gradcam_plus_plus(net, torch.rand(2, 3, 10, 10), target=1)
    >>> cam.shape, bool((cam >= 0).all())
    (torch.Size([2, 10, 10]), True)
    """
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        p = _layer_pass(run, scores, xd, t, layer, "Grad-CAM++")
        a, g = p.a, p.g
        g2 = g * g
        denom = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g
        alpha = torch.where(denom != 0, g2 / denom, torch.zeros_like(denom))
        return _finish(_cam_map((alpha * F.relu(g)).sum(dim=(2, 3)), a, xd))


def xgradcam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """XGrad-CAM (Fu et al., 2020): Grad-CAM with activation-weighted gradients, N x H x W.

    With ``g = dS_t/dA_k``::

        weight_k = sum_ij (A_k,ij / sum_ab A_k,ab) * g_ij      (0 where sum_ab A_k,ab = 0)
        map      = relu(sum_k weight_k * A_k)

    upsampled as in :func:`gradcam`. (pytorch-grad-cam adds 1e-7 to the channel sum instead of
    giving a channel whose sum is 0 the weight 0.)

    Parameters and errors as in :func:`gradcam`.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> xgradcam(net, torch.rand(2, 3, 10, 10), target=0).shape
    torch.Size([2, 10, 10])
    """
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        p = _layer_pass(run, scores, xd, t, layer, "XGrad-CAM")
        a = p.a
        total = a.sum(dim=(2, 3), keepdim=True)
        share = torch.where(total != 0, a / total, torch.zeros_like(a))
        return _finish(_cam_map((share * p.g).sum(dim=(2, 3)), a, xd))


def hirescam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """HiResCAM (Draelos & Carin, 2020): gradient times activation, summed over channels, N x H x W.

    ``map = relu(sum_k dS_t/dA_k * A_k)``, position by position (no spatial averaging of the
    gradient), upsampled as in :func:`gradcam`. When the score depends on the layer through a
    global average pool and a linear head, the gradient is the same at every position and the
    map equals Grad-CAM's.

    Parameters and errors as in :func:`gradcam`.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
    >>> hirescam(net, torch.rand(2, 3, 10, 10), target=0).shape
    torch.Size([2, 10, 10])
    """
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        p = _layer_pass(run, scores, xd, t, layer, "HiResCAM")
        return _finish(_upsampled(F.relu((p.g * p.a).sum(dim=1)), xd))


def layercam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Layer-CAM (Jiang et al., 2021): positive gradient times activation, summed over channels,
    N x H x W.

    ``map = relu(sum_k relu(dS_t/dA_k) * A_k)``, position by position, upsampled as in
    :func:`gradcam`. Unlike :func:`hirescam`, positions where the score falls as the activation
    grows add nothing.

    Parameters and errors as in :func:`gradcam`.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(256, 2))
    >>> layercam(net, torch.rand(2, 3, 10, 10), target=0).shape
    torch.Size([2, 10, 10])
    """
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        p = _layer_pass(run, scores, xd, t, layer, "Layer-CAM")
        return _finish(_upsampled(F.relu((F.relu(p.g) * p.a).sum(dim=1)), xd))


def scorecam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    batch_size: int | None = None,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Score-CAM (Wang et al., 2020): channels weighted by the score of the input they mask,
    N x H x W. No gradients.

    Each channel's activation ``A_k`` is upsampled to H x W (bilinear, ``align_corners=False``)
    and min-max normalized to [0, 1] (a constant channel gives the mask 0), giving ``M_k``;
    the model then scores the masked inputs ``x * M_k``::

        weight_k = softmax over k of S_t(x * M_k)
        map      = relu(sum_k weight_k * A_k)

    upsampled as in :func:`gradcam`. This is pytorch-grad-cam's definition (softmax over the
    channels of the target's logits). The paper's "increase of confidence"
    ``S_t(x * M_k) - S_t(x_b)`` differs from ``S_t(x * M_k)`` by the same number for every
    channel, which the softmax cancels. (pytorch-grad-cam upsamples the masks with
    ``align_corners=True``; the authors' code, like :func:`gradcam`, with ``align_corners=False``.)

    Parameters
    ----------
    model, x, target, layer, output, region
        As in :func:`gradcam`.
    batch_size : int, optional
        Masked inputs per forward pass (N x K of them in all); default: as many as hold about
        :data:`~cnnwidgets.core.saliency._common.FORWARD_BATCH_VALUES` input values.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> x = torch.rand(2, 3, 10, 10)
    >>> torch.equal(scorecam(net, x, target=1), scorecam(net, x, target=1, batch_size=1))
    True
    """
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        with torch.no_grad():
            p = _layer_pass(run, scores, xd, t, layer, "Score-CAM", gradients=False)
            a = p.a
            n, k = a.shape[:2]

            def masked(i: torch.Tensor, c: torch.Tensor) -> contextlib.AbstractContextManager[torch.Tensor]:
                m = _upsampled(a[i, c], xd).unsqueeze(1)  # b x 1 x H x W
                lo, hi = m.amin(dim=(2, 3), keepdim=True), m.amax(dim=(2, 3), keepdim=True)
                m = torch.where(hi > lo, (m - lo) / (hi - lo), torch.zeros_like(m))
                return contextlib.nullcontext(xd[i] * m.to(xd.dtype))

            logits = _channel_scores(run, scores, xd, t, n, k, _batch_size(batch_size, xd, forward_only=True), masked)
            return _finish(_cam_map(torch.softmax(logits, dim=1), a, xd))


def eigencam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Eigen-CAM (Muhammad & Yeasin, 2020): the layer's output projected on its first principal
    component, N x H x W. Class-agnostic, no gradients.

    Per image, with ``M`` the (h*w) x K matrix of the layer's activations (one row per
    position) and each channel's mean over the positions subtracted, ``v`` the first right
    singular vector of ``M`` (``M = U S V^T``)::

        map = relu(M v), reshaped to h x w

    upsampled as in :func:`gradcam` (this is pytorch-grad-cam's ``get_2d_projection``).

    The sign of a singular vector is arbitrary (``-v`` serves as well as ``v``), and the ReLU
    keeps one side of the projection only. pytorch-grad-cam's ``EigenCAM`` keeps whichever sign
    the SVD returns, so its map can be the ReLU of the negative projection, depending on the
    LAPACK build. Here the sign is fixed as in pytorch-grad-cam's
    ``get_2d_projection_with_sign_correction`` (Seg-Eigen-CAM, Chung & Ying 2025, Eq. 13): the
    projection is negated when its most negative value is larger in magnitude than its most
    positive one, so the larger extreme is kept.

    Parameters
    ----------
    model, x, layer
        As in :func:`gradcam`.
    target, output, region
        Ignored (the map does not depend on a class); accepted so that all CAMs take the same
        arguments.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> x = torch.rand(2, 3, 10, 10)
    >>> cam = eigencam(net, x)
    >>> cam.shape, torch.equal(cam, eigencam(net, x, target=1))
    (torch.Size([2, 10, 10]), True)
    """
    with _prepared(model, x, None, logits=False, output=output, region=region) as (run, xd, _, scores):
        with torch.no_grad():
            p = _layer_pass(run, scores, xd, None, layer, "Eigen-CAM", gradients=False)
            a = p.a
            m = a.flatten(2).transpose(1, 2)  # N x hw x K
            m = m - m.mean(dim=1, keepdim=True)
            v = torch.linalg.svd(m, full_matrices=False).Vh[:, 0]  # N x K
            proj = (m @ v.unsqueeze(2)).squeeze(2)  # N x hw
            flip = proj.amin(dim=1).abs() > proj.amax(dim=1).abs()
            proj = torch.where(flip.unsqueeze(1), -proj, proj)
            return _finish(_upsampled(F.relu(proj).view(a.shape[0], *a.shape[2:]), xd))


def ablationcam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target = None,
    layer: str | None = None,
    *,
    batch_size: int | None = None,
    output: OutputSelector = None,
    region: Any = None,
) -> torch.Tensor:
    """Ablation-CAM (Desai & Ramaswamy, 2020): channels weighted by the score drop when they are
    zeroed, N x H x W. No gradients.

    With ``S_t^(k)`` the score when channel k of the layer's output is set to 0 for the rest
    of the forward pass (the layers before it are not changed)::

        weight_k = (S_t - S_t^(k)) / S_t      (all 0 when S_t = 0)
        map      = relu(sum_k weight_k * A_k)

    upsampled as in :func:`gradcam`. This is the paper's normalization and pytorch-grad-cam's
    (for a negative score every weight changes sign). pytorch-grad-cam zeroes the channel only
    when the layer's smallest value is 0 and otherwise sets it to that value minus 1e7; here
    the channel is always zeroed, as in the paper. The ablated outputs are computed in batches:
    the layer's output is captured once, then the model runs on copies of the image while a
    forward hook on the layer (in the private view of the model) replaces its output by the
    ablated copies. For a module called several times in one pass, its last call is ablated.

    Parameters
    ----------
    model, x, target, layer, output, region
        As in :func:`gradcam`.
    batch_size : int, optional
        Ablated copies per forward pass (N x K of them in all); default: as many as hold about
        :data:`~cnnwidgets.core.saliency._common.FORWARD_BATCH_VALUES` input values.

    Returns
    -------
    torch.Tensor
        N x H x W, >= 0, detached.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
    ...                     nn.Flatten(), nn.Linear(4, 2))
    >>> x = torch.rand(2, 3, 10, 10)
    >>> cam = ablationcam(net, x, target=0, layer="1")
    >>> cam.shape, torch.equal(cam, ablationcam(net, x, target=0, layer="1", batch_size=1))
    (torch.Size([2, 10, 10]), True)
    """
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        with torch.no_grad():
            p = _layer_pass(run, scores, xd, t, layer, "Ablation-CAM", gradients=False)
            n, k = p.acts.shape[:2]
            module = get_layer(run, p.layer)

            @contextlib.contextmanager
            def ablated(i: torch.Tensor, c: torch.Tensor) -> Iterator[torch.Tensor]:
                copies = p.acts[i]  # advanced indexing: a new tensor, in the layer's dtype
                copies[torch.arange(len(i), device=copies.device), c] = 0
                with _calls(module, replace=(p.calls - 1, copies)):  # the last call
                    yield xd[i]

            s_k = _channel_scores(run, scores, xd, t, n, k, _batch_size(batch_size, xd, forward_only=True), ablated)
            s = p.target_scores.to(s_k.dtype).unsqueeze(1)
            weights = torch.where(s != 0, (s - s_k) / s, torch.zeros_like(s_k))
            return _finish(_cam_map(weights, p.a, xd))


# ---------------------------------------------------------------- the shared mechanism
class _LayerPass(NamedTuple):
    """What one forward (and backward) pass tells about a layer."""

    layer: str  #: the layer's name (the default one when none was given)
    acts: torch.Tensor  #: its output A, N x K x h x w, detached, in the layer's dtype
    grads: torch.Tensor | None  #: dS_t/dA, like ``acts`` (None without gradients)
    target_scores: torch.Tensor | None  #: S_t per image (N,), detached (None without targets)
    calls: int  #: how many times the layer ran in the pass (its last call is the one read)

    @property
    def a(self) -> torch.Tensor:
        """``acts`` in the accumulator dtype (float32 at least)."""
        return self.acts.to(_accumulator(self.acts.dtype))

    @property
    def g(self) -> torch.Tensor:
        """``grads`` in the accumulator dtype."""
        assert self.grads is not None
        return self.grads.to(_accumulator(self.grads.dtype))


def _layer_pass(
    run: nn.Module,
    scores: Scores,
    x: torch.Tensor,
    targets: torch.Tensor | None,
    layer: str | None,
    method: str,
    *,
    gradients: bool = True,
) -> _LayerPass:
    """Run ``run`` on ``x`` once, keeping the last call's output of ``layer`` (default
    :func:`~cnnwidgets.core.layers.cam_layer`), the target scores and, with ``gradients``, the
    gradient of the summed target scores with respect to that output. ``method`` names the
    caller in the error for a layer without a 4-D output."""
    if layer is None:
        from ..layers import cam_layer

        with torch.no_grad():
            layer = cam_layer(run, x)
    name = layer
    _report("layer", name)

    def spatial(_name: str, out: Any) -> None:  # checked inside the pass, at each call
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"{method} needs a layer with a spatial output N x K x h x w; layer {name!r} outputs shape {shape}"
            )

    with LayerTap(run, name, call=-1, leaf=gradients, check=spatial) as tap, _calls(get_layer(run, name)) as calls:
        with torch.set_grad_enabled(gradients):
            out, acts = tap.run(x.clone())  # clone: a model may change its input in place
    a = acts[name]
    target_scores = grad = None
    if targets is not None:
        s = scores(out)
        _check_target_range(targets, s.shape[1])
        picked = s.gather(1, targets.view(-1, 1))[:, 0]
        target_scores = picked.detach()
        if gradients:
            score = picked.sum()
            if score.requires_grad:
                (grad,) = torch.autograd.grad(score, a, allow_unused=True)
            if grad is None:  # the score does not depend on this layer
                grad = torch.zeros_like(a)
    return _LayerPass(name, a.detach(), None if grad is None else grad.detach(), target_scores, calls[0])


def _gradcam(model: nn.Module, scores: Scores, x: torch.Tensor, targets: torch.Tensor, layer: str | None) -> torch.Tensor:
    p = _layer_pass(model, scores, x, targets, layer, "Grad-CAM")
    return _cam_map(p.g.mean(dim=(2, 3)), p.a, x)


def _cam_map(weights: torch.Tensor, acts: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``relu(sum_k weights[:, k] * acts[:, k])`` (weights N x K, acts N x K x h x w), upsampled to x."""
    acc = _accumulator(acts.dtype)
    cam = F.relu((weights.to(acc)[:, :, None, None] * acts.to(acc)).sum(dim=1))
    return _upsampled(cam, x)


def _upsampled(cam: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """N x h x w maps bilinearly upsampled (``align_corners=False``) to x's H x W."""
    return F.interpolate(cam.unsqueeze(1), size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)[:, 0]


def _channel_scores(
    run: nn.Module,
    scores: Scores,
    x: torch.Tensor,
    targets: torch.Tensor,
    n: int,
    k: int,
    batch_size: int,
    make_inputs: Callable[[torch.Tensor, torch.Tensor], contextlib.AbstractContextManager[torch.Tensor]],
) -> torch.Tensor:
    """S_t of image i for each job (i, c), N x K in the accumulator dtype: ``make_inputs(i, c)``
    (image and channel indices of up to ``batch_size`` jobs, image-major) returns a context
    manager yielding the input batch, within which the batch is run."""
    out = torch.empty(n * k, dtype=_accumulator(x.dtype), device=x.device)
    for start in range(0, n * k, batch_size):
        j = torch.arange(start, min(start + batch_size, n * k), device=x.device)
        i, c = j // k, j % k
        with make_inputs(i, c) as batch, forward_errors(batch, run):
            s = scores(run(batch))
        out[start:start + len(j)] = s.gather(1, targets[i].view(-1, 1))[:, 0].to(out.dtype)
    return out.view(n, k)


@contextlib.contextmanager
def _calls(module: nn.Module, replace: tuple[int, torch.Tensor] | None = None) -> Iterator[list[int]]:
    """Within the block, ``count[0]`` is how many times ``module`` has run on this thread; with
    ``replace=(call, value)``, its call number ``call`` (0 = first, counted from the start of the
    block) returns ``value`` instead of its output. ``module`` is a layer of the private view of
    the model: the user's model never sees the hook."""
    count = [0]
    owner = threading.get_ident()

    def hook(_m: nn.Module, _inp: Any, _out: Any) -> Any:
        if threading.get_ident() != owner:
            return None
        n = count[0]
        count[0] = n + 1
        return replace[1] if replace is not None and n == replace[0] else None

    handle = module.register_forward_hook(hook)
    try:
        yield count
    finally:
        handle.remove()
