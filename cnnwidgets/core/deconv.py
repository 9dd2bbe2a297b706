"""Deconvnet projection of a feature map back to pixel space (Zeiler & Fergus, 2014).

The signal at a layer is propagated back to the input with the deconvnet rules: transposed
convolutions, unpooling through the max-pool switches, and a ReLU that passes the positive
part of the signal. All three come from autograd -- the backward of a convolution is the
transposed convolution, the backward of max pooling routes each value to the recorded argmax
position -- with the ReLU backward replaced by :func:`~cnnwidgets.core.relu_rules.relu_rule`.
Plain torch; no widget imports.
"""

from __future__ import annotations



import torch
from torch import nn

from ._validate import as_int as _check_index
from .model import get_layer, model_device
from .runner import LayerTap, require_4d, using_model
from .relu_rules import relu_rule

__all__ = ["reconstruct"]


def _run_to_layer(model: nn.Module, layer: str, x: torch.Tensor, call: int) -> torch.Tensor:
    """Forward ``x`` and return the output of ``layer``'s ``call``-th call (the pass stops
    there; a negative ``call`` counts from the end, so the whole pass runs)."""
    with LayerTap(model, layer, call=call) as tap:
        outs = tap.run(x)[1]
    out = outs[layer]
    require_4d(layer, out)
    return out


def reconstruct(
    model: nn.Module,
    x: torch.Tensor,
    layer: str,
    channel: int | None = None,
    *,
    call: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Project one feature map of ``layer`` back to pixel space with a deconvnet.

    For each image, the layer's output A (N x K x h x w) is kept on one channel and zeroed
    elsewhere, and that signal is propagated back to the input through transposed
    convolutions, max-unpooling with the forward pass's switches and rectification of the
    signal (every ``nn.ReLU`` passes ``grad.clamp(min=0)``, see :func:`relu_rule`).

    Parameters
    ----------
    model : nn.Module
    x : torch.Tensor
        Float input batch N x C x H x W, normalized the way the model expects. It is moved to
        the model's device; the caller's tensor is neither modified nor given ``requires_grad``.
    layer : str
        Qualified name of a layer with a 4-D output, e.g. ``"features.6"``.
    channel : int, optional
        The feature map to project, 0 <= channel < K. When None, each image uses its strongest
        map: the channel with the largest maximum activation (ties go to the lowest index).
    call : int
        For a module used several times in one forward pass, which call's output to project
        (0 = first, -1 = last). With ``call >= 0`` the forward pass stops right after it.

    Returns
    -------
    projection : torch.Tensor
        N x C x H x W, detached, on the model's device.
    channels : torch.Tensor
        int64 (N,), the channel projected for each image, on the model's device.

    Raises
    ------
    ValueError
        Unknown layer (the message lists valid names), a layer output that is not 4-D, a
        channel outside 0..K-1, or a ``call`` beyond the number of times the layer ran.

    Notes
    -----
    Runs on a private view of the model (:func:`~cnnwidgets.core.runner.private_model`), in
    eval mode (BatchNorm uses its running statistics, Dropout is off); nothing is visible on
    the model itself. Parameters do not get gradients.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3))
    >>> proj, ch = reconstruct(net, torch.randn(2, 1, 12, 12), "3")
    >>> proj.shape, ch.shape
    (torch.Size([2, 1, 12, 12]), torch.Size([2]))
    """
    get_layer(model, layer)  # raises with the list of valid names
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() != 4:
        desc = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(
            f"x must be a float tensor N x C x H x W, got {desc}. "
            "Hint: cnnwidgets.core.as_batch converts images to a batch."
        )
    if channel is not None:
        channel = _check_index(channel, "channel")
    call = _check_index(call, "call")
    device = model_device(model)
    with using_model(model) as run, torch.enable_grad():
        xg = x.detach().to(device).clone().requires_grad_(True)
        with relu_rule(run, "deconvnet"):
            acts = _run_to_layer(run, layer, xg, call)
            n, k = acts.shape[:2]
            if channel is not None and not 0 <= channel < k:
                raise ValueError(f"channel must be in 0..{k - 1} (layer {layer!r} has {k} channels), got {channel}")
            rows = torch.arange(n, device=acts.device)
            with torch.no_grad():
                if channel is None:
                    # amax over the map, then the first maximal channel
                    chans = acts.detach().flatten(2).amax(dim=2).argmax(dim=1)
                else:
                    chans = torch.full((n,), channel, dtype=torch.long, device=acts.device)
                signal = torch.zeros_like(acts)
                signal[rows, chans] = acts.detach()[rows, chans]
            if acts.requires_grad:
                (proj,) = torch.autograd.grad(acts, xg, grad_outputs=signal, allow_unused=True)
            else:  # the layer does not depend on the input
                proj = None
    if proj is None:
        proj = torch.zeros_like(xg)
    return proj.detach(), chans.to(torch.long)
