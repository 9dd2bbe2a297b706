"""Class activation maps: Grad-CAM (Selvaraju et al., 2017) and guided Grad-CAM."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..outputs import OutputSelector
from ..relu_rules import relu_rule
from ..runner import LayerTap, Scores
from ._common import Target, _accumulator, _check_target_range, _finish, _input_gradient, _prepared, _report


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


def _gradcam(model: nn.Module, scores: Scores, x: torch.Tensor, targets: torch.Tensor, layer: str | None) -> torch.Tensor:
    if layer is None:
        from ..layers import cam_layer

        with torch.no_grad():
            layer = cam_layer(model, x)
    name = layer
    _report("layer", name)
    with LayerTap(model, name, call=-1, leaf=True) as tap:  # gradients at the layer's last call
        out, acts = tap.run(x.clone())
    a = acts[name]
    if not isinstance(a, torch.Tensor) or a.dim() != 4:
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise ValueError(
            f"Grad-CAM needs a layer with a spatial output N x K x h x w; layer {name!r} outputs shape {shape}"
        )
    s = scores(out)
    _check_target_range(targets, s.shape[1])
    score = s.gather(1, targets.view(-1, 1)).sum()
    grad = None
    if score.requires_grad:
        (grad,) = torch.autograd.grad(score, a, allow_unused=True)
    if grad is None:  # the score does not depend on this layer
        grad = torch.zeros_like(a)
    weights = grad.mean(dim=(2, 3), keepdim=True)  # N x K x 1 x 1
    acc = _accumulator(a.dtype)
    cam = F.relu((weights.to(acc) * a.detach().to(acc)).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
    return cam[:, 0]
