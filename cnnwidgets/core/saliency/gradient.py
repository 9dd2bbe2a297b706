"""Plain gradients: :func:`vanilla_gradient`, :func:`grad_x_input` and :func:`layer_gradient`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._validate import check_int as _check_int
from ..model import get_layer
from ..runner import LayerTap, require_tensor
from ..outputs import OutputSelector
from ._common import Target, _finish, _input_gradient, _prepared


def vanilla_gradient(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, output: OutputSelector = None, region: Any = None
) -> torch.Tensor:
    """Gradient of the target logit with respect to the input (Simonyan et al., 2014).

    Parameters
    ----------
    model : nn.Module
        Returns class scores: logits N x K, a single logit N x 1 (two classes: class 1 scores
        the logit, class 0 its negative) or segmentation scores N x K x H x W (a class scores
        its mean over the pixels); see :mod:`cnnwidgets.core.outputs`. A final
        ``nn.Softmax``/``nn.LogSoftmax``/``nn.Sigmoid`` is bypassed, with a ``UserWarning``.
    x : torch.Tensor
        Float N x C x H x W, normalized the way the model expects; moved to the model's device
        and cast to its dtype. The caller's tensor is neither modified nor given ``requires_grad``.
    target : int, sequence of N ints, int tensor, or None
        Class per image; None uses each image's predicted class.
    output : int, str, callable or None
        Which part of a structured model output holds the scores
        (:func:`~cnnwidgets.core.outputs.select_output`); None for a plain tensor.
    region : box or mask, optional
        Segmentation outputs only: the pixels a class score averages over
        (:func:`~cnnwidgets.core.outputs.region_mask`); default all.

    Returns
    -------
    torch.Tensor
        N x C x H x W, detached, on the model's device, float32 for a float16/bfloat16 model:
        ``d score[i, target[i]] / d x[i]``.

    Raises
    ------
    ValueError
        ``x`` not a float N x C x H x W tensor, a target outside ``0..K-1``, a structured
        model output without ``output=`` (the message shows its structure), or images too
        small for the network.

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
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        return _finish(_input_gradient(run, scores, xd, t))


def grad_x_input(
    model: nn.Module, x: torch.Tensor, target: Target = None, *, output: OutputSelector = None, region: Any = None
) -> torch.Tensor:
    """Input times gradient: ``x * d logit_t / d x`` (N x C x H x W).

    Parameters and behaviour as in :func:`vanilla_gradient`. For a linear model this is the
    exact contribution of each input value to the logit (up to the bias).

    Examples
    --------
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    >>> grad_x_input(net, torch.rand(2, 3, 2, 2), target=[0, 2]).shape
    torch.Size([2, 3, 2, 2])
    """
    with _prepared(model, x, target, output=output, region=region) as (run, xd, t, scores):
        return _finish(xd * _input_gradient(run, scores, xd, t))


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
    get_layer(model, layer)  # raises with the list of valid names
    if channel is not None:
        channel = _check_int(channel, "channel", 0)
    with _prepared(model, x, None, logits=False) as (run, xd, _, _scores):
        xg = xd.clone().requires_grad_(True)
        with LayerTap(run, layer, check=require_tensor) as tap:
            a = tap.run(xg.clone())[1][layer]  # a non-leaf copy: an in-place first layer is fine
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
    return _finish(torch.zeros_like(xd) if grad is None else grad.detach())
